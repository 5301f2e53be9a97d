"""The functional core: demand rules, units and time values. Pure, synchronous, stdlib only.

Nothing here reads a clock, touches a file or a socket, or logs: it is fed timestamped events
and asked for readings, so a test can replay a year in seconds.
"""

from gateway.core.checksum import ChannelVerdict, Ledger, judge, ledgers
from gateway.core.demand import (
    Channel,
    ChannelRules,
    ChannelState,
    DemandError,
    Period,
    Reading,
    ResetOutcome,
    TermState,
    Totals,
)
from gateway.core.engine import ChannelReading, Engine, ResetAttempt, Resumed, Saved
from gateway.core.intervals import IntervalLog, IntervalMark, IntervalRecord
from gateway.core.schedule import ResetSchedule
from gateway.core.timeline import (
    Instant,
    Span,
    TimeSyntaxError,
    format_duration,
    format_instant,
    parse_duration,
    parse_instant,
)
from gateway.core.units import UNITS, Unit

__all__ = [
    "UNITS",
    "Channel",
    "ChannelReading",
    "ChannelRules",
    "ChannelState",
    "ChannelVerdict",
    "DemandError",
    "Engine",
    "Instant",
    "IntervalLog",
    "IntervalMark",
    "IntervalRecord",
    "Ledger",
    "Period",
    "Reading",
    "ResetAttempt",
    "ResetOutcome",
    "ResetSchedule",
    "Resumed",
    "Saved",
    "Span",
    "TermState",
    "TimeSyntaxError",
    "Totals",
    "Unit",
    "format_duration",
    "format_instant",
    "judge",
    "ledgers",
    "parse_duration",
    "parse_instant",
]
