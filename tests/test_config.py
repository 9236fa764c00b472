"""Settings read from an explicit environment mapping; the database URL stays secret."""

import urllib.parse
from datetime import timedelta
from pathlib import Path

import platformdirs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from timeseries_aggregation.config import Config, ConfigError, load_config, split_host_port
from timeseries_aggregation.limits import DEFAULT_MAX_MESSAGE_BYTES
from timeseries_aggregation.storage.database import PoolSettings

# Nothing here depends on the storage engine: CI runs it on the embedded server only.
pytestmark = pytest.mark.any_engine

PREFIX = "TIMESERIES_AGGREGATION_"
SECRET_URL = "postgresql://ingest:s3cr3t-Pa55word@db.internal:5432/timeseries"
PASSWORD = "s3cr3t-Pa55word"
INTEGER_VARIABLES = ["POOL_MIN_SIZE", "POOL_MAX_SIZE", "MAX_MESSAGE_BYTES"]
FLOAT_VARIABLES = [
    "CONNECT_TIMEOUT_SECONDS",
    "ACQUIRE_TIMEOUT_SECONDS",
    "STATEMENT_TIMEOUT_SECONDS",
    "STARTUP_TIMEOUT_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "HEALTH_CHECK_INTERVAL_SECONDS",
]
ALL_VARIABLES = [
    "DATABASE_URL",
    "DATABASE_URL_FILE",
    "LISTEN_ADDRESS",
    "DATA_DIR",
    "LOG_LEVEL",
    *INTEGER_VARIABLES,
    *FLOAT_VARIABLES,
]


def env(**variables: str) -> dict[str, str]:
    """An environment with the prefix added to every variable name; authentication is off
    unless AUTH_MODE is given (the default, api-key, needs a key file)."""
    return {PREFIX + "AUTH_MODE": "none"} | {PREFIX + name: value for name, value in variables.items()}


def config_error(environ: dict[str, str]) -> str:
    """The message of the ConfigError that loading this environment raises."""
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    return str(caught.value)


def assert_secret_absent(text: str) -> None:
    """Neither the URL nor its password appear in the text."""
    assert SECRET_URL not in text
    assert PASSWORD not in text


class TestDefaults:
    def test_empty_environment_gives_the_defaults(self) -> None:
        config = load_config(env())

        assert config == Config(
            database_url=None,
            listen_address="localhost:50051",
            data_dir=Path(platformdirs.user_data_dir("timeseries-aggregation")),
            pool=PoolSettings(
                min_size=1,
                max_size=10,
                connect_timeout_seconds=5.0,
                acquire_timeout_seconds=5.0,
                statement_timeout_seconds=30.0,
                startup_timeout_seconds=30.0,
            ),
            shutdown_grace_seconds=10.0,
            health_check_interval_seconds=1.0,
            max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
            log_level="INFO",
            auth_mode="none",
        )

    def test_empty_values_mean_the_defaults(self) -> None:
        assert load_config(env(**dict.fromkeys(ALL_VARIABLES, ""))) == load_config(env())

    def test_variables_without_the_prefix_are_ignored(self) -> None:
        unprefixed = {"DATABASE_URL": SECRET_URL, "LOG_LEVEL": "DEBUG"}
        assert load_config(env() | unprefixed) == load_config(env())


