"""One logging setup for uvicorn's loggers and ours: one line per record, as text or JSON
(setting ``LOG_FORMAT``), each carrying the id of the request it was logged for.

The request id lives in a context variable that ``riskstream.web.request_id`` sets for the
request's task; every record logged in that task (the route's warnings, uvicorn's access line and
its report of an unhandled error) takes it from there. A record logged outside any request (start,
the outbox drain, the micro-batcher's shared batches) has none.

What goes in a line is only what the code put in its message: never a request's body, headers or
feature values (the audit rule of docs/auth.md).
"""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]

REQUEST_ID: ContextVar[str | None] = ContextVar("riskstream_request_id", default=None)

# uvicorn's names of its --log-level values; "trace" is its own, below DEBUG
_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on the record (``request_id``, None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def _request_id(record: logging.LogRecord) -> str | None:
    found: str | None = getattr(record, "request_id", None)
    return found if found is not None else REQUEST_ID.get()


class TextFormatter(logging.Formatter):
    """``2026-11-25T08:00:00.123Z INFO riskstream.x [request id or -] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_label)s] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        record.request_label = _request_id(record) or "-"
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``request_id``
    (when logged for a request), ``exception`` (its traceback, when there is one); uvicorn's
    access lines add ``client``, ``method``, ``path``, ``http_version`` and ``status``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            line["request_id"] = request_id
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            line.update(zip(_ACCESS_FIELDS, args))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def _iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(_LEVELS)}") from None


def config(log_format: LogFormat, level: str | int = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for this process and uvicorn's workers (its
    ``log_config``): one handler on stderr, on the root logger; uvicorn's loggers propagate to
    it, so their lines have the same format as ours."""
    number = level_number(level)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"line": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
                "filters": ["request_id"],
            }
        },
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True, "level": number}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
            },
            # a line per plugin at every migration: noise, unless asked for with debug
            "alembic.runtime.plugins": {"level": max(number, logging.WARNING)},
        },
        "root": {"handlers": ["stderr"], "level": number},
    }


def configure(log_format: LogFormat, level: str | int = "info") -> None:
    logging.config.dictConfig(config(log_format, level))
