"""Log records as JSON lines, or as text on a terminal, with secrets scrubbed from every line."""

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import unquote, urlsplit

from timeseries_aggregation.config import LOG_FORMAT_JSON, LOG_FORMAT_TEXT, Config
from timeseries_aggregation.domain.api_keys import KEY_PREFIX

REDACTED = "[redacted]"
# A password shorter than this is scrubbed only as part of the whole URL: replacing every
# "1234" of every line would ruin the log without hiding anything a guesser lacks.
MIN_SCRUBBED_PASSWORD_LENGTH = 8
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_BEARER = re.compile(r"(?i)\b(bearer\s+)\S+")
_API_KEY = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{16,}")
# Attributes every LogRecord has; any other one came in through `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class Redactor:
    """Scrubs the database URL, its password, bearer tokens and API keys out of text."""

    def __init__(self, database_url: str | None) -> None:
        secrets = set()
        if database_url:
            secrets.add(database_url)
            password = urlsplit(database_url).password or ""
            secrets.update(
                form for form in (password, unquote(password)) if len(form) >= MIN_SCRUBBED_PASSWORD_LENGTH
            )
        # Longest first, so a URL goes as a whole before its password is looked for.
        self._secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _BEARER.sub(r"\g<1>" + REDACTED, text)
        return _API_KEY.sub(REDACTED, text)


def _extras(record: logging.LogRecord) -> dict[str, object]:
    """The fields a log call added with `extra=`."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the extra fields, exception."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, self._redact(value) if isinstance(value, str) else value)
        if record.exc_info:
            entry["exception"] = self._redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self._redact(self.formatStack(record.stack_info))
        # Values were scrubbed one by one (before JSON escaping could hide a secret); the
        # line is scrubbed again for secrets inside nested values.
        return self._redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` for a person at a terminal."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = "".join(f" {key}={value}" for key, value in _extras(record).items())
        return super().formatMessage(record) + fields

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class _ServiceHandler(logging.StreamHandler[TextIO]):
    """The handler configure_logging installs, so calling it again replaces it."""


class _Fields(logging.Filter):
    """Adds the same fields to every record (a worker's index)."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            setattr(record, key, value)
        return True


def configure_logging(
    config: Config, stream: TextIO | None = None, fields: Mapping[str, object] | None = None
) -> None:
    """Send every log record to stream (default stderr) at config.log_level.

    The format is config.log_format, or when that is unset, text on a terminal and JSON
    lines otherwise. Other handlers of the root logger are left alone. fields: added to
    every line.
    """
    output = sys.stderr if stream is None else stream
    log_format = config.log_format or (LOG_FORMAT_TEXT if output.isatty() else LOG_FORMAT_JSON)
    redact = Redactor(config.database_url)
    handler = _ServiceHandler(output)
    handler.setFormatter(JsonFormatter(redact) if log_format == LOG_FORMAT_JSON else TextFormatter(redact))
    if fields:
        handler.addFilter(_Fields(fields))
    root = logging.getLogger()
    for previous in [existing for existing in root.handlers if isinstance(existing, _ServiceHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(config.log_level)
    logging.captureWarnings(True)
