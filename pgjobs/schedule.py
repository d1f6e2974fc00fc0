"""Cron schedules: which instants a schedule names, in its own time zone.

A :class:`CronSchedule` is a cron expression plus an IANA time zone. Expressions have six fields,
``second minute hour day month weekday`` (five fields mean ``second = 0``), or are one of the
macros ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``.
When both day and weekday are restricted (neither covers its whole range), a day matches if either
one does. Unlike Vixie cron, which looks at whether a field starts with ``*``, what counts is the
set of values: ``*/2`` restricts, ``1-31`` does not (docs/schedules.md). A range runs upwards and
does not wrap around (``22-2`` is refused); in the weekday field Sunday may end a range as 0 or 7.

The DST rule: a schedule fires once per wall-clock occurrence it names. A local time that does not
exist (the spring-forward gap) fires not at all; a local time that occurs twice (fall-back) fires
once, at its first occurrence. croniter does the calendar arithmetic on naive wall-clock times and
this module resolves each one to UTC, which is what makes the rule hold.

This module only computes; the instant a caller passes in comes from the database clock.
"""

from __future__ import annotations

import copy
import functools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from pgjobs.errors import ConfigError, CronError

MACROS: dict[str, str] = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
# The longest each month can be (February in a leap year), to reject days that never occur.
_MONTH_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_UTC_KEYS = frozenset({"UTC", "Etc/UTC"})


class _Field(NamedTuple):
    name: str
    low: int
    high: int  # highest value a user may write (weekday: 7, an alias of 0)
    cycle_high: int  # highest distinct value (weekday: 6); ranges wrap past it
    names: dict[str, int]


def _names(words: tuple[str, ...], first: int) -> dict[str, int]:
    return {word[:3].upper(): first + i for i, word in enumerate(words)}


_FIELDS = (
    _Field("second", 0, 59, 59, {}),
    _Field("minute", 0, 59, 59, {}),
    _Field("hour", 0, 23, 23, {}),
    _Field("day", 1, 31, 31, {}),
    _Field("month", 1, 12, 12, _names(_MONTHS, 1)),
    _Field("weekday", 0, 7, 6, _names(_WEEKDAYS, 0)),
)
_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY = range(6)


class _FieldError(Exception):
    def __init__(self, part: str, reason: str) -> None:
        super().__init__(reason)
        self.part = part
        self.reason = reason


def _value(spec: _Field, text: str, whole: str) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
        if not spec.low <= value <= spec.high:
            raise _FieldError(text, f"is out of range {spec.low}-{spec.high}")
        return value
    if text.upper() in spec.names:
        return spec.names[text.upper()]
    kinds = "a number, range or name" if spec.names else "a number or range"
    raise _FieldError(whole, f"is not {kinds}")


def _expand_item(spec: _Field, item: str) -> list[int]:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        max_step = spec.high - spec.low
        if not (step_text.isascii() and step_text.isdigit()) or not 1 <= int(step_text) <= max_step:
            raise _FieldError(item, f"has step '{step_text}'; the step must be 1-{max_step}")
        step = int(step_text)
    if base == "*":
        first, last = spec.low, spec.cycle_high
    elif "-" in base:
        first_text, _, last_text = base.partition("-")
        first, last = _value(spec, first_text, item), _value(spec, last_text, item)
        if first > last and spec.high > spec.cycle_high:
            # Weekday: Sunday is 0 at a range's start and 7 at its end ('SAT-SUN', '7-1').
            if last == spec.low:
                last = spec.high
            elif first == spec.high:
                first = spec.low
        if first > last:
            raise _FieldError(item, _reversed_range(spec, first_text, last_text, slash))
    else:
        first = _value(spec, base, item)
        last = spec.cycle_high if slash else first
        if first > last:  # weekday '7/2': from Sunday, 0
            first = spec.low
    # Weekday 7 is Sunday, 0; elsewhere high == cycle_high and this changes nothing.
    return [v % (spec.cycle_high + 1) for v in range(first, last + 1, step)]


