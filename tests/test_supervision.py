"""Long-lived tasks are supervised: one that dies stops the gateway loudly, never half-alive."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.supervisor import Supervisor
from tests.daemon import write_config

# The real `pulse-gateway run`, with one fault put in at the narrowest seam: the tick's loop
# body raises on its third pass (after start-up, so the failure happens in a running daemon).
CRASHING_TICK = textwrap.dedent(
    """
    import sys
    from gateway import cli, feed

    passes = 0
    original = feed.Feed.now

    def now(self):
        global passes
        if sys._getframe(1).f_code.co_name == "tick":
            passes += 1
            if passes == 3:
                raise RuntimeError("a bug in the tick")
        return original(self)

    feed.Feed.now = now
    sys.exit(cli.main(["run", "-c", sys.argv[1]]))
    """
)


def test_a_crashed_tick_stops_the_daemon_with_exit_1_after_a_final_checkpoint(
    tmp_path: Path,
) -> None:
    """The tick dies: task_failed with its traceback is logged, the gateway stops, writes its
    final checkpoint and exits 1 (so systemd restarts it) instead of serving frozen values."""
    config = write_config(tmp_path)
    process = subprocess.run(
        [sys.executable, "-c", CRASHING_TICK, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.returncode == 1, process.stderr
    lines = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    failed = next(line for line in lines if line["event"] == "task_failed")
    assert failed["task"] == "tick"
    assert "RuntimeError: a bug in the tick" in failed["traceback"]
    assert events.index("gateway_ready") < events.index("task_failed")
    assert events.index("task_failed") < events.index("gateway_stopped")
    assert "task tick failed" in process.stderr
    with Store.open_readonly(tmp_path / "state" / "gateway.db") as store:
        saved = store.load()
    assert saved is not None and saved.channels["e"].state.pulses_total > 0


@pytest.mark.asyncio
async def test_a_failing_task_is_reported_once_and_others_keep_running() -> None:
    """The first failure is reported (by name) and remembered; a second failure is logged
    but not reported again; tasks that did not fail are still running."""
    reported: list[str] = []
    tasks = Supervisor(reported.append)

    async def fail(message: str) -> None:
        await asyncio.sleep(0)
        raise ValueError(message)

    tasks.start("steady", asyncio.sleep(3600))
    tasks.start("first", fail("one"))
    tasks.start("second", fail("two"))
    await asyncio.sleep(0.05)
    assert reported == ["first"] and tasks.failed == "first"
    assert tasks.running("steady") and not tasks.running("first")
    await tasks.cancel()
    assert not tasks.running("steady")


@pytest.mark.asyncio
async def test_a_task_meant_to_run_forever_that_returns_is_a_failure() -> None:
    """A loop that ends on its own is as dead as one that raised; a one-off job may end."""
    reported: list[str] = []
    tasks = Supervisor(reported.append)

    async def done() -> None:
        await asyncio.sleep(0)

    tasks.start("job", done(), forever=False)
    await asyncio.sleep(0.02)
    assert reported == []
    tasks.start("loop", done())
    await asyncio.sleep(0.02)
    assert reported == ["loop"]


@pytest.mark.asyncio
async def test_cancelling_is_not_a_failure_and_a_name_runs_once_at_a_time() -> None:
    """Stopping a task on purpose reports nothing; a second task under a running name is a
    programming error, refused before it starts."""
    reported: list[str] = []
    tasks = Supervisor(reported.append)
    tasks.start("tick", asyncio.sleep(3600))
    extra = asyncio.sleep(3600)
    with pytest.raises(RuntimeError, match="already running"):
        tasks.start("tick", extra)
    extra.close()
    await tasks.cancel("tick")
    assert reported == [] and tasks.failed is None and not tasks.running("tick")
    tasks.start("tick", asyncio.sleep(3600))  # the name is free again
    assert tasks.running("tick")
    await tasks.cancel()
