"""sd_notify (gateway.notify) against real AF_UNIX datagram sockets: no systemd needed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.clock import Timeline
from gateway.config import load_config
from gateway.notify import Notifier, status_line
from gateway.service import Gateway
from tests.daemon import Daemon, free_port, free_udp_port, write_config
from tests.helpers import FakeClocks


class Listener:
    """The service manager's end: a datagram socket that collects what the gateway sends."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.received: list[str] = []

    def next(self, timeout: float = 5.0) -> str:
        """The next datagram, decoded; AssertionError if none comes within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(65536).decode()
        except TimeoutError:
            raise AssertionError(f"no datagram in {timeout} s; before: {self.received}") from None
        self.received.append(message)
        return message

    def wait_for(self, line: str, timeout: float = 20.0) -> str:
        """The next datagram holding ``line`` (e.g. ``READY=1``), skipping the others."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.next(timeout=left)
            except AssertionError:
                break
            if line in message.splitlines():
                return message
        raise AssertionError(f"no {line!r} within {timeout} s; received {self.received}")

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        messages = []
        try:
            while True:
                messages.append(self.sock.recv(65536).decode())
        except BlockingIOError:
            pass
        self.received += messages
        return messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    """A notification socket file in tmp_path (sun_path allows 107 bytes: short name)."""
    path = tmp_path / "notify"
    assert len(os.fsencode(path)) < 108, f"tmp_path too long for a socket: {path}"
    listener = Listener(str(path))
    yield listener
    listener.close()


def notifier_for(listener: Listener, **extra: str) -> Notifier:
    """A Notifier whose NOTIFY_SOCKET is ``listener``'s address."""
    address = listener.sock.getsockname()
    name = "@" + address[1:].decode() if isinstance(address, bytes) else address
    return Notifier({"NOTIFY_SOCKET": name, **extra})


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the datagrams ------------------------------------------------------------------------


def test_each_message_is_the_exact_datagram(listener: Listener) -> None:
    """READY=1 with STATUS, STATUS, WATCHDOG=1 and STOPPING=1 arrive byte for byte."""
    notifier = notifier_for(listener, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid()))
    assert notifier.enabled
    summary = "4 channels, 1/1 sources up, BACnet 127.0.0.1:47808"
    assert notifier.ready(summary)
    assert listener.next() == f"READY=1\nSTATUS={summary}"
    assert notifier.ready()
    assert listener.next() == "READY=1"
    assert notifier.status("source sim down")
    assert listener.next() == "STATUS=source sim down"
    assert notifier.watchdog()
    assert listener.next() == "WATCHDOG=1"
    assert notifier.stopping()
    assert listener.next() == "STOPPING=1"
    assert notifier.stopping("Stopping: final checkpoint")
    assert listener.next() == "STOPPING=1\nSTATUS=Stopping: final checkpoint"
    assert listener.pending() == []


def test_a_status_is_one_line(listener: Listener) -> None:
    """Newlines in a status become spaces, so the text cannot forge another assignment."""
    notifier_for(listener).status("reload refused\nREADY=1")
    assert listener.next() == "STATUS=reload refused READY=1"


def test_reloading_carries_the_monotonic_clock(listener: Listener) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC= read from CLOCK_MONOTONIC (notify-reload)."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier_for(listener).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = listener.next().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_an_abstract_socket_name_works() -> None:
    """NOTIFY_SOCKET=@name reaches a Linux abstract socket (no file involved)."""
    name = f"pulse-gateway-test-{uuid.uuid4().hex}"
    listener = Listener(b"\0" + name.encode())
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("up")
        assert listener.next() == "READY=1\nSTATUS=up"
        assert notifier.stopping()
        assert listener.next() == "STOPPING=1"
    finally:
        listener.close()


# -- the watchdog -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "OWN"}, 15.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": ""}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "OTHER"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "main"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    listener: Listener, extra: dict[str, str], interval: float | None
) -> None:
    """Half of WATCHDOG_USEC, unless it is absent, not positive, or WATCHDOG_PID is another pid."""
    own = os.getpid()
    pids = {"OWN": str(own), "OTHER": str(own + 1)}
    extra = {key: pids.get(value, value) for key, value in extra.items()}
    notifier = notifier_for(listener, **extra)
    assert notifier.watchdog_interval() == interval
    assert notifier.watchdog() is (interval is not None)


