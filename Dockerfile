# A slim image that runs the Vamp gateway (`vamp loadtest` is in it too). Mount your configuration (gateways must not set `bind: 127.0.0.1`
# inside a container) and set an admin token:
#   docker build -t vamp .
#   docker run -p 8080:8080 -p 9090:9090 -e VAMP_ADMIN_TOKEN=secret \
#     -v $PWD/gateways.yaml:/etc/vamp/gateways.yaml:ro vamp
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY control ./control
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /var/lib/vamp --create-home vamp
USER vamp
WORKDIR /var/lib/vamp
EXPOSE 8080 9090
# The admin API listens on all interfaces inside the container, so it needs a token: set VAMP_ADMIN_TOKEN.
ENTRYPOINT ["vamp", "gateway"]
CMD ["--config", "/etc/vamp/gateways.yaml", "--admin", "0.0.0.0:9090", "--state-dir", "/var/lib/vamp/state"]
