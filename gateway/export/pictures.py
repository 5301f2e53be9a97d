"""EnergyCAP timestamp pictures ("the 'picture' (i.e. format) of the timestamp").

EnergyCAP's import wizard asks for the picture of the timestamp column and its interval-data
import guide (quoted in docs/reference/export-formats.md) warns:
"Exactly follow the pattern of the examples provided! Be sure to recognize that month is 'MM'
while minutes are 'mm'." The export writes timestamps with the same picture the energy manager
types into the wizard, so both sides agree by construction.

Tokens (a run of one letter is one token; anything else is copied as is):

======== ============================== =========================
token    writes                          example (2005-12-31 01:30)
======== ============================== =========================
``yyyy`` year, four digits              ``2005``
``yy``   year in the century, 2 digits  ``05``
``MM``   month, two digits              ``12``
``M``    month, no padding              ``12`` (``1`` in January)
``dd``   day, two digits                ``31``
``d``    day, no padding                ``31``
``HH``   hour 00-23, two digits         ``01``
``hh``   hour 00-23, two digits (!)     ``01``
``H``    hour 0-23, no padding          ``1``
``h``    hour 0-23, no padding          ``1``
``mm``   minutes, two digits            ``30``
``ss``   seconds, two digits            ``00``
``'x'``  the quoted text, as is         ``x``
======== ============================== =========================

``hh`` is a 24-hour hour, exactly like ``HH``. The guide's own examples use it that way:
"20051231 01:30 yyyyMMdd hh:mm" and "2005-12-31 0130 yyyy-MM-dd hhmm" have no AM/PM marker, and
a 12-hour hour without one would write 01:30 for both 01:30 and 13:30, merging two intervals.
For the same reason there is no AM/PM token: ``tt`` is an error, like every other letter that
is not in the table (a technician's typo must fail loudly, never write plausible garbage).
A field written twice (``mm/dd/yyyy HH:mm``: minutes where the month was meant) is an error too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Picture", "compile_picture", "parse_picture"]

# token -> (field, str.format replacement field). Argument 0 is the datetime, 1 is year % 100.
_TOKENS: dict[str, tuple[str, str]] = {
    "yyyy": ("year", "{0.year:04d}"),
    "yy": ("year", "{1:02d}"),
    "MM": ("month", "{0.month:02d}"),
    "M": ("month", "{0.month}"),
    "dd": ("day", "{0.day:02d}"),
    "d": ("day", "{0.day}"),
    "HH": ("hour", "{0.hour:02d}"),
    "hh": ("hour", "{0.hour:02d}"),  # 24-hour, see the module docstring
    "H": ("hour", "{0.hour}"),
    "h": ("hour", "{0.hour}"),
    "mm": ("minute", "{0.minute:02d}"),
    "ss": ("second", "{0.second:02d}"),
}
_HINTS = {
    "t": "there is no AM/PM: hours are always 24-hour (HH)",
    "m": "minutes are mm (two letters)",
    "s": "seconds are ss (two letters)",
    "y": "the year is yyyy or yy",
    "M": "the month is MM or M (month names are not supported)",
    "d": "the day is dd or d (day names are not supported)",
}
_LEXER = re.compile(r"'([^']*)'|([A-Za-z])\2*|'|[^A-Za-z']+")
DATE_FIELDS = frozenset({"year", "month", "day"})
TIME_FIELDS = frozenset({"hour", "minute", "second"})


@dataclass(frozen=True, slots=True)
class Picture:
    """A checked picture: what it writes and which fields of a date-time it shows."""

    text: str
    fields: frozenset[str]  # of year, month, day, hour, minute, second
    literal: str  # every character copied as is, concatenated (for delimiter checks)
    template: str  # a str.format template over (datetime, year % 100)

    def format(self, moment: datetime) -> str:
        """``moment`` (naive or aware: only its fields are read) written in this picture."""
        return self.template.format(moment, moment.year % 100)


def compile_picture(picture: str) -> Picture:
    """Check ``picture`` and compile it; ValueError names the first bad token and why."""
    if not picture:
        raise ValueError("empty timestamp picture: use one like MM/dd/yyyy HH:mm")
    parts: list[str] = []
    literal: list[str] = []
    seen: dict[str, str] = {}
    for match in _LEXER.finditer(picture):
        token, quoted, letter = match.group(), match.group(1), match.group(2)
        if letter is None:
            if token == "'":
                raise ValueError(
                    f"timestamp picture {picture!r}: unterminated quote at {match.start() + 1}"
                )
            text = token if quoted is None else quoted
            literal.append(text)
            parts.append(text.replace("{", "{{").replace("}", "}}"))
            continue
        if token not in _TOKENS:
            hint = _HINTS.get(token[0], "quote literal letters like 'T'")
            raise ValueError(
                f"timestamp picture {picture!r}: unknown token {token!r} at {match.start() + 1} "
                f"({hint}; known: {', '.join(_TOKENS)})"
            )
        field, replacement = _TOKENS[token]
        if field in seen:
            raise ValueError(
                f"timestamp picture {picture!r}: the {field} appears twice ({seen[field]} and "
                f"{token}); remember month is MM and minutes are mm"
            )
        seen[field] = token
        parts.append(replacement)
    return Picture(picture, frozenset(seen), "".join(literal), "".join(parts))


def parse_picture(picture: str) -> Callable[[datetime], str]:
    """A function writing a date-time in the EnergyCAP ``picture``; ValueError if it is bad.

    >>> parse_picture("MMddyy h:mm")(datetime(2005, 12, 31, 0, 0))
    '123105 0:00'
    """
    return compile_picture(picture).format
