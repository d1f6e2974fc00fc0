"""Limits on how fast and how many runs start: rate limits and concurrency keys.

A rate limit is written ``"<count>/<unit>"``: ``"100/m"`` is at most 100 runs a minute, ``"20/s"``
20 a second, ``"5/h"`` 5 an hour (``sec``, ``min``, ``hour`` and their plurals are accepted too).
It is a token bucket held in the database (``rate_buckets``): it fills at ``count / period``
tokens a second up to ``count``, and every run a claim starts takes one token, whichever worker
claims it. A full bucket lets ``count`` runs start at once; after that they start at the rate.

A concurrency key groups the runs of a job for its ``max_concurrency``: a payload field's name
(``"tenant"``), or a callable of the payload. The key of a run is computed when it is enqueued
and stored on the run (``runs.concurrency_key``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgjobs.errors import ConfigError

_UNITS: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}

_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*([a-z]+?)s?\s*", re.IGNORECASE)

MAX_KEY_BYTES = 512
"""Longest concurrency key, in UTF-8 bytes (it is part of a B-tree key, like a ``dedup_key``)."""

ConcurrencyKey = str | Callable[[Any], Any]
"""A payload field's name, or a callable that returns the key of a payload."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` runs per ``period`` seconds: a bucket of ``count`` tokens that fills at ``rate``."""

    count: int
    period: float
    text: str

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.count / self.period

    @property
    def burst(self) -> float:
        """The bucket's size: how many runs may start at once after a quiet spell."""
        return float(self.count)

    def __str__(self) -> str:
        return self.text


def parse_rate_limit(value: object) -> RateLimit:
    """The :class:`RateLimit` that ``value`` (``"100/m"``, ``"20/s"``, ``"5/h"``) describes.

    Raises :class:`ConfigError` with one line that says what is accepted.
    """
    if isinstance(value, RateLimit):
        return value
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or int(match.group(1)) < 1:
        raise ConfigError(
            f"rate limit must look like '100/m' (a positive count per s, m or h), got {value!r:.80}"
        )
    count = int(match.group(1))
    short = {1.0: "s", 60.0: "m", 3600.0: "h"}[_UNITS[unit]]
    return RateLimit(count, _UNITS[unit], f"{count}/{short}")


def concurrency_key_label(key: ConcurrencyKey | None) -> str | None:
    """How ``jobs.concurrency_key`` records a job's key: the payload field's name, or
    ``callable:<module>.<name>`` for a callable (which only Python can compute at enqueue)."""
    if key is None:
        return None
    if isinstance(key, str):
        return key
    name = getattr(key, "__qualname__", None) or type(key).__qualname__
    return f"callable:{getattr(key, '__module__', '?')}.{name}"


def concurrency_key_of(key: ConcurrencyKey, payload: Any) -> str | None:
    """The key of a run with ``payload``: the field's value (None when the payload has no such
    field), or the callable's result (None stays None); a string as is, anything else as JSON."""
    if isinstance(key, str):
        if not isinstance(payload, dict) or payload.get(key) is None:
            return None
        value = payload[key]
    else:
        value = key(payload)
        if value is None:
            return None
    # As PostgreSQL's ``payload ->> field`` gives it: a string as is, anything else as JSON.
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ConfigError(f"concurrency key longer than {MAX_KEY_BYTES} bytes")
    return text
