"""The one structlog configuration of the gateway.

JSON lines when stdout is not a terminal (journald, files, log shippers); readable console
lines on a terminal. Event names are stable snake_case (``checkpoint_failed``,
``reset_accepted``, ``config_reload_refused``...): operators grep and alert on them.

Logging never raises into the code that logs: a line that cannot be written is dropped
(``LogStream``), so a closed pipe or a full disk cannot stop a reset's acknowledgement, a
checkpoint or a SIGTERM.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TextIO

import structlog


class LogStream:
    """The file the log lines go to, with its failures kept inside.

    A write that fails is counted in ``lost`` and the line dropped. A broken pipe (whoever
    read our standard output went away: ``pulse-gateway run | head``, a dead log shipper) is
    for good: one note goes to stderr, and the descriptor is pointed at /dev/null so that no
    later write, nor the interpreter's last flush (which would make the exit status 120),
    fails again. Other errors (a full disk) are tried again with the next line.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._mutex = threading.Lock()  # the checkpoint thread logs too
        self.lost = 0
        self.broken = False

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def write(self, text: str) -> int:
        with self._mutex:
            if not self.broken:
                try:
                    return self._stream.write(text)
                except (OSError, ValueError) as exc:
                    self._failed(exc)
            self.lost += text.endswith("\n")
            return len(text)

    def flush(self) -> None:
        with self._mutex:
            try:
                self._stream.flush()
            except (OSError, ValueError) as exc:
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if self.broken or not isinstance(exc, BrokenPipeError):
            return
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
            sys.stderr.write(
                "pulse-gateway: the log output was closed (broken pipe); "
                "log lines are dropped from now on, the gateway goes on\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # no descriptor, or no stderr either: the lines are dropped all the same


def configure(stream: TextIO | None = None, *, level: int = logging.INFO) -> None:
    """Configure structlog for this process; call once, before the first log line."""
    out = LogStream(stream or sys.stdout)
    pretty = out.isatty()
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
        # structlog annotates the file as TextIO, but PrintLogger only print()s to it (write and
        # flush), which LogStream has: the annotation is narrower than the use.
        logger_factory=structlog.PrintLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger that tags its lines with the component ``name``.

    It stays lazy (``bind`` would not): modules create their loggers at import time, before
    ``configure`` runs.
    """
    return structlog.get_logger(component=name)