class TestParsing:
    def test_every_variable_is_read(self, tmp_path: Path) -> None:
        config = load_config(
            env(
                DATABASE_URL=SECRET_URL,
                LISTEN_ADDRESS="127.0.0.1:6000",
                DATA_DIR=str(tmp_path / "data"),
                POOL_MIN_SIZE="2",
                POOL_MAX_SIZE="20",
                CONNECT_TIMEOUT_SECONDS="1.5",
                ACQUIRE_TIMEOUT_SECONDS="2",
                STATEMENT_TIMEOUT_SECONDS="0.25",
                STARTUP_TIMEOUT_SECONDS="60",
                SHUTDOWN_GRACE_SECONDS="3.5",
                HEALTH_CHECK_INTERVAL_SECONDS="0.5",
                MAX_MESSAGE_BYTES="1048576",
                LOG_LEVEL="debug",
            )
        )

        assert config == Config(
            database_url=SECRET_URL,
            listen_address="127.0.0.1:6000",
            data_dir=tmp_path / "data",
            pool=PoolSettings(
                min_size=2,
                max_size=20,
                connect_timeout_seconds=1.5,
                acquire_timeout_seconds=2.0,
                statement_timeout_seconds=0.25,
                startup_timeout_seconds=60.0,
            ),
            shutdown_grace_seconds=3.5,
            health_check_interval_seconds=0.5,
            max_message_bytes=1048576,
            log_level="DEBUG",
            auth_mode="none",
        )

    def test_zero_is_allowed_where_it_is_not_negative(self) -> None:
        config = load_config(env(POOL_MIN_SIZE="0", SHUTDOWN_GRACE_SECONDS="0"))

        assert config.pool.min_size == 0
        assert config.shutdown_grace_seconds == 0.0

    def test_database_url_file_is_read_and_stripped(self, tmp_path: Path) -> None:
        secret_file = tmp_path / "database-url"
        secret_file.write_text(f"  {SECRET_URL}\n\n", encoding="utf-8")

        assert load_config(env(DATABASE_URL_FILE=str(secret_file))).database_url == SECRET_URL

    def test_database_url_wins_over_its_file(self, tmp_path: Path) -> None:
        secret_file = tmp_path / "database-url"
        secret_file.write_text("postgresql://from-file/db", encoding="utf-8")

        config = load_config(env(DATABASE_URL=SECRET_URL, DATABASE_URL_FILE=str(secret_file)))

        assert config.database_url == SECRET_URL

    @pytest.mark.parametrize("name", INTEGER_VARIABLES + FLOAT_VARIABLES)
    @pytest.mark.parametrize("value", ["-1", "-0.5", "-1e3"])
    def test_negative_number_names_the_variable(self, name: str, value: str) -> None:
        message = config_error(env(**{name: value}))

        assert message.startswith(PREFIX + name + ": ")

    @pytest.mark.parametrize("name", FLOAT_VARIABLES)
    def test_negative_float_is_rejected_as_negative(self, name: str) -> None:
        assert config_error(env(**{name: "-0.5"})) == f"{PREFIX}{name}: must not be negative, got '-0.5'"

    @pytest.mark.parametrize("name", INTEGER_VARIABLES + FLOAT_VARIABLES)
    @pytest.mark.parametrize("value", ["ten", "1,5", "5s", "0x10"])
    def test_unparseable_number_names_the_variable(self, name: str, value: str) -> None:
        assert config_error(env(**{name: value})) == f"{PREFIX}{name}: cannot parse {value!r}"

    @pytest.mark.parametrize("name", INTEGER_VARIABLES)
    def test_integer_variable_rejects_a_fraction(self, name: str) -> None:
        assert config_error(env(**{name: "2.5"})) == f"{PREFIX}{name}: cannot parse '2.5'"

    @pytest.mark.parametrize(
        "sizes",
        [{"POOL_MAX_SIZE": "0"}, {"POOL_MIN_SIZE": "5", "POOL_MAX_SIZE": "4"}, {"POOL_MIN_SIZE": "11"}],
    )
    def test_inconsistent_pool_sizes_name_both_variables(self, sizes: dict[str, str]) -> None:
        message = config_error(env(**sizes))

        assert PREFIX + "POOL_MAX_SIZE" in message
        assert PREFIX + "POOL_MIN_SIZE" in message

    @pytest.mark.parametrize("value", ["nan", "inf"])
    def test_non_finite_timeout_is_rejected(self, value: str) -> None:
        assert config_error(env(CONNECT_TIMEOUT_SECONDS=value)).startswith(PREFIX + "CONNECT_TIMEOUT_SECONDS")