def _reversed_range(spec: _Field, first_text: str, last_text: str, stepped: str) -> str:
    """Why a range that runs backwards is refused, and how to write what it probably meant."""
    reason = "is a reversed range: a range runs from low to high and does not wrap around"
    if stepped:
        return f"{reason}; split it into two ranges, each with its own step"
    by_name = {v: k for k, v in spec.names.items()} if first_text.isalpha() else {}
    top = by_name.get(spec.cycle_high, str(spec.cycle_high))
    bottom = by_name.get(spec.low, str(spec.low))
    upper = first_text if first_text.upper() in (top, str(spec.high)) else f"{first_text}-{top}"
    lower = last_text if last_text.upper() == bottom else f"{bottom}-{last_text}"
    return f"{reason}; to span the end of the field write '{upper},{lower}'"


def _expand_field(spec: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _FieldError(text, "has an empty list item")
        values.update(_expand_item(spec, item))
    return frozenset(values)


def _is_full(index: int, values: frozenset[int]) -> bool:
    spec = _FIELDS[index]
    return len(values) == spec.cycle_high - spec.low + 1


class _Parsed(NamedTuple):
    values: tuple[frozenset[int], ...]  # what each field allows (weekday 7 folded into 0)

    def canonical(self) -> str:
        """The expression as plain value lists, so croniter sees exactly what was validated."""
        return " ".join(
            "*" if _is_full(i, v) else ",".join(map(str, sorted(v)))
            for i, v in enumerate(self.values)
        )


def _parse(expression: object) -> _Parsed:
    if not isinstance(expression, str):
        raise CronError(
            f"invalid cron {expression!r}: expected a string, got {type(expression).__name__}"
        )

    def fail(reason: str) -> CronError:
        return CronError(f"invalid cron '{expression}': {reason}")

    text = expression.strip()
    if not text:
        raise fail("the expression is empty")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise fail(f"unknown macro '{text}' (known: {', '.join(MACROS)})")
        text = MACROS[text.lower()]
    texts = text.split()
    if len(texts) == 5:
        texts.insert(0, "0")
    elif len(texts) != 6:
        raise fail(f"expected 5 or 6 fields, got {len(texts)}")
    values = []
    for spec, field_text in zip(_FIELDS, texts, strict=True):
        try:
            values.append(_expand_field(spec, field_text))
        except _FieldError as err:
            where = f"{spec.name} field '{field_text}'"
            if err.part != field_text:
                where += f": '{err.part}'"
            raise fail(f"{where} {err.reason}") from None
    days, months = values[_DAY], values[_MONTH]
    if _is_full(_WEEKDAY, values[_WEEKDAY]) and min(days) > max(
        _MONTH_MAX_DAYS[m - 1] for m in months
    ):
        raise fail(f"day field '{texts[_DAY]}' never occurs in month field '{texts[_MONTH]}'")
    return _Parsed(tuple(values))


# Names that resolve on a host but do not name one zone everywhere: the host's own zone
# (Debian links 'localtime' to /etc/localtime), the default rules of POSIX TZ strings, and tzdata's
# placeholder for "zone not set". 'posix/' and 'right/' are copies of the whole database, 'right/'
# counting leap seconds (27 s off the database's clock).
_HOST_ZONES = {
    "localtime": "it is the host's own zone, so workers on hosts in different zones would fire "
    "at different instants",
    "posixrules": "it is the host's rule for POSIX TZ strings, not a zone",
    "Factory": "it is tzdata's placeholder for a zone that was never set",
}
_COPY_PREFIXES = {
    "posix/": "a copy of",
    "right/": "a leap-second variant of",
}


@functools.cache
def _canonical_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - _HOST_ZONES.keys()) | {"UTC"}


