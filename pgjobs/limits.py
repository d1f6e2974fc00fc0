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

import inspect
import json
import re
from collections.abc import Callable, Mapping
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

_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*([a-z]+)\s*", re.IGNORECASE | re.ASCII)

MAX_KEY_BYTES = 512
"""Longest concurrency key, in UTF-8 bytes (it is part of a B-tree key, like a ``dedup_key``)."""

MAX_NAME_CHARS = 200
"""Longest name of a concurrency key's payload field, or of a queue in the profile."""

CALLABLE_PREFIX = "callable:"
"""How ``jobs.concurrency_key`` starts for a key that only the job's code can compute."""

ConcurrencyKey = str | Callable[[Any], Any]
"""A payload field's name, or a callable that returns the key of a payload."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` runs per ``period`` seconds: a bucket of ``count`` tokens that fills at
    ``rate``."""

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
    if unit not in _UNITS and unit.endswith("s") and len(unit) > 2:
        unit = unit[:-1]  # a word's plural ("mins", "hours"), but "ms" is not minutes
    if match is None or unit not in _UNITS or int(match.group(1)) < 1:
        raise ConfigError(
            f"rate_limit must look like '100/m' (a positive count per s, m or h), got {value!r:.80}"
        )
    count = int(match.group(1))
    short = {1.0: "s", 60.0: "m", 3600.0: "h"}[_UNITS[unit]]
    return RateLimit(count, _UNITS[unit], f"{count}/{short}")


def name_error(key: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``key`` (a payload field's or a queue's name), or None: it
    must be a non-empty string of at most :data:`MAX_NAME_CHARS` characters without NUL."""
    if not isinstance(value, str) or not value.strip():
        return f"{key} must be a non-empty string, got {value!r:.80}"
    if "\x00" in value:
        return f"{key} must not contain a NUL character"
    if len(value) > MAX_NAME_CHARS:
        return f"{key} must be at most {MAX_NAME_CHARS} characters, got {len(value)}"
    return None


def concurrency_key_error(value: object) -> str | None:
    """Why ``value`` is not a valid ``concurrency_key``, or None: a payload field's name (see
    :func:`name_error`, and not starting with ``callable:``), or a callable of one argument."""
    if isinstance(value, str):
        reason = name_error("concurrency_key", value)
        if reason is None and value.startswith(CALLABLE_PREFIX):
            reason = f"concurrency_key must not start with {CALLABLE_PREFIX!r}, got {value!r:.80}"
        return reason
    if not callable(value):
        return (
            "concurrency_key must be a payload field's name or a callable of the payload, "
            f"got {value!r:.80}"
        )
    try:
        inspect.signature(value).bind(None)
    except TypeError:
        return "concurrency_key must take one argument, the payload: key(payload)"
    except ValueError:  # some callables have no signature to check
        pass
    return None


def declared_concurrency_key(job: Any) -> Any:
    """The ``concurrency_key`` a job (class or instance) declares, as it was written: a function
    set on the class is a callable of the payload, not a method, whichever way it is read."""
    key = inspect.getattr_static(job, "concurrency_key", None)
    if isinstance(key, staticmethod):
        return key.__func__
    if isinstance(key, classmethod):
        return job.concurrency_key
    return key


def concurrency_key_label(key: ConcurrencyKey | None) -> str | None:
    """How ``jobs.concurrency_key`` records a job's key: the payload field's name, or
    ``callable:<module>.<name>`` for a callable (which only Python can compute at enqueue)."""
    if key is None:
        return None
    if isinstance(key, str):
        return key
    name = getattr(key, "__qualname__", None) or type(key).__qualname__
    return f"{CALLABLE_PREFIX}{getattr(key, '__module__', '?')}.{name}"


def concurrency_key_of(key: ConcurrencyKey, payload: Any) -> str | None:
    """The key of a run with ``payload``: the field's value (None when the payload has no such
    field), or the callable's result (None stays None); a string as is, anything else as JSON.

    Whatever the callable raises propagates. The key's size and characters are checked by
    whoever stores it (the enqueue API, against :data:`MAX_KEY_BYTES`)."""
    if isinstance(key, str):
        if not isinstance(payload, dict) or payload.get(key) is None:
            return None
        value = payload[key]
    else:
        value = key(payload)
        if value is None:
            return None
    # As PostgreSQL's ``payload ->> field`` gives it: a string as is, anything else as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def key_display(label: str) -> str:
    """A job's concurrency key as people read it, from its :func:`concurrency_key_label`: the
    payload field, or ``module.function()``."""
    return (
        f"{label.removeprefix(CALLABLE_PREFIX)}()" if label.startswith(CALLABLE_PREFIX) else label
    )


def declared_limit(job: Mapping[str, Any]) -> int | None:
    """A ``jobs`` row's ``max_concurrency``; 1 for a concurrency key without one, as the claim
    counts it; None when it declares neither."""
    if job["max_concurrency"] is not None:
        return int(job["max_concurrency"])
    return 1 if job["concurrency_key"] else None


def concurrency_limit(job: Mapping[str, Any]) -> int | None:
    """How many runs of a ``jobs`` row may run at once (per concurrency key when it has one):
    its declared limit, else 1 with overlap ``skip``, else None (no limit)."""
    declared = declared_limit(job)
    if declared is not None:
        return declared
    return 1 if job["overlap"] == "skip" else None
