"""How the state store encodes rules and channel state as rows, and reads saved values back.

Exactness lives here: floats stay 8-byte doubles (never ints, never NaN), the window's counts
become JSON text, a saved baseline comes back as the int or float it was. Separate so that the
checkpoint and the reset audit, which both write channel rows, share one encoding.
"""

from __future__ import annotations

import json
import math
from typing import Any

from gateway.core import ChannelRules, ChannelState
from gateway.core.demand import TermState
from gateway.store_schema import StoreError

_STATE_FIELDS = ChannelState._fields
# the float fields (annotations are strings: demand.py uses `from __future__ import annotations`)
_STATE_REALS = frozenset(
    name for name, kind in ChannelState.__annotations__.items() if "float" in str(kind)
)
# positions in a state row, for the checkpoint's hot path (2,000 rows a second)
_REAL_AT = tuple(i for i, name in enumerate(_STATE_FIELDS) if name in _STATE_REALS)
_WINDOW_AT = _STATE_FIELDS.index("window_intervals")
_TERMS_AT = _STATE_FIELDS.index("more_terms")
_RULES_COLUMNS = (
    "unit, scale_factor, window_us, slide_us, initial_reading, reset_lockout_us, terms, audit_from"
)

_CHANNEL_UPSERT = (
    f"INSERT INTO channels (id, {_RULES_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
    " (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'resets'))"
    " ON CONFLICT (id) DO UPDATE SET unit = excluded.unit,"
    " scale_factor = excluded.scale_factor, window_us = excluded.window_us,"
    " slide_us = excluded.slide_us, initial_reading = excluded.initial_reading,"
    " reset_lockout_us = excluded.reset_lockout_us, terms = excluded.terms"
)
_STATE_REPLACE = (
    f"INSERT OR REPLACE INTO channel_state (channel, {', '.join(_STATE_FIELDS)})"
    f" VALUES (?{', ?' * len(_STATE_FIELDS)})"
)


def _rules_row(rules: ChannelRules) -> tuple:
    """The rules' column values (ChannelRules holds no NaN); a virtual channel's terms as
    JSON."""
    return (
        rules.unit.name,
        float(rules.scale_factor),
        rules.window,
        rules.slide,
        float(rules.initial_reading),
        rules.reset_lockout,
        json.dumps([list(term) for term in rules.terms]) if rules.terms else "[]",
    )


def _rules_terms(text: str) -> tuple[tuple[str, int], ...]:
    rows = json.loads(text)
    if not isinstance(rows, list) or not all(
        isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and r[1] in (1, -1)
        for r in rows
    ):
        raise ValueError("terms is not a list of [channel, +1 or -1]")
    return tuple((channel, sign) for channel, sign in rows)


def _state_row(state: ChannelState) -> tuple:
    """The state's column values; floats as floats (never ints), intervals as JSON.

    On the checkpoint's hot path (2,000 rows a second): the NaN check is inline."""
    values: list[object] = list(state)
    for at in _REAL_AT:
        raw: Any = state[at]  # one of the float fields (by _REAL_AT)
        if raw is not None:  # None stays NULL
            value = float(raw)
            if value != value:  # NaN: SQLite would store NULL; refuse rather than change it
                raise ValueError(f"{_STATE_FIELDS[at]} is NaN and cannot be saved")
            values[at] = value
    # the same text as json.dumps of the list of ints, without its per-call overhead
    values[_WINDOW_AT] = "[" + ", ".join([str(int(c)) for c in state.window_intervals]) + "]"
    values[_TERMS_AT] = _terms_text(state.more_terms) if state.more_terms else "[]"
    return tuple(values)


def _terms_text(terms: tuple[TermState, ...]) -> str:
    """A virtual channel's further terms as JSON; floats as repr, exact both ways."""
    rows = []
    for term in terms:
        factor = _float("a term's scale_factor", term.scale_factor)
        rows.append(
            [
                factor,
                term.pulses_total,
                term.pulses_at_base,
                list(term.window_intervals),
                term.open_interval,
                term.offline_since,
            ]
        )
    return json.dumps(rows, allow_nan=False)


def _terms(text: str) -> tuple[TermState, ...]:
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError("more_terms is not a list")
    terms = []
    for row in rows:
        factor, total, at_base, window, open_interval, offline_since = row
        if type(factor) is not float or not all(type(c) is int for c in window):
            raise ValueError("more_terms holds a malformed term")
        terms.append(TermState(factor, total, at_base, tuple(window), open_interval, offline_since))
    return tuple(terms)


def _float(name: str, value: float) -> float:
    value = float(value)
    if math.isnan(value):  # SQLite would store NULL: refuse rather than change the value
        raise ValueError(f"{name} is NaN and cannot be saved")
    return value


def _number(channel: str, text: str) -> int | float:
    """A saved baseline: an int (a counter) or a float (a meter total), exactly as written."""
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        raise StoreError(f"the saved baseline of channel {channel!r} is not a number") from None


def _intervals(text: str) -> tuple[int, ...]:
    counts = json.loads(text)
    if not isinstance(counts, list) or not all(type(c) is int for c in counts):
        raise ValueError("window_intervals is not a list of counts")
    return tuple(counts)