def validate_timezone(name: str) -> ZoneInfo:
    """Return the IANA zone called ``name``; raise :class:`ConfigError` if there is none.

    Only names of the IANA database are accepted (``Europe/Berlin``, ``UTC``, also its links
    such as ``US/Eastern``): names that resolve to something different on each host
    (``localtime``, ``posixrules``, ``Factory``, ``posix/...``, ``right/...``) are refused, so
    every replica computes the same instants.
    """
    if not isinstance(name, str):
        raise ConfigError(f"unknown timezone {name!r}: expected an IANA name such as 'UTC'")
    example = "e.g. 'UTC', 'Europe/Berlin', 'America/New_York'"
    if name in _HOST_ZONES:
        raise ConfigError(
            f"timezone '{name}' is not allowed: {_HOST_ZONES[name]}; name the IANA zone ({example})"
        )
    for prefix, kind in _COPY_PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            raise ConfigError(
                f"timezone '{name}' is not allowed: it is {kind} '{name[len(prefix) :]}' that "
                f"exists on some hosts only; write '{name[len(prefix) :]}'"
            )
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        zone = None
    if zone is None or name not in _canonical_zones():
        raise ConfigError(f"unknown timezone '{name}': not an IANA time zone name ({example})")
    return zone


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression in an IANA time zone (default UTC).

    Constructing one validates it: an invalid expression raises :class:`CronError` naming the field
    and the reason, an unknown zone raises :class:`ConfigError`. Instances are immutable, hashable,
    compare by ``(expression, timezone)``, and are safe to share between threads. Every fire time
    returned is an aware UTC datetime and obeys the DST rule in this module's docstring.
    """

    expression: str
    timezone: str = "UTC"
    _parsed: _Parsed = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _template: Any = field(init=False, repr=False, compare=False)  # croniter, copied per call

    def __post_init__(self) -> None:
        parsed = _parse(self.expression)
        zone = validate_timezone(self.timezone)
        try:
            template = croniter(parsed.canonical(), datetime(2000, 1, 1), second_at_beginning=True)
        except CroniterError as err:  # our validation should have caught it first
            raise CronError(f"invalid cron '{self.expression}': {err}") from None
        object.__setattr__(self, "_parsed", parsed)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_template", template)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """Validate ``expression`` in ``timezone`` and return the schedule.

        Raises :class:`CronError` (which field is wrong and why) or :class:`ConfigError` (unknown
        timezone).
        """
        return cls(expression, timezone)

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (an aware datetime), as aware UTC."""
        return next(self._fires_after(after))

    def fire_times(self, after: datetime, n: int) -> list[datetime]:
        """The next ``n`` fire times strictly after ``after``: aware UTC, strictly increasing."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        fires = self._fires_after(after)
        return [next(fires) for _ in range(n)]

    def fire_times_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Fire times ``t`` with ``after < t <= until``: the earliest ``limit`` of them, aware UTC,
        strictly increasing."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        after, until = _as_utc(after, "after"), _as_utc(until, "until")
        found: list[datetime] = []
        if limit == 0 or until <= after:
            return found
        for fire in self._fires_after(after):
            if fire > until:
                break
            found.append(fire)
            if len(found) == limit:
                break
        return found

    def previous_fire_times(self, until: datetime, n: int) -> list[datetime]:
        """The latest ``n`` fire times at or before ``until``: aware UTC, strictly increasing.

        Fewer than ``n`` only when the search runs out: no fire time in the 50 years before the
        earliest one found, or the start of the calendar.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        until = _as_utc(until, "until")
        found: list[datetime] = []
        for fire in self._fires_until(until):
            if len(found) == n:
                break
            found.append(fire)
        return found[::-1]

    def describe(self) -> str:
        """A short English description such as 'every 15 minutes' or 'daily at 02:30'.

        Best effort: an expression with no simple phrase is returned as written. A zone other than
        UTC is appended in parentheses.
        """
        text = _describe(self._parsed) or self.expression.strip()
        return text if self._zone.key in _UTC_KEYS else f"{text} ({self.timezone})"

    def _fires_after(self, after: datetime) -> Iterator[datetime]:
        after = _as_utc(after, "after")
        walls = copy.copy(self._template)  # a private cursor: the template is shared
        if self._zone.key in _UTC_KEYS:
            walls.set_current(after.replace(tzinfo=None))
            while True:
                yield walls.get_next(datetime).replace(tzinfo=UTC)
        # Walk naive wall-clock times from the local wall time of `after`. Resolving each with
        # fold=0 is monotonic, so nothing before that point can lie after `after`; the check
        # below drops first occurrences that precede an `after` in a repeated hour's second pass.
        walls.set_current(after.astimezone(self._zone).replace(tzinfo=None))
        while True:
            fire = self._resolve(walls.get_next(datetime))
            if fire is not None and fire > after:
                yield fire

    def _fires_until(self, until: datetime) -> Iterator[datetime]:
        """Fire times at or before ``until`` (UTC), latest first."""
        walls = copy.copy(self._template)
        wall = until.astimezone(self._zone)
        # If `until` is in the second pass of a repeated hour, wall times up to one shift ahead
        # of its own first occurred before it: start the backwards walk past them.
        first, second = wall.replace(fold=0).utcoffset(), wall.replace(fold=1).utcoffset()
        shift = first - second if first is not None and second is not None else timedelta(0)
        start = wall.replace(tzinfo=None, microsecond=0) + max(shift, timedelta(0))
        walls.set_current(start + timedelta(seconds=1))  # croniter steps back strictly before
        while True:
            try:
                fire = self._resolve(walls.get_prev(datetime))
            except (CroniterBadDateError, OverflowError):  # none in 50 years, or before year 1
                return
            if fire is not None and fire <= until:
                yield fire

    def _resolve(self, wall: datetime) -> datetime | None:
        """The UTC instant of a local wall time: its first occurrence, or None if it is skipped."""
        instant = wall.replace(tzinfo=self._zone).astimezone(UTC)  # fold=0: first occurrence
        if instant.astimezone(self._zone).replace(tzinfo=None) != wall:
            return None  # in a spring-forward gap, the wall time does not exist
        return instant


