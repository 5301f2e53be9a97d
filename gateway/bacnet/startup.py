"""Start-up checks and plumbing of the BACnet server.

The bacpypes3 behaviour they answer is in docs/design/bacpypes3.md, "Start-up failures bacpypes3
hides", "Building the application" and "Logging".

- ``probe``: bacpypes3 binds with SO_REUSEPORT, so a second gateway on the same address:port
  would start silently and share the traffic; a plain socket bound *without* SO_REUSEPORT fails
  with EADDRINUSE instead. EADDRNOTAVAIL means the address is not on this host, where bacpypes3
  would retry the bind once a second forever. Either way the gateway refuses to start with a
  message for a person.
- ``foreign_device``: ``bacnet.foreign_device`` as the BBMD address and TTL bacpypes3 takes.
- ``route_stack_logging``: bacpypes3's standard-library log records become structured lines.
- ``ip_settings``: the default gateway and DNS servers the network-port object reports
  (ip-default-gateway, ip-dns-server: 12.56), which bacpypes3 leaves unset, read from the
  kernel's routing table and resolv.conf when the port is bound.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from pathlib import Path
from typing import Any

from gateway.logging import get_logger

log = get_logger("bacnet")

STACK_LOG_BURST = 20  # bacpypes3 warnings logged per minute; the rest are counted


class BacnetError(Exception):
    """The BACnet server cannot start; the message says what to do, for a person."""


def probe(host: str, port: int) -> None:
    """Refuse an address another process holds or this host does not have (module docstring)."""
    where = f"{host}:{port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                message = (
                    f"BACnet/IP {where} is in use: another process holds it (another gateway "
                    "or BACnet application); stop it or set another bacnet.port"
                )
            elif exc.errno == errno.EADDRNOTAVAIL:
                message = (
                    f"BACnet/IP address {host} is not an address of this host: "
                    "set bacnet.address to one of its interface addresses"
                )
            elif exc.errno == errno.EACCES:
                message = f"BACnet/IP {where}: permission denied to bind this port"
            else:
                message = f"BACnet/IP {where} cannot be bound: {exc.strerror or exc}"
            raise BacnetError(message) from None


def foreign_device(foreign: Any) -> tuple[str, int]:
    """(``HOST:PORT`` of the BBMD, TTL in seconds) from ``bacnet.foreign_device``."""
    ttl = int(getattr(foreign, "ttl", 300))
    host = getattr(foreign, "host", None)
    if host is not None:
        return f"{host}:{getattr(foreign, 'port', 47808)}", ttl
    return str(foreign.bbmd), ttl


class _StackLog(logging.Handler):
    """bacpypes3 logs through the standard library, with tracebacks (a malformed packet, a
    vanished COV subscriber): each becomes one structured line without a traceback, at most
    ``STACK_LOG_BURST`` per minute so that a flood of junk datagrams cannot flood the log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._window = 0.0
        self._logged = 0
        self._suppressed = 0

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            if record.created - self._window >= 60.0:
                if self._suppressed:
                    log.warning("bacnet_stack_errors_suppressed", count=self._suppressed)
                self._window, self._logged, self._suppressed = record.created, 0, 0
            if self._logged >= STACK_LOG_BURST:
                self._suppressed += 1
                return
            self._logged += 1
            log.warning("bacnet_stack_error", logger=record.name, message=record.getMessage())


def route_stack_logging() -> None:
    """Send bacpypes3's warnings and errors to the gateway's log (once per process)."""
    stack = logging.getLogger("bacpypes3")
    if not any(isinstance(h, _StackLog) for h in stack.handlers):
        stack.addHandler(_StackLog())
        stack.propagate = False


ROUTES = Path("/proc/net/route")
RESOLV_CONF = Path("/etc/resolv.conf")


def ip_settings(
    host: str, routes: Path = ROUTES, resolv_conf: Path = RESOLV_CONF
) -> tuple[str, list[str]]:
    """The IPv4 default gateway ("0.0.0.0" when there is none) and DNS servers of a port bound
    to ``host``. A loopback port has neither. Unreadable files count as none: they describe the
    host, and their absence must not keep the gateway from counting."""
    if ipaddress.IPv4Address(host).is_loopback:
        return "0.0.0.0", []
    with contextlib.suppress(OSError):
        return default_gateway(routes.read_text()), dns_servers(resolv_conf.read_text())
    return "0.0.0.0", []


def default_gateway(route_table: str) -> str:
    """The gateway of the first default route in /proc/net/route text (little-endian hex)."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 0x2:
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return "0.0.0.0"


def dns_servers(resolv_conf: str) -> list[str]:
    """The IPv4 nameservers of resolv.conf text, in order."""
    found = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            with contextlib.suppress(ValueError):
                found.append(str(ipaddress.IPv4Address(fields[1])))
    return found
