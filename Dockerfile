# A slim image that runs the Vamp gateway (`vamp loadtest` and the demo service are in it too). Mount your
# configuration (gateways must listen on 0.0.0.0 inside a container, not 127.0.0.1) and give the admin API a
# token. A complete example with a token file as a secret: examples/container/ (`docker compose up --build`).
#   docker build -t vamp .
#   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 -e VAMP_TOKEN=secret \
#     -v $PWD/examples/container/gateways.yaml:/etc/vamp/gateways.yaml:ro vamp
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY control ./control
COPY loadtest ./loadtest
RUN pip install --no-cache-dir --prefix=/install '.[loadtest]'

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /var/lib/vamp --create-home vamp
USER vamp
WORKDIR /var/lib/vamp
EXPOSE 8080 9090
# Healthy while GET $VAMP_HEALTH_URL answers 2xx: the admin API's /health by default (it needs no token).
# Python's standard library, since the slim image has no curl; set VAMP_HEALTH_URL if the admin API moves.
ENV VAMP_HEALTH_URL=http://127.0.0.1:9090/health
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ['VAMP_HEALTH_URL'], timeout=3)"]
# The admin API listens on all interfaces inside the container, so it needs a token: set VAMP_TOKEN
# (or use a token file, as examples/container/compose.yaml does).
ENTRYPOINT ["vamp", "gateway"]
CMD ["--config", "/etc/vamp/gateways.yaml", "--admin", "0.0.0.0:9090", "--state-dir", "/var/lib/vamp/state"]