def _as_utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC. Converting first matters: Python compares two datetimes in the same
    zone by wall time, ignoring ``fold``, which is wrong inside a repeated hour."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _step_of(values: frozenset[int], size: int) -> int | None:
    """N if ``values`` is exactly ``*/N`` over 0..size-1 with N dividing size, else None."""
    step = min((v for v in values if v), default=0)
    if step < 2 or size % step or values != frozenset(range(0, size, step)):
        return None
    return step


def _weekday_phrase(weekdays: frozenset[int]) -> str:
    days = sorted((d + 6) % 7 for d in weekdays)  # Monday first, so weekends read Sat, Sun
    names = [_WEEKDAYS[(d + 1) % 7] for d in days]
    if len(days) >= 3 and days == list(range(days[0], days[-1] + 1)):
        return f"{names[0]} to {names[-1]}"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _describe(parsed: _Parsed) -> str | None:
    second, minute, hour, day, month, weekday = parsed.values
    full = [_is_full(i, v) for i, v in enumerate(parsed.values)]
    every_day = full[_DAY] and full[_MONTH] and full[_WEEKDAY]
    if every_day and full[_HOUR] and full[_MINUTE]:
        if full[_SECOND]:
            return "every second"
        if (n := _step_of(second, 60)) is not None:
            return f"every {n} seconds"
        return "every minute" if second == {0} else None
    if every_day and full[_HOUR] and second == {0}:
        if minute == {0}:
            return "every hour"
        if (n := _step_of(minute, 60)) is not None:
            return f"every {n} minutes"
        return f"every hour at minute {min(minute)}" if len(minute) == 1 else None
    if every_day and second == {0} and len(minute) == 1 and (n := _step_of(hour, 24)):
        past = min(minute)
        return f"every {n} hours" + (f" at minute {past}" if past else "")
    if len(second) != 1 or len(minute) != 1 or len(hour) != 1:
        return None
    at = f"{min(hour):02d}:{min(minute):02d}" + (f":{min(second):02d}" if min(second) else "")
    if every_day:
        return f"daily at {at}"
    if full[_DAY] and full[_MONTH]:
        return f"every {_weekday_phrase(weekday)} at {at}"
    if len(day) == 1 and full[_WEEKDAY]:
        if full[_MONTH]:
            return f"monthly on day {min(day)} at {at}"
        if len(month) == 1:
            return f"yearly on {_MONTHS[min(month) - 1]} {min(day)} at {at}"
    return None
