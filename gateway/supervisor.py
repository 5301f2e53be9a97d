"""Long-lived tasks that must not die quietly.

The gateway's loops (the boundary tick, the checkpoint writer, the sources' keepers, the timed
jobs) run as asyncio tasks. A task that ended with an exception would otherwise be noticed by
nobody: the process would go on answering BACnet reads with values that no longer move. So
every such task runs under a ``Supervisor``: if one fails, or returns when it was meant to run
until cancelled, the failure is logged as ``task_failed`` with its traceback and the daemon is
told to stop, which writes a final checkpoint and exits 1 so systemd restarts it.

Unlike ``asyncio.TaskGroup`` a supervisor lets the service start and cancel single tasks
while the others run (a reload restarts the sources but not the tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.logging import get_logger

log = get_logger("service")


class Supervisor:
    """Starts named tasks and calls ``on_failure`` once when any of them fails."""

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        self._on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.failed: str | None = None  # the first task that failed, by name

    def start(self, name: str, work: Coroutine[Any, Any, None], *, forever: bool = True) -> None:
        """Run ``work`` as the task ``name`` (replacing a finished one of that name).

        ``forever``: the task only ends by being cancelled; returning is a failure too.
        """
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name} is already running")
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._ended(name, done, forever))

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def task(self, name: str) -> asyncio.Task[None] | None:
        return self._tasks.get(name)

    async def cancel(self, *names: str, timeout: float | None = None) -> None:
        """Cancel these tasks (all when none is named) and wait for them to end."""
        chosen = [self._tasks.pop(n) for n in (names or list(self._tasks)) if n in self._tasks]
        for task in chosen:
            task.cancel()
        if chosen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*chosen, return_exceptions=True), timeout=timeout
                )

    def _ended(self, name: str, task: asyncio.Task[None], forever: bool) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if task.cancelled():
            return
        error = task.exception()
        if error is None and not forever:
            return
        if error is None:
            detail = "the task returned, but it must run until the gateway stops"
        else:
            detail = "".join(traceback.format_exception(error)).rstrip()
        log.error("task_failed", task=name, error=repr(error), traceback=detail)
        if self.failed is None:
            self.failed = name
            self._on_failure(name)
