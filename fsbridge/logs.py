"""Logging: every record of a call carries its uuid; JSON lines when not on a TTY.

The uuid lives in a ``contextvars`` variable set by the call's owner coroutine; tasks created by
the call inherit it, so nothing has to pass a logger around. Never log per audio frame: count.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import IO

__all__ = ["call_uuid", "setup_logging"]

call_uuid: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_uuid", default=None)


class _CallFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.call_uuid = call_uuid.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "call_uuid", None):
            out["uuid"] = record.call_uuid
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = getattr(record, "fields", None)
        uuid = getattr(record, "call_uuid", None)
        if not uuid and isinstance(extra, dict) and isinstance(extra.get("uuid"), str):
            uuid = extra["uuid"]  # a service-level line about one call
            extra = {k: v for k, v in extra.items() if k != "uuid"}
        prefix = f"[{uuid[:8]}] " if uuid else ""
        line = (
            f"{self.formatTime(record, '%H:%M:%S')}.{int(record.msecs):03d} "
            f"{record.levelname[0]} {prefix}{record.getMessage()}"
        )
        if isinstance(extra, dict) and extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", fmt: str = "auto", stream: IO[str] | None = None) -> None:
    """JSON lines unless ``stream`` is a terminal (``fmt`` auto), every record of a call tagged."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_CallFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("fsbridge").setLevel(level.upper())
    # greenswitch logs every frame at debug; keep it quiet unless asked.
    logging.getLogger("greenswitch").setLevel(max(logging.INFO, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
