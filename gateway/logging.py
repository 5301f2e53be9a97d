"""The one structlog configuration of the gateway.

JSON lines when stdout is not a terminal (journald, files, log shippers); readable console
lines on a terminal. Event names are stable snake_case (``checkpoint_failed``,
``reset_accepted``, ``config_reload_refused``...): operators grep and alert on them.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(stream: TextIO | None = None, *, level: int = logging.INFO) -> None:
    """Configure structlog for this process; call once, before the first log line."""
    stream = stream or sys.stdout
    pretty = stream.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=not pretty),
    ]
    if pretty:
        processors.append(structlog.dev.ConsoleRenderer(colors=True, sort_keys=False))
    else:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger that tags its lines with the component ``name``.

    It stays lazy (``bind`` would not): modules create their loggers at import time, before
    ``configure`` runs.
    """
    return structlog.get_logger(component=name)
