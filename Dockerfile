# Both stages use the same base so the venv's interpreter symlink still resolves at run time.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY generated/ generated/
# A regular (non-editable) install of the server (the `server` extra; the bare package is the
# client): the runtime stage needs /opt/venv and nothing else. The cache mount keeps downloaded
# wheels between builds without putting them in a layer.
RUN --mount=type=cache,target=/root/.cache/pip /opt/venv/bin/pip install ".[server]"

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid lets orchestrators check "not root" and makes volume ownership predictable.
# The home directory is where the embedded PostgreSQL keeps its data when no database URL is set.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
# Owned by root, so the service cannot modify its own code.
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    TIMESERIES_AGGREGATION_LISTEN_ADDRESS="[::]:50051"
USER 10001:10001
WORKDIR /home/app
EXPOSE 50051
# Uses the standard gRPC health service with the client library already installed, so the image
# needs no probe binary. The port follows TIMESERIES_AGGREGATION_LISTEN_ADDRESS; any failure
# (refused, timeout, NOT_SERVING while the database is unreachable) exits non-zero.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2, health_pb2_grpc; port = os.environ['TIMESERIES_AGGREGATION_LISTEN_ADDRESS'].rpartition(':')[2]; response = health_pb2_grpc.HealthStub(grpc.insecure_channel('localhost:' + port)).Check(health_pb2.HealthCheckRequest(), timeout=3); sys.exit(response.status != health_pb2.HealthCheckResponse.SERVING)"]
# Exec form: the server is PID 1 and receives SIGTERM itself, which starts its graceful drain.
ENTRYPOINT ["timeseries-aggregation"]
CMD ["serve"]
