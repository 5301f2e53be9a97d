"""Log lines that cannot be written are dropped, never raised into the code that logs."""

from __future__ import annotations

import errno
import io

from gateway.logging import LogStream


class Disk(io.StringIO):
    """A file whose writes fail with ``error`` while ``failing``."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error
        self.failing = False

    def write(self, text: str) -> int:
        if self.failing:
            raise self.error
        return super().write(text)


def test_a_full_disk_loses_the_lines_it_refused_and_keeps_the_next() -> None:
    disk = Disk(OSError(errno.ENOSPC, "No space left on device"))
    stream = LogStream(disk)
    print("before", file=stream, flush=True)
    disk.failing = True
    print("lost", file=stream, flush=True)  # no exception reaches the caller
    disk.failing = False
    print("after", file=stream, flush=True)
    assert disk.getvalue() == "before\nafter\n"
    assert stream.lost == 1 and not stream.broken


def test_a_closed_file_is_not_an_error_for_the_caller() -> None:
    closed = io.StringIO()
    closed.close()
    stream = LogStream(closed)
    print("nowhere", file=stream, flush=True)
    assert stream.lost == 1 and not stream.isatty()
