# Both stages use the same base so the venv's interpreter symlink still resolves at run time.
# Pinned by digest (the multi-platform index of python:3.11-slim, Debian trixie, Python 3.11.16),
# so a rebuild gets the same bytes whatever the tag points at by then; Docker checks the digest
# and ignores the tag, which stays for the reader. To move to a newer image: run
# `docker buildx imagetools inspect python:3.11-slim`, put its Digest here, rebuild, test.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Every package of the server install, at the versions of the lock file (`make lock`), each file
# checked against its hash: a package that changed on the index, or one the lock does not name,
# fails the build. The cache mount keeps downloaded wheels between builds out of the layers.
COPY requirements/server.lock requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/server.lock
COPY pyproject.toml README.md ./
COPY service/ service/
COPY generated/ generated/
# The project itself, a regular (non-editable) install, with nothing more from the index: its
# dependencies and its build backend (setuptools) came from the lock. The runtime stage needs
# /opt/venv and nothing else.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-cache-dir .

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
# `timeseries-aggregation health` asks the standard gRPC health service of this server, read from
# the same environment as `serve`: the port of TIMESERIES_AGGREGATION_LISTEN_ADDRESS, and TLS when
# TIMESERIES_AGGREGATION_TLS_CERT_FILE is set (verified against that certificate, or
# ..._HEALTH_CA_FILE; under mutual TLS it presents ..._HEALTH_CLIENT_CERT_FILE and _KEY_FILE). No
# API key: health is open. Any failure (refused, timeout, NOT_SERVING while the database is
# unreachable) exits non-zero.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["timeseries-aggregation", "health", "--timeout", "3"]
# Exec form: the server is PID 1 and receives SIGTERM itself, which starts its graceful drain.
ENTRYPOINT ["timeseries-aggregation"]
CMD ["serve"]
