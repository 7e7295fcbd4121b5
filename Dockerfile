# A slim image that runs the Vamp gateway (`vamp loadtest` and the demo service are in it too). Mount your
# configuration (gateways must listen on 0.0.0.0 inside a container, not 127.0.0.1) and give the admin API a
# token. A complete example with a token file as a secret: examples/container/ (`docker compose up --build`).
#   docker build -t vamp .
#   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 -e VAMP_TOKEN=secret \
#     -v $PWD/examples/container/gateways.yaml:/etc/vamp/gateways.yaml:ro vamp
# The build stage compiles the gateway's per-request modules with mypyc (docs/hot-path.md, "The compiled build"):
# about twice the requests per second of the Python source per core, and an access log that costs a few percent
# instead of about 11%. The wheel installed below carries the build; the image needs no compiler. The gateway's
# "gateway ready" line says "hot path: compiled"; VAMP_PURE=1 in the container's environment runs the source.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY control ./control
COPY loadtest ./loadtest
# mypy and the gateway's dependencies in a venv of this stage only (mypyc reads their types); the installed librt
# is the one compiled against (the compiled modules check it as they are imported).
RUN python -m venv /opt/compile \
    && /opt/compile/bin/pip install --no-cache-dir . 'mypy>=1.20,<2' \
    && /opt/compile/bin/python -m gateway.compile build && rm -rf build \
    && pip install --no-cache-dir --prefix=/install '.[loadtest]' \
       "librt==$(/opt/compile/bin/python -c 'import importlib.metadata as m; print(m.version("librt"))')"

# The demo service alone, listening on 0.0.0.0:8080 and saying it is SAVA_VERSION: what the Kubernetes tests
# deploy on a real cluster (README, "Running on Kubernetes"). Not built unless asked for:
#   docker build --target sava --build-arg SAVA_VERSION=1.0.0 -t vamp-sava:1.0.0 .
FROM python:3.11-slim AS sava
COPY --from=build /install /usr/local
ARG SAVA_VERSION=1.0.0
ENV SAVA_VERSION=${SAVA_VERSION}
USER 10001
EXPOSE 8080
ENTRYPOINT ["sh", "-c", "exec python -m control.demo.sava --host 0.0.0.0 --port 8080 --version \"$SAVA_VERSION\""]

# The default target: the gateway.
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
