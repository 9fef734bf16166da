"""Logging for every process of ``serve`` (master, workers, warehouse process), one format.

``log_format = "json"`` writes one JSON object per line (``ts``, ``level``, ``logger``, ``pid``,
``message``, ``exc``) for log shippers; ``"text"`` (the default) is for people.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process or os.getpid(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def formatter_config(log_format: str) -> dict[str, Any]:
    if log_format == "json":
        return {"()": "littlestats.logs.JsonFormatter"}
    return {"format": TEXT_FORMAT}


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for our loggers and gunicorn's (also its ``logconfig_dict``)."""
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter_config(log_format)},
        "handlers": {"default": handler},
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["default"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["default"], "propagate": False},
            "uvicorn.error": {"level": level.upper(), "handlers": ["default"], "propagate": False},
        },
    }


def configure(level: str, log_format: str) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level, log_format))