class TestSecrecy:
    def test_database_url_is_not_in_the_repr(self) -> None:
        config = load_config(env(DATABASE_URL=SECRET_URL))

        assert config.database_url == SECRET_URL
        assert_secret_absent(repr(config))
        assert_secret_absent(str(config))

    @given(st.text(min_size=1))
    def test_no_database_url_is_in_the_repr_or_an_error(self, secret: str) -> None:
        url = "postgresql://user:" + urllib.parse.quote(secret, safe="") + "@host/db"
        config = load_config(env(DATABASE_URL=url))

        assert config.database_url == url
        assert url not in repr(config)
        # Unencoded, the password may make the URL unreadable: the error quotes none of it.
        raw = "postgresql://user:" + secret + "@host/db"
        message = ""
        try:
            load_config(env(DATABASE_URL=raw))
        except ConfigError as error:
            message = str(error)
        assert raw not in message
        assert message == "" or message.startswith("TIMESERIES_AGGREGATION_DATABASE_URL: ")

    def test_database_url_from_a_file_is_not_in_the_repr(self, tmp_path: Path) -> None:
        secret_file = tmp_path / "database-url"
        secret_file.write_text(SECRET_URL, encoding="utf-8")

        assert_secret_absent(repr(load_config(env(DATABASE_URL_FILE=str(secret_file)))))

    @pytest.mark.parametrize(
        "broken",
        [
            {"POOL_MIN_SIZE": "-1"},
            {"MAX_MESSAGE_BYTES": "lots"},
            {"POOL_MAX_SIZE": "0"},
            {"DATABASE_URL_FILE": "/nonexistent/database-url"},
        ],
    )
    def test_errors_about_other_variables_do_not_show_the_url(self, broken: dict[str, str]) -> None:
        environ = env(DATABASE_URL=SECRET_URL) | env(**broken)
        if "DATABASE_URL_FILE" in broken:
            # The file is only read when DATABASE_URL itself is not set.
            del environ[PREFIX + "DATABASE_URL"]

        assert_secret_absent(config_error(environ))

    def test_missing_url_file_names_the_variable_and_the_reason(self, tmp_path: Path) -> None:
        message = config_error(env(DATABASE_URL_FILE=str(tmp_path / "missing")))

        assert message == (
            f"{PREFIX}DATABASE_URL_FILE: cannot read the file it names (No such file or directory)"
        )

    def test_url_file_that_is_a_directory_names_the_variable(self, tmp_path: Path) -> None:
        message = config_error(env(DATABASE_URL_FILE=str(tmp_path)))

        assert message == f"{PREFIX}DATABASE_URL_FILE: cannot read the file it names (Is a directory)"

    def test_url_put_in_the_file_variable_by_mistake_is_not_echoed(self) -> None:
        message = config_error(env(DATABASE_URL_FILE=SECRET_URL))

        assert message.startswith(PREFIX + "DATABASE_URL_FILE: ")
        assert_secret_absent(message)

    def test_url_file_that_is_not_utf8_is_a_config_error_without_its_content(self, tmp_path: Path) -> None:
        secret_file = tmp_path / "database-url"
        secret_file.write_bytes(SECRET_URL.encode() + b"\xff\n")

        with pytest.raises(ConfigError) as caught:
            load_config(env(DATABASE_URL_FILE=str(secret_file)))

        assert str(caught.value).startswith(PREFIX + "DATABASE_URL_FILE: ")
        assert_secret_absent(str(caught.value))
        assert_secret_absent(repr(caught.value))


