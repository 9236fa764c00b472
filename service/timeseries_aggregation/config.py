"""Settings read once from the environment (prefix TIMESERIES_AGGREGATION_)."""

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import platformdirs

from timeseries_aggregation.domain.durations import parse_duration
from timeseries_aggregation.limits import DEFAULT_MAX_MESSAGE_BYTES
from timeseries_aggregation.observability.tracing import OTLP_TRACE_ENDPOINTS
from timeseries_aggregation.storage.database import PoolSettings
from timeseries_aggregation.storage.database_url import check_database_url

ENV_PREFIX = "TIMESERIES_AGGREGATION_"
# Loopback: `make run` serves with authentication off, which no other machine may reach.
# Containers and servers set an address (the Dockerfile sets [::]:50051).
DEFAULT_LISTEN_ADDRESS = "localhost:50051"
AUTH_API_KEY = "api-key"
AUTH_NONE = "none"
LOG_FORMAT_JSON = "json"
LOG_FORMAT_TEXT = "text"
# More server processes than this would mostly wait for cores and database connections.
MAX_WORKERS = 64

Value = TypeVar("Value")


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs to start; the database URL is a secret and never shown."""

    database_url: str | None = field(default=None, repr=False)
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("timeseries-aggregation")))
    pool: PoolSettings = field(default_factory=PoolSettings)
    shutdown_grace_seconds: float = 10.0
    health_check_interval_seconds: float = 1.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    log_level: str = "INFO"
    auth_mode: str = AUTH_API_KEY
    api_keys_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Admission control (transport.admission): API calls at once; health checks at once; health
    # and reflection streams at once; of each of the last two, how many one peer address may
    # have; and how long a stream may last.
    max_concurrent_rpcs: int = 256
    probe_max_concurrent_rpcs: int = 32
    probe_max_streams: int = 64
    probe_max_calls_per_peer: int = 8
    # 0: no age of their own; the connection's maximum age ends them (see app.py).
    probe_stream_max_age_seconds: float = 0.0
    stream_idle_timeout_seconds: float = 30.0
    # The longest an ingest stream may stay open, however steadily it sends.
    stream_max_age_seconds: float = 600.0
    # A connection without calls for this long is closed; any connection is asked to go away
    # at this age (and closed once its calls have had the longest a call may last).
    connection_idle_seconds: float = 300.0
    connection_max_age_seconds: float = 3600.0
    # Each API key's share, unless its key-file line says otherwise (transport.quotas). None:
    # streams as many as the write pool has connections, writes half of them.
    key_max_streams: int | None = None
    key_max_writes: int | None = None
    # Calls per second (0: no limit) and calls at once beyond it.
    key_rate: float = 100.0
    key_burst: int = 200
    keepalive_time_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    # HOST:PORT of the Prometheus /metrics endpoint; None serves no metrics.
    metrics_address: str | None = None
    # LOG_FORMAT_JSON or LOG_FORMAT_TEXT; None: text on a terminal, JSON lines otherwise.
    log_format: str | None = None
    # How long query history entries are kept; timedelta(0) keeps them forever.
    history_retention: timedelta = timedelta(days=30)
    # Age after which TimescaleDB compresses a chunk of readings; timedelta(0) compresses none.
    # Four weeks: late and corrected meter data mostly arrives within days, and writes into a
    # compressed chunk cost more (its batches are decompressed first).
    compress_after: timedelta = timedelta(days=28)
    # How long readings are kept; timedelta(0) keeps them forever.
    readings_retention: timedelta = timedelta(0)
    # Server processes sharing the listen port (workers.py); 1 serves in this process.
    workers: int = 1
    # Export trace spans over OTLP (observability/tracing.py), as the OTEL_* variables say.
    tracing: bool = False
    # Serve gRPC reflection, which grpcurl and similar tools use to list and describe the API.
    reflection: bool = True


def split_host_port(address: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 hosts in brackets) to (host, port); raises ValueError."""
    host, separator, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"must be HOST:PORT with a port from 0 to 65535, got {address!r}")
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    """The inverse of split_host_port: IPv6 hosts go back into brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _secret(environ: Mapping[str, str], name: str) -> str | None:
    """NAME from the environment, or the content of the file that NAME_FILE points at."""
    key = ENV_PREFIX + name
    if environ.get(key):
        return environ[key]
    path = environ.get(key + "_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"{key}_FILE: cannot read the file it names ({error.strerror})") from None
    except UnicodeDecodeError:
        # The decode error would carry the file's bytes, i.e. the secret: say only where it is.
        raise ConfigError(f"{key}_FILE: the file it names is not UTF-8 text") from None


def database_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The database URL alone, for commands that need nothing else of the configuration;
    raises ConfigError, quoting nothing of the URL, when asyncpg could not parse it."""
    url = _secret(os.environ if environ is None else environ, "DATABASE_URL")
    if url is not None:
        try:
            check_database_url(url)
        except ValueError as error:
            raise ConfigError(f"{ENV_PREFIX}DATABASE_URL: {error}") from None
    return url


