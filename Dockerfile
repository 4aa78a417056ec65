# Dockerfile — dynd for any x86-64 host (CPU). README.md "Docker" has the commands:
#   docker build -t dynd .
#   docker run -d -p 8080:8080 -v "$PWD/models:/var/lib/dynd/models" dynd
# Both stages run the scripts in config/docker/ (tests/docker_smoke.sh runs this file's steps
# in Debian 12 roots without a Docker engine: `make docker-smoke`).

# ---- build: compiler and -dev packages; programs for a baseline ISA ----
FROM debian:12 AS build
# x86-64: runs on every x86-64 CPU; the engine's kernels pick AVX2 / AVX-512 at run time.
ARG ARCH=x86-64
WORKDIR /src
COPY config/docker/ config/docker/
RUN config/docker/install-build.sh deps
COPY . .
RUN config/docker/install-build.sh build /out

# ---- runtime: the libraries the programs load, an unprivileged user ----
FROM debian:12-slim
COPY config/docker/install-runtime.sh /tmp/docker/
COPY --from=build /out/usr/local/share/dynd/runtime-packages.txt /tmp/docker/
RUN /tmp/docker/install-runtime.sh /tmp/docker/runtime-packages.txt && rm -rf /tmp/docker
COPY --from=build /out/ /
# Every setting is an environment variable DYND_<SETTING> (`dynd --help`, config/dynd.conf);
# these are the image's defaults. Graceful stop within Docker's 10 s before SIGKILL.
ENV DYND_LISTEN_ADDRESS=0.0.0.0 \
    DYND_PORT=8080 \
    DYND_MODEL_DIR=/var/lib/dynd/models \
    DYND_STATE_DIR=/var/lib/dynd/state \
    DYND_DATA_DIR=/var/lib/dynd/data \
    DYND_LOG_FORMAT=json \
    DYND_SHUTDOWN_GRACE_S=8
VOLUME ["/var/lib/dynd/models", "/var/lib/dynd/state", "/var/lib/dynd/data"]
EXPOSE 8080
USER dynd
WORKDIR /var/lib/dynd
# Ready: the repository is scanned and the server is not draining (GET /v2/health/ready).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${DYND_PORT}/v2/health/ready" || exit 1
CMD ["dynd"]
