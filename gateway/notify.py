"""systemd's notification protocol (sd_notify) in a few lines, with no dependency.

Under ``Type=notify`` systemd passes the path of a datagram socket in ``NOTIFY_SOCKET`` and
waits for ``READY=1`` before it calls the service started; ``WatchdogSec=`` adds
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``), and the service must send ``WATCHDOG=1`` within that
time or be killed and restarted. Each message is one datagram of ``KEY=VALUE`` lines on an
``AF_UNIX``/``SOCK_DGRAM`` socket (man sd_notify). ``NOTIFY_SOCKET`` is a file system path or,
starting with ``@``, a Linux abstract socket name.

Without ``NOTIFY_SOCKET`` (a terminal, a test, another supervisor) every call does nothing.
A failed send is logged once (``notify_failed``) and never raised: telling systemd is never
worth stopping the gateway over.

Reload: the unit reloads with ``ExecReload=/bin/kill -HUP $MAINPID`` under ``Type=notify``
(systemd 252, Debian 12, has no ``Type=notify-reload``). The gateway still sends
``RELOADING=1`` with ``MONOTONIC_USEC=`` when it begins a reload and ``READY=1`` when it has
finished (applied or refused), which is the protocol ``Type=notify-reload`` (systemd 253+)
expects, so ``systemctl status`` shows "reloading" while it lasts on both.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

from gateway.logging import get_logger

log = get_logger("notify")


class Notifier:
    """A client of the service manager's notification socket (``NOTIFY_SOCKET``).

    ``environ`` defaults to ``os.environ`` and is read once, here; ``pid`` (default: this
    process) is compared with ``WATCHDOG_PID``; ``clock`` paces ``watchdog``.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self.socket_name = env.get("NOTIFY_SOCKET", "")
        self.address = _address(self.socket_name)
        owner = os.getpid() if pid is None else pid
        self.watchdog_usec = _watchdog_usec(env, owner) if self.address is not None else None
        self._clock = clock
        self._last_ping: float | None = None
        self._failing = False

    @classmethod
    def disabled(cls) -> Notifier:
        """A notifier that never sends anything, whatever the environment says."""
        return cls({})

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (``NOTIFY_SOCKET`` is set and usable)."""
        return self.address is not None

    # -- the messages ---------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is complete; optionally with a ``STATUS=``."""
        return self.notify("READY=1", *_status(status))

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=``: a reload begins; ``ready`` must follow."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutting down; optionally with a ``STATUS=``."""
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: the one line ``systemctl status`` shows (newlines become spaces)."""
        return self.notify(*_status(text))

    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1`` (half of ``WatchdogSec=``), or None if unasked.

        None when there is no notification socket, no (or a zero) ``WATCHDOG_USEC``, or a
        ``WATCHDOG_PID`` naming another process (the watchdog is for the main process only).
        """
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def watchdog(self) -> bool:
        """``WATCHDOG=1`` if ``watchdog_interval`` has passed since the last one, else nothing.

        Cheap to call far more often (every tick of the main loop): between the sends it
        only reads the clock. Returns whether a datagram was sent.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < interval:
            return False
        sent = self.notify("WATCHDOG=1")
        if sent:
            self._last_ping = now
        return sent

    # -- the wire -------------------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; whether it was sent (never raises)."""
        if self.address is None or not assignments:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            # A socket per message, as libsystemd does: nothing to go stale when the manager
            # re-executes. Non-blocking: a full queue drops the message, never stalls the loop.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except Exception as exc:  # a vanished socket, a full queue: log once, keep running
            if not self._failing:
                self._failing = True
                log.warning("notify_failed", socket=self.socket_name, error=repr(exc))
            return False
        if self._failing:
            self._failing = False
            log.info("notify_recovered", socket=self.socket_name)
        return True


def status_line(
    *,
    channels: int,
    sources_up: Mapping[str, bool],
    bacnet: str | None = None,
    metrics: str | None = None,
) -> str:
    """The gateway in one line for ``STATUS=``.

    For example ``4 channels, 1/1 sources up, BACnet 127.0.0.1:47808, metrics 127.0.0.1:9842``.
    """
    up = sum(1 for is_up in sources_up.values() if is_up)
    parts = [
        f"{channels} channel{'' if channels == 1 else 's'}",
        f"{up}/{len(sources_up)} sources up",
        f"BACnet {bacnet}" if bacnet else "no BACnet",
    ]
    if metrics:
        parts.append(f"metrics {metrics}")
    return ", ".join(parts)


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.splitlines()),)


def _address(name: str) -> str | bytes | None:
    """The socket address ``NOTIFY_SOCKET`` names, or None (unset, or a kind not supported)."""
    if not name:
        return None
    if name.startswith("@"):  # a Linux abstract socket: a leading NUL byte, no file
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return name
    # e.g. "vsock:CID:PORT" (systemd 254+, for virtual machines): not used by service units
    log.warning("notify_socket_unsupported", socket=name)
    return None


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    """``WATCHDOG_USEC`` as a positive number, if the watchdog is meant for ``pid``."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        owner = int(env["WATCHDOG_PID"]) if env.get("WATCHDOG_PID") else pid
    except ValueError:
        return None
    if usec <= 0 or owner != pid:
        return None
    return usec