class TestSecurityVariables:
    def test_api_keys_are_the_default_and_need_a_key_file(self) -> None:
        message = config_error({})
        assert message.startswith(PREFIX + "API_KEYS_FILE: required")
        assert "keys generate" in message

    def test_api_key_mode_with_a_key_file(self, tmp_path: Path) -> None:
        config = load_config({PREFIX + "API_KEYS_FILE": str(tmp_path / "keys")})
        assert (config.auth_mode, config.api_keys_file) == ("api-key", tmp_path / "keys")

    def test_unknown_auth_mode_is_rejected(self) -> None:
        assert config_error(env(AUTH_MODE="open")).startswith(PREFIX + "AUTH_MODE: must be")

    @pytest.mark.parametrize(
        ("value", "served"), [("", True), ("on", True), ("OFF", False), (" off ", False)]
    )
    def test_reflection_is_on_unless_turned_off(self, value: str, served: bool) -> None:
        assert load_config(env(REFLECTION=value)).reflection is served

    def test_reflection_is_on_or_off_and_nothing_else(self) -> None:
        assert config_error(env(REFLECTION="false")) == (
            f"{PREFIX}REFLECTION: must be 'on' or 'off', got 'false'"
        )

    def test_tls_certificate_and_key_go_together(self, tmp_path: Path) -> None:
        assert "TLS_KEY_FILE go together" in config_error(env(TLS_CERT_FILE=str(tmp_path / "crt")))
        assert "go together" in config_error(env(TLS_KEY_FILE=str(tmp_path / "key")))
        assert "TLS_CLIENT_CA_FILE needs" in config_error(env(TLS_CLIENT_CA_FILE=str(tmp_path / "ca")))
        config = load_config(
            env(
                TLS_CERT_FILE=str(tmp_path / "crt"),
                TLS_KEY_FILE=str(tmp_path / "key"),
                TLS_CLIENT_CA_FILE=str(tmp_path / "ca"),
            )
        )
        assert (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file) == (
            tmp_path / "crt",
            tmp_path / "key",
            tmp_path / "ca",
        )

    def test_limits_are_read_and_the_database_outlasts_the_stream_idle_timeout(self) -> None:
        config = load_config(
            env(MAX_CONCURRENT_STREAMS="3", MAX_CONCURRENT_RPCS="40", STREAM_IDLE_TIMEOUT_SECONDS="12.5")
        )
        assert (config.pool.write_max_size, config.max_concurrent_rpcs) == (3, 40)
        assert config.stream_idle_timeout_seconds == 12.5
        assert config.pool.idle_in_transaction_timeout_seconds == 72.5

    def test_admission_and_key_share_settings_are_read(self) -> None:
        config = load_config(
            env(
                PROBE_MAX_CONCURRENT_RPCS="5",
                PROBE_MAX_STREAMS="6",
                PROBE_MAX_CALLS_PER_PEER="2",
                PROBE_STREAM_MAX_AGE_SECONDS="60",
                STREAM_MAX_AGE_SECONDS="120",
                CONNECTION_IDLE_SECONDS="30",
                CONNECTION_MAX_AGE_SECONDS="900",
                KEY_MAX_STREAMS="4",
                KEY_MAX_WRITES="2",
                KEY_RATE="0.5",
                KEY_BURST="3",
            )
        )
        assert (config.probe_max_concurrent_rpcs, config.probe_max_streams) == (5, 6)
        assert (config.probe_max_calls_per_peer, config.probe_stream_max_age_seconds) == (2, 60.0)
        assert (config.stream_max_age_seconds, config.connection_idle_seconds) == (120.0, 30.0)
        assert config.connection_max_age_seconds == 900.0
        assert (config.key_max_streams, config.key_max_writes, config.key_rate, config.key_burst) == (
            4,
            2,
            0.5,
            3,
        )
        # Unset, a key's stream and write shares follow the write pool's size.
        assert (load_config(env()).key_max_streams, load_config(env()).key_max_writes) == (None, None)

    @pytest.mark.parametrize(
        "name", ["PROBE_MAX_STREAMS", "KEY_MAX_WRITES", "KEY_BURST", "MAX_CONCURRENT_RPCS"]
    )
    def test_admission_counts_must_be_at_least_one(self, name: str) -> None:
        with pytest.raises(ConfigError, match=f"{name}: must be at least 1"):
            load_config(env(**{name: "0"}))


class TestListenAddress:
    def test_the_image_listens_on_every_interface_of_its_container(self) -> None:
        # The default reaches the loopback interface only, which nobody outside a container has.
        dockerfile = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
        assert f'{PREFIX}LISTEN_ADDRESS="[::]:50051"' in dockerfile

    @pytest.mark.parametrize("address", ["[::]:50051", "0.0.0.0:0", "localhost:65535", "[::1]:6000"])
    def test_host_and_port_are_accepted(self, address: str) -> None:
        assert load_config(env(LISTEN_ADDRESS=address)).listen_address == address

    @pytest.mark.parametrize(
        "address", ["127.0.0.1:99999", "localhost", "50051", ":50051", "localhost:", "localhost:grpc"]
    )
    def test_malformed_address_or_port_out_of_range_names_the_variable(self, address: str) -> None:
        message = config_error(env(LISTEN_ADDRESS=address))
        assert message == (
            f"{PREFIX}LISTEN_ADDRESS: must be HOST:PORT with a port from 0 to 65535, got {address!r}"
        )


