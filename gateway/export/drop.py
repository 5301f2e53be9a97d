"""The daily drop file: vendor- and date-based names, never a half file.

EnergyCAP's interval-data import guide (docs/reference/export-formats.md): "the data provider
should supply files with unique vendor- and date-based names. For example, an interval data
file [...] containing data for 04/06/2004 could be named 'gss_20040406.csv'. If multiple files
arrive for the same day, a suffix, such as 'a', 'b', 'c', etc., could be added to the
filename." EnergyCAP's importer picks files up by pattern
(``imptsk ... -f "c:\\b-test\\*.csv"``), so a file must appear under its ``.csv`` name complete
or not at all:

1. the data goes into a file without a name (Linux ``O_TMPFILE``) or, where the file system
   cannot do that, into a hidden ``.{prefix}_{yyyyMMdd}.*.tmp`` file (never ``*.csv``);
2. it is flushed and fsynced;
3. it is *hard-linked* to the first free name ``{prefix}_{yyyyMMdd}{suffix}.csv``: a link fails
   when the name exists, so two writers can never take the same name and no existing file is
   ever replaced (``os.rename`` would overwrite);
4. the temporary name is removed and the directory fsynced, so the new name survives a power
   cut.

A process killed at any moment leaves either no ``.csv`` or a complete one (with ``O_TMPFILE``
nothing at all; otherwise at worst a hidden ``.tmp`` file). A ``write`` that raises leaves
nothing. On a file system without hard links (some network shares) step 3 falls back to a
rename after checking the name is free, which is only safe with a single writer.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TextIO

__all__ = ["drop_file", "suffixes"]

MAX_FILES_PER_DAY = 26 + 26 * 26  # a..z then aa..zz: far more than daily runs and re-runs
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


def suffixes() -> Iterator[str]:
    """``""``, then ``a`` ... ``z``, then ``aa`` ... ``zz`` (the guide's 'a', 'b', 'c', etc.)."""
    yield ""
    letters = "abcdefghijklmnopqrstuvwxyz"
    for length in (1, 2):
        for combination in itertools.product(letters, repeat=length):
            yield "".join(combination)


def drop_file(directory: Path, prefix: str, day: date, write: Callable[[TextIO], object]) -> Path:
    """Write ``{prefix}_{yyyyMMdd}.csv`` (or ``...a.csv``, ``...b.csv``) atomically; its path.

    ``write`` receives the open text file (UTF-8, ``\\n`` line ends as written) and may raise:
    then no file is left behind and the exception propagates.
    """
    stem = f"{prefix}_{day:%Y%m%d}"
    if not prefix or os.sep in prefix or (os.altsep and os.altsep in prefix):
        raise ValueError(f"drop file prefix {prefix!r} must be a plain, non-empty name")
    directory = Path(directory)
    fd, temp = _open_temporary(directory, stem)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
            path = _publish(directory, stem, out.fileno(), temp)
    finally:
        if temp is not None:  # gone already when the no-hard-links fallback renamed it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    _fsync_directory(directory)
    return path


def _open_temporary(directory: Path, stem: str) -> tuple[int, Path | None]:
    """An open file for the data: unnamed when the OS allows (None), else a hidden temp path."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag and Path("/proc/self/fd").is_dir():
        try:
            return os.open(directory, flag | os.O_WRONLY, 0o644), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=directory)
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from the importer's account
    return fd, Path(name)


def _publish(directory: Path, stem: str, fd: int, temp: Path | None) -> Path:
    """Link the finished file to the first free name; never replaces an existing file."""
    if temp is None:
        # An O_TMPFILE file is linked through /proc/self/fd/N. CPython calls linkat() with
        # AT_SYMLINK_FOLLOW only when a dir fd is given (plain link() would try to link the
        # /proc symlink itself and fail with EXDEV), hence src_dir_fd.
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            return _link_free_name(directory, stem, str(fd), proc)
        finally:
            os.close(proc)
    return _link_free_name(directory, stem, temp, None)


def _link_free_name(directory: Path, stem: str, source: str | Path, proc: int | None) -> Path:
    for suffix in itertools.islice(suffixes(), MAX_FILES_PER_DAY + 1):
        path = directory / f"{stem}{suffix}.csv"
        try:
            os.link(source, path, src_dir_fd=proc)
        except FileExistsError:
            continue
        except OSError as exc:
            if proc is not None or exc.errno not in _NO_LINKS:
                raise
            if path.exists():  # no hard links here: check-then-rename, single writer only
                continue
            os.rename(source, path)
        return path
    raise FileExistsError(f"{directory / stem}*.csv: every suffix up to 'zz' is taken")


def _fsync_directory(directory: Path) -> None:
    """Make the new name durable (a rename or link is only in the directory's metadata)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