def _parsed(environ: Mapping[str, str], name: str, parse: Callable[[str], Value], default: Value) -> Value:
    raw = environ.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}: cannot parse {raw!r}") from None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(f"{ENV_PREFIX}{name}: must be a finite number, got {raw!r}")
        if value < 0:
            raise ConfigError(f"{ENV_PREFIX}{name}: must not be negative, got {raw!r}")
    return value


def _at_least_one(environ: Mapping[str, str], name: str, default: int) -> int:
    """A whole-number variable of 1 or more, or the default when unset."""
    return _optional_at_least_one(environ, name, default) or default


def _optional_at_least_one(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A whole-number variable of 1 or more, or the default (None: unset) when unset."""
    value: int | None = _parsed(environ, name, int, default)
    if value is not None and value < 1:
        raise ConfigError(f"{ENV_PREFIX}{name}: must be at least 1, got {value}")
    return value


def _duration(environ: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    """A duration variable (`30d`, `12h`, `90m`, `45s` or `0`), or the default when unset."""
    raw = environ.get(ENV_PREFIX + name)
    if not raw:
        return default
    try:
        return parse_duration(raw)
    except ValueError as error:
        raise ConfigError(f"{ENV_PREFIX}{name}: {error}") from None


def _address(environ: Mapping[str, str], name: str) -> str | None:
    """A HOST:PORT variable, checked here so that a typo fails before anything starts."""
    raw = environ.get(ENV_PREFIX + name)
    if not raw:
        return None
    try:
        split_host_port(raw)
    except ValueError as error:
        raise ConfigError(f"{ENV_PREFIX}{name}: {error}") from None
    return raw


def _log_level(environ: Mapping[str, str], default: str) -> str:
    raw = environ.get(ENV_PREFIX + "LOG_LEVEL") or default
    if raw.upper() not in logging.getLevelNamesMapping():
        raise ConfigError(
            f"{ENV_PREFIX}LOG_LEVEL: must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}"
        )
    return raw.upper()


def _log_format(environ: Mapping[str, str]) -> str | None:
    raw = environ.get(ENV_PREFIX + "LOG_FORMAT")
    if not raw:
        return None
    log_format = raw.lower()
    if log_format not in (LOG_FORMAT_JSON, LOG_FORMAT_TEXT):
        raise ConfigError(
            f"{ENV_PREFIX}LOG_FORMAT: must be {LOG_FORMAT_JSON!r} or {LOG_FORMAT_TEXT!r}, got {raw!r}"
        )
    return log_format


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Read the configuration; raises ConfigError naming the variable at fault."""
    env = os.environ if environ is None else environ
    defaults = Config()
    pool_defaults = PoolSettings()
    pool = PoolSettings(
        min_size=_parsed(env, "POOL_MIN_SIZE", int, pool_defaults.min_size),
        max_size=_parsed(env, "POOL_MAX_SIZE", int, pool_defaults.max_size),
        # Ingest streams writing at once: the write pool's size, one connection per stream.
        write_max_size=_parsed(env, "MAX_CONCURRENT_STREAMS", int, pool_defaults.write_max_size),
        connect_timeout_seconds=_parsed(
            env, "CONNECT_TIMEOUT_SECONDS", float, pool_defaults.connect_timeout_seconds
        ),
        acquire_timeout_seconds=_parsed(
            env, "ACQUIRE_TIMEOUT_SECONDS", float, pool_defaults.acquire_timeout_seconds
        ),
        statement_timeout_seconds=_parsed(
            env, "STATEMENT_TIMEOUT_SECONDS", float, pool_defaults.statement_timeout_seconds
        ),
        startup_timeout_seconds=_parsed(
            env, "STARTUP_TIMEOUT_SECONDS", float, pool_defaults.startup_timeout_seconds
        ),
    )
    stream_idle_timeout = _parsed(
        env, "STREAM_IDLE_TIMEOUT_SECONDS", float, defaults.stream_idle_timeout_seconds
    )
    pool = dataclasses.replace(pool, idle_in_transaction_timeout_seconds=stream_idle_timeout + 60)
    if pool.max_size < 1 or pool.min_size > pool.max_size:
        raise ConfigError(
            f"{ENV_PREFIX}POOL_MAX_SIZE must be at least 1 and at least {ENV_PREFIX}POOL_MIN_SIZE"
        )
    if pool.write_max_size < 1:
        raise ConfigError(f"{ENV_PREFIX}MAX_CONCURRENT_STREAMS must be at least 1")
    auth_mode = (env.get(ENV_PREFIX + "AUTH_MODE") or AUTH_API_KEY).lower()
    if auth_mode not in (AUTH_API_KEY, AUTH_NONE):
        raise ConfigError(
            f"{ENV_PREFIX}AUTH_MODE: must be {AUTH_API_KEY!r} or {AUTH_NONE!r}, got {auth_mode!r}"
        )
    api_keys_file = _path(env, "API_KEYS_FILE")
    if auth_mode == AUTH_API_KEY and api_keys_file is None:
        raise ConfigError(
            f"{ENV_PREFIX}API_KEYS_FILE: required when {ENV_PREFIX}AUTH_MODE is {AUTH_API_KEY!r} (the "
            f"default); create keys with `timeseries-aggregation keys generate`, or set "
            f"{ENV_PREFIX}AUTH_MODE=none for a service nobody else can reach"
        )
    tls_cert_file = _path(env, "TLS_CERT_FILE")
    tls_key_file = _path(env, "TLS_KEY_FILE")
    tls_client_ca_file = _path(env, "TLS_CLIENT_CA_FILE")
    if (tls_cert_file is None) != (tls_key_file is None):
        raise ConfigError(f"{ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE go together")
    if tls_client_ca_file is not None and tls_cert_file is None:
        raise ConfigError(f"{ENV_PREFIX}TLS_CLIENT_CA_FILE needs {ENV_PREFIX}TLS_CERT_FILE and _KEY_FILE")
    workers = _parsed(env, "WORKERS", int, defaults.workers)
    check_workers(workers, f"{ENV_PREFIX}WORKERS")
    return Config(
        database_url=database_url(env),
        listen_address=_address(env, "LISTEN_ADDRESS") or defaults.listen_address,
        data_dir=_parsed(env, "DATA_DIR", Path, defaults.data_dir),
        pool=pool,
        shutdown_grace_seconds=_parsed(env, "SHUTDOWN_GRACE_SECONDS", float, defaults.shutdown_grace_seconds),
        health_check_interval_seconds=_parsed(
            env, "HEALTH_CHECK_INTERVAL_SECONDS", float, defaults.health_check_interval_seconds
        ),
        max_message_bytes=_parsed(env, "MAX_MESSAGE_BYTES", int, defaults.max_message_bytes),
        log_level=_log_level(env, defaults.log_level),
        auth_mode=auth_mode,
        api_keys_file=api_keys_file,
        tls_cert_file=tls_cert_file,
        tls_key_file=tls_key_file,
        tls_client_ca_file=tls_client_ca_file,
        max_concurrent_rpcs=_at_least_one(env, "MAX_CONCURRENT_RPCS", defaults.max_concurrent_rpcs),
        probe_max_concurrent_rpcs=_at_least_one(
            env, "PROBE_MAX_CONCURRENT_RPCS", defaults.probe_max_concurrent_rpcs
        ),
        probe_max_streams=_at_least_one(env, "PROBE_MAX_STREAMS", defaults.probe_max_streams),
        probe_max_calls_per_peer=_at_least_one(
            env, "PROBE_MAX_CALLS_PER_PEER", defaults.probe_max_calls_per_peer
        ),
        probe_stream_max_age_seconds=_parsed(
            env, "PROBE_STREAM_MAX_AGE_SECONDS", float, defaults.probe_stream_max_age_seconds
        ),
        stream_idle_timeout_seconds=stream_idle_timeout,
        stream_max_age_seconds=_parsed(env, "STREAM_MAX_AGE_SECONDS", float, defaults.stream_max_age_seconds),
        connection_idle_seconds=_parsed(
            env, "CONNECTION_IDLE_SECONDS", float, defaults.connection_idle_seconds
        ),
        connection_max_age_seconds=_parsed(
            env, "CONNECTION_MAX_AGE_SECONDS", float, defaults.connection_max_age_seconds
        ),
        key_max_streams=_optional_at_least_one(env, "KEY_MAX_STREAMS", defaults.key_max_streams),
        key_max_writes=_optional_at_least_one(env, "KEY_MAX_WRITES", defaults.key_max_writes),
        key_rate=_parsed(env, "KEY_RATE", float, defaults.key_rate),
        key_burst=_at_least_one(env, "KEY_BURST", defaults.key_burst),
        keepalive_time_seconds=_parsed(env, "KEEPALIVE_TIME_SECONDS", float, defaults.keepalive_time_seconds),
        keepalive_timeout_seconds=_parsed(
            env, "KEEPALIVE_TIMEOUT_SECONDS", float, defaults.keepalive_timeout_seconds
        ),
        metrics_address=_address(env, "METRICS_ADDRESS"),
        log_format=_log_format(env),
        history_retention=_duration(env, "HISTORY_RETENTION", defaults.history_retention),
        compress_after=_duration(env, "COMPRESS_AFTER", defaults.compress_after),
        readings_retention=_duration(env, "READINGS_RETENTION", defaults.readings_retention),
        workers=workers,
        tracing=tracing_requested(env),
        reflection=_on_off(env, "REFLECTION", defaults.reflection),
    )


# OTEL_TRACES_EXPORTER values: "otlp" exports over OTLP/gRPC, "none" turns tracing off.
_TRACE_EXPORTERS = frozenset({"otlp", "none"})
_OTLP_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether the standard OpenTelemetry variables ask for trace export: an OTLP endpoint or
    OTEL_TRACES_EXPORTER=otlp, unless OTEL_SDK_DISABLED=true or the exporter is none. Raises
    ConfigError for an exporter or protocol the service does not ship."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {name.strip() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()}
    unknown = sorted(exporters - _TRACE_EXPORTERS)
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not available; use otlp (OTLP over gRPC) or none"
        )
    for name in _OTLP_PROTOCOLS:
        protocol = environ.get(name, "").strip()
        if protocol and protocol != "grpc":
            raise ConfigError(f"{name}: {protocol} is not available; the service exports OTLP over grpc")
    if "none" in exporters:
        return False
    return "otlp" in exporters or any(environ.get(name, "").strip() for name in OTLP_TRACE_ENDPOINTS)


def check_workers(workers: int, name: str) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"{name}: must be from 1 to {MAX_WORKERS}, got {workers}")


def _on_off(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(ENV_PREFIX + name)
    if not raw:
        return default
    value = raw.strip().lower()
    if value not in ("on", "off"):
        raise ConfigError(f"{ENV_PREFIX}{name}: must be 'on' or 'off', got {raw!r}")
    return value == "on"


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(ENV_PREFIX + name)
    return Path(raw) if raw else None