class TestObservabilityVariables:
    def test_metrics_and_log_format_are_off_and_automatic_by_default(self) -> None:
        config = load_config(env(METRICS_ADDRESS="", LOG_FORMAT=""))
        assert (config.metrics_address, config.log_format) == (None, None)

    @pytest.mark.parametrize(
        ("address", "host", "port"),
        [("127.0.0.1:9464", "127.0.0.1", 9464), ("[::]:0", "::", 0), ("localhost:65535", "localhost", 65535)],
    )
    def test_metrics_address_is_read(self, address: str, host: str, port: int) -> None:
        config = load_config(env(METRICS_ADDRESS=address))
        assert config.metrics_address == address
        assert split_host_port(address) == (host, port)

    @pytest.mark.parametrize("address", ["9464", ":9464", "localhost:", "localhost:http", "localhost:65536"])
    def test_bad_metrics_address_names_the_variable(self, address: str) -> None:
        message = config_error(env(METRICS_ADDRESS=address))
        assert message == (
            f"{PREFIX}METRICS_ADDRESS: must be HOST:PORT with a port from 0 to 65535, got {address!r}"
        )

    @pytest.mark.parametrize(("value", "log_format"), [("json", "json"), ("TEXT", "text")])
    def test_log_format_is_read(self, value: str, log_format: str) -> None:
        assert load_config(env(LOG_FORMAT=value)).log_format == log_format

    def test_unknown_log_format_is_rejected(self) -> None:
        assert (
            config_error(env(LOG_FORMAT="xml")) == f"{PREFIX}LOG_FORMAT: must be 'json' or 'text', got 'xml'"
        )

    def test_unknown_log_level_is_rejected(self) -> None:
        assert config_error(env(LOG_LEVEL="verbose")).startswith(f"{PREFIX}LOG_LEVEL: must be DEBUG, INFO")


class TestHistoryRetention:
    def test_history_is_kept_thirty_days_by_default(self) -> None:
        assert load_config(env()).history_retention == timedelta(days=30)
        assert load_config(env(HISTORY_RETENTION="")).history_retention == timedelta(days=30)

    @pytest.mark.parametrize(
        ("value", "retention"),
        [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90))],
    )
    def test_retention_is_read(self, value: str, retention: timedelta) -> None:
        assert load_config(env(HISTORY_RETENTION=value)).history_retention == retention

    def test_zero_keeps_the_history_forever(self) -> None:
        assert load_config(env(HISTORY_RETENTION="0")).history_retention == timedelta(0)

    @pytest.mark.parametrize("value", ["30", "30 days", "-1d", "1.5d", "1w"])
    def test_unreadable_retention_names_the_variable_and_the_format(self, value: str) -> None:
        assert config_error(env(HISTORY_RETENTION=value)) == (
            f"{PREFIX}HISTORY_RETENTION: must be a whole number followed by s, m, h or d "
            f"(e.g. 30d, 12h, 90m, 45s), or 0; got {value!r}"
        )

    def test_retention_beyond_a_hundred_years_is_rejected(self) -> None:
        assert config_error(env(HISTORY_RETENTION="40000d")) == (
            f"{PREFIX}HISTORY_RETENTION: must be at most 36525d (100 years), got '40000d'"
        )


class TestCompressAfter:
    def test_chunks_are_compressed_after_four_weeks_by_default(self) -> None:
        assert load_config(env()).compress_after == timedelta(days=28)
        assert load_config(env(COMPRESS_AFTER="")).compress_after == timedelta(days=28)

    @pytest.mark.parametrize(("value", "age"), [("14d", timedelta(days=14)), ("36h", timedelta(hours=36))])
    def test_age_is_read(self, value: str, age: timedelta) -> None:
        assert load_config(env(COMPRESS_AFTER=value)).compress_after == age

    def test_zero_turns_compression_off(self) -> None:
        assert load_config(env(COMPRESS_AFTER="0")).compress_after == timedelta(0)

    def test_unreadable_age_names_the_variable_and_the_format(self) -> None:
        assert config_error(env(COMPRESS_AFTER="4 weeks")) == (
            f"{PREFIX}COMPRESS_AFTER: must be a whole number followed by s, m, h or d "
            "(e.g. 30d, 12h, 90m, 45s), or 0; got '4 weeks'"
        )


class TestReadingsRetention:
    def test_readings_are_kept_forever_by_default(self) -> None:
        assert load_config(env()).readings_retention == timedelta(0)

    def test_retention_is_read(self) -> None:
        assert load_config(env(READINGS_RETENTION="730d")).readings_retention == timedelta(days=730)

    def test_unreadable_retention_names_the_variable(self) -> None:
        assert config_error(env(READINGS_RETENTION="2y")).startswith(
            f"{PREFIX}READINGS_RETENTION: must be a whole number followed by s, m, h or d"
        )