def test_the_watchdog_needs_the_socket_too() -> None:
    """WATCHDOG_USEC without NOTIFY_SOCKET means no watchdog: there is nowhere to ping."""
    notifier = Notifier({"WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval() is None
    assert not notifier.watchdog()


def test_the_watchdog_is_paced_at_half_the_timeout(listener: Listener) -> None:
    """Called every second, watchdog() sends WATCHDOG=1 only once per half timeout."""
    clock = FakeClock()
    notifier = Notifier(
        {"NOTIFY_SOCKET": listener.sock.getsockname(), "WATCHDOG_USEC": "10000000"}, clock=clock
    )
    sent_at = []
    for second in range(21):
        clock.now = 1000.0 + second
        if notifier.watchdog():
            sent_at.append(second)
    assert sent_at == [0, 5, 10, 15, 20]
    assert listener.pending() == ["WATCHDOG=1"] * 5


# -- never a crash ------------------------------------------------------------------------


def test_without_notify_socket_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NOTIFY_SOCKET (a terminal, a test): every call is a no-op that returns False."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    for notifier in (Notifier(), Notifier({"NOTIFY_SOCKET": ""}), Notifier.disabled()):
        assert not notifier.enabled
        assert notifier.watchdog_interval() is None
        assert not notifier.ready("x")
        assert not notifier.reloading()
        assert not notifier.status("x")
        assert not notifier.watchdog()
        assert not notifier.stopping()


def test_the_environment_is_read_by_default(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notifier() takes NOTIFY_SOCKET and WATCHDOG_USEC from os.environ."""
    monkeypatch.setenv("NOTIFY_SOCKET", listener.sock.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    assert notifier.watchdog_interval() == 4.0
    assert notifier.ready()
    assert listener.next() == "READY=1"


def test_an_unsupported_socket_kind_is_ignored() -> None:
    """A vsock: or relative NOTIFY_SOCKET is logged and ignored, never raised."""
    with capture_logs() as logs:
        for name in ("vsock:2:1234", "relative/notify"):
            notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "30000000"})
            assert not notifier.enabled and not notifier.ready()
            assert notifier.watchdog_interval() is None
    assert [entry["event"] for entry in logs] == ["notify_socket_unsupported"] * 2


def test_a_socket_that_disappears_is_logged_once_and_never_raised(tmp_path: Path) -> None:
    """Sends to a vanished socket return False, log notify_failed once, and recover later."""
    path = tmp_path / "notify"
    listener = Listener(str(path))
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
    assert notifier.ready()
    assert listener.next() == "READY=1"
    listener.close()
    path.unlink()
    with capture_logs() as logs:
        assert not notifier.status("a")
        assert not notifier.watchdog()
        assert not notifier.stopping()
        listener = Listener(str(path))  # the manager is back (daemon-reexec)
        try:
            assert notifier.status("b")
            assert listener.next() == "STATUS=b"
        finally:
            listener.close()
    events = [entry["event"] for entry in logs]
    assert events == ["notify_failed", "notify_recovered"]
    assert logs[0]["socket"] == str(path) and "FileNotFoundError" in logs[0]["error"]


def test_a_full_queue_drops_messages_instead_of_blocking(listener: Listener) -> None:
    """A manager that does not read: sends fail fast (EAGAIN) and the caller goes on."""
    notifier = notifier_for(listener)
    began = time.monotonic()
    with capture_logs() as logs:
        for _ in range(100_000):
            if not notifier.status("x" * 1000):
                break
        else:
            pytest.fail("the socket queue never filled")
    assert time.monotonic() - began < 10
    assert [entry["event"] for entry in logs] == ["notify_failed"]
    assert "BlockingIOError" in logs[0]["error"]


def test_status_line_summarises_the_gateway() -> None:
    """The one-line STATUS: channels, sources up of all, BACnet and metrics addresses."""
    assert (
        status_line(
            channels=4,
            sources_up={"sim": True},
            bacnet="127.0.0.1:47808",
            metrics="127.0.0.1:9842",
        )
        == "4 channels, 1/1 sources up, BACnet 127.0.0.1:47808, metrics 127.0.0.1:9842"
    )
    assert (
        status_line(channels=1, sources_up={"a": True, "b": False})
        == "1 channel, 1/2 sources up, no BACnet"
    )


# -- the gateway itself: these need gateway.notify wired into gateway/service.py and cli.py ----


def test_the_daemon_notifies_ready_watchdog_reload_and_stopping(
    listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pulse-gateway run` under a fake manager: READY=1 once serving, pings, reload, STOPPING=1."""
    metrics_port = free_port()
    bacnet_port = free_udp_port()
    config = write_config(tmp_path, metrics_port=metrics_port, bacnet_port=bacnet_port)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.sock.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2s: a ping every second
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with Daemon(config) as daemon:
        try:
            ready = listener.wait_for("READY=1")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: is gateway.notify wired into gateway/service.py?"
            ) from None
        # READY=1 means serving: /metrics answers at once, and the status names what runs
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
        assert f"STATUS=2 channels, 0/1 sources up, BACnet 127.0.0.1:{bacnet_port}" in ready or (
            f"STATUS=2 channels, 1/1 sources up, BACnet 127.0.0.1:{bacnet_port}" in ready
        ), ready
        listener.wait_for("WATCHDOG=1", timeout=5)
        listener.wait_for("WATCHDOG=1", timeout=5)  # and again: it is fed from the main loop

        daemon.signal(signal.SIGHUP)
        listener.wait_for("RELOADING=1")
        reloaded = listener.wait_for("READY=1")
        assert any(line.startswith("STATUS=2 channels") for line in reloaded.splitlines())

        daemon.signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", timeout=5)
        assert daemon.process.wait(timeout=10) == 0
    assert "READY=1" not in "".join(listener.pending())


@pytest.mark.asyncio
async def test_the_watchdog_is_fed_while_a_backward_clock_step_holds_time(
    listener: Listener, tmp_path: Path
) -> None:
    """An hour back on the wall clock: the tick keeps pinging (it never sleeps past a second)."""
    clocks = FakeClocks()
    config = load_config(write_config(tmp_path), purpose="run")
    notifier = notifier_for(listener, WATCHDOG_USEC="2000000")  # a ping every second
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono), notifier=notifier)
    await gateway.start()
    try:
        await asyncio.to_thread(listener.wait_for, "WATCHDOG=1", 5)  # the tick runs
        clocks.wall_us -= 3600 * 1_000_000
        clocks.mono_us += 1000
        await asyncio.sleep(3.5)
        pings = [m for m in listener.pending() if m == "WATCHDOG=1"]
        assert len(pings) >= 2, f"{len(pings)} pings in 3.5 s while the clock was held"
    finally:
        await gateway.stop()
