"""Outcomes the database always accepts: whatever a job produced, made storable.

A run's end is recorded as one :class:`~pgjobs.store.Outcome` inside a JSON document that
PostgreSQL reads into text, jsonb and integer columns. A job can hand back anything: a NUL or a
lone surrogate in a message, ``bytes`` instead of ``str``, data that is not JSON, a count beyond
32 bits, a 300 MB string, an exception whose ``__str__`` raises. Left as they are, the statement
that records the outcome fails and no outcome is written. Everything that becomes an outcome
passes through here first:

- **Text** (message, error type, error message, traceback, logs) is made ``str`` safely (``bytes``
  are decoded as UTF-8 with replacement, other objects go through ``str()``, then ``repr()``,
  then a fixed placeholder). NUL characters, which neither ``text`` nor ``jsonb`` can hold, and
  lone surrogates, which UTF-8 cannot encode, each become U+FFFD (``�``), the usual replacement
  character. Text over its cap is cut at a character boundary and says so: ``… [truncated N
  bytes]`` at its end (tracebacks and logs keep their end, so the cut is at their start).
- **Data** must be a mapping that ``json.dumps(..., allow_nan=False)`` accepts; its keys and
  string values are cleaned like text. Data whose JSON exceeds its cap is replaced by
  ``{"dropped": true, "reason": ..., "bytes": N, "cap_bytes": CAP}``.
- **Counts** (``processed``, ``failed``) must be integers that fit the ``integer`` columns.

Data or counts that cannot be stored make the run ``failed``, with an error that says why: the
result as the job meant it cannot be recorded. Building an outcome never raises: any error on the
way (a hostile ``__str__``, a property of a ``JobResult`` subclass that raises, ``SystemExit``
included, since it comes from the job's objects) ends in an outcome too. :func:`failed_outcome`
is the minimal outcome that is accepted whatever happened, for the worker to record a run with
when the database still rejects its outcome (see :mod:`pgjobs.worker.dispatch`). The caps, in UTF-8
bytes, are the :class:`Caps` defaults (see :data:`CAPS`).
"""

from __future__ import annotations

import json
import math
import operator
import traceback
from dataclasses import dataclass
from typing import Any

from pgjobs.job import MAX_COUNT, JobResult
from pgjobs.store import Outcome

REPLACEMENT = "\ufffd"
"""What a NUL character or a lone surrogate becomes."""

_INT_MIN = -(2**31)  # the runs.items_* columns are PostgreSQL `integer`


@dataclass(frozen=True)
class Caps:
    """The most each part of an outcome may hold, in UTF-8 bytes (data: of its JSON text)."""

    message: int = 64 * 1024
    error_type: int = 1024
    error_message: int = 64 * 1024
    error_traceback: int = 64 * 1024
    logs: int = 128 * 1024
    data: int = 1024 * 1024


CAPS = Caps()
"""The caps every run's outcome is held to: 64 KiB of message, error message and traceback,
1 KiB of error type, 128 KiB of logs (a run keeps at most 64 KiB of its lines anyway) and 1 MiB of
JSON data, about 1.3 MiB for a whole outcome."""


def clean_text(text: str) -> str:
    """``text`` as an exact ``str`` with no NUL and no lone surrogate (each becomes U+FFFD)."""
    if type(text) is not str:
        text = str.__str__(text)  # an exact copy: a subclass's own methods never run
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Through UTF-16, surrogate pairs become their character and lone ones U+FFFD.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def as_text(value: object) -> str:
    """Any value as clean text: ``str`` as is, ``bytes`` as UTF-8, else ``str()``, ``repr()``,
    or a placeholder naming the type. Never raises (short of memory)."""
    try:
        if isinstance(value, str):
            return clean_text(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return clean_text(bytes(value).decode("utf-8", "replace"))
    except BaseException:
        pass
    for render in (str, repr, object.__repr__):
        try:
            return clean_text(render(value))
        except BaseException:
            continue
    return "<unprintable object>"


def cap_text(text: str, cap: int, *, keep_end: bool = False) -> str:
    """``text`` (clean) cut to at most ``cap`` UTF-8 bytes, saying how many bytes were cut: a
    ``… [truncated N bytes]`` suffix, or a ``[truncated N bytes] …`` prefix when ``keep_end``."""
    if len(text) * 4 <= cap:  # no character takes more than 4 bytes
        return text
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size <= cap:
        return text
    note = f"[truncated {size} bytes]"  # the longest the count can be: reserve room for it
    room = max(0, cap - len(note.encode("utf-8")) - 4)  # 4: "… " or " …"
    if keep_end:
        kept = text[-room:] if room else ""
        kept_bytes = kept.encode("utf-8")[-room:] if room else b""
        kept = kept_bytes.decode("utf-8", "ignore")
        cut = size - len(kept.encode("utf-8"))
        return f"[truncated {cut} bytes] …{kept}"
    kept = text[:room].encode("utf-8")[:room].decode("utf-8", "ignore")
    cut = size - len(kept.encode("utf-8"))
    return f"{kept}… [truncated {cut} bytes]"


def safe_text(value: object, cap: int, *, keep_end: bool = False) -> str | None:
    """``None`` stays ``None``; anything else becomes clean text within ``cap`` bytes."""
    if value is None:
        return None
    if type(value) is str and len(value) * 4 <= cap and value.isascii() and "\x00" not in value:
        return value  # most texts: short plain ASCII, nothing to do
    try:
        return cap_text(as_text(value), cap, keep_end=keep_end)
    except BaseException:  # MemoryError and the like: still an answer
        return "<text that could not be stored>"[:cap]


class Unstorable(ValueError):
    """A part of a result that cannot be stored faithfully; the run is recorded as failed."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def safe_count(name: str, value: object) -> int | None:
    """``value`` as an ``int`` that fits the ``integer`` column of ``name``; raises
    :class:`Unstorable` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Unstorable("TypeError", f"result {name} must be an int, got bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except BaseException:
        raise Unstorable(
            "TypeError", f"result {name} must be an int, got {as_text(type(value).__name__)}"
        ) from None
    if not _INT_MIN <= number <= MAX_COUNT:
        raise Unstorable(
            "ValueError",
            f"result {name} is a {number.bit_length()}-bit integer: it does not fit the"
            f" 32-bit items_{name} column ({_INT_MIN}..{MAX_COUNT})",
        )
    return int(number)


def safe_data(data: object, cap: int) -> dict[str, Any] | None:
    """``data`` as a plain JSON object within ``cap`` bytes (else a note that it was dropped);
    raises :class:`Unstorable` when it is not a mapping JSON can hold."""
    if data is None:
        return None
    if type(data) is dict and not data:
        return {}
    try:
        mapping: dict[Any, Any] = dict(data)  # type: ignore[call-overload]
    except BaseException as exc:
        raise Unstorable(
            "TypeError", f"result data must be a mapping of JSON values: {_describe(exc)}"
        ) from None
    if not mapping:
        return {}
    try:
        dumped = json.dumps(mapping, allow_nan=False)  # jsonb takes neither NaN nor Infinity
        if len(dumped) > cap:  # escaped as ASCII: never shorter than its UTF-8 form
            text = json.dumps(mapping, allow_nan=False, ensure_ascii=False)
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > cap:
                return _dropped(size, cap)
        plain = json.loads(dumped)  # plain dicts, lists and values: nothing of the job's left
        if "\\u0000" in dumped or "\\ud" in dumped:  # a NUL or a surrogate (pair or lone)
            plain = _clean_json(plain)
    except BaseException as exc:
        raise Unstorable(
            "TypeError", f"result data is not JSON-serialisable: {_describe(exc)}"
        ) from None
    return plain  # type: ignore[no-any-return]


def _dropped(size: int, cap: int) -> dict[str, Any]:
    """What replaces data over its cap: a small object saying so, and how big the data was."""
    return {
        "dropped": True,
        "reason": f"the run's data was {size} bytes of JSON, over the cap of {cap} bytes",
        "bytes": size,
        "cap_bytes": cap,
    }


def _clean_json(value: Any) -> Any:
    """A JSON value (as json.loads makes them) with every string, key or value, cleaned."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(key): _clean_json(item) for key, item in value.items()}
    return value


def _describe(exc: BaseException) -> str:
    """``TypeName: text`` of an exception, safe whatever its ``__str__`` does."""
    name = _type_name(exc)
    text = as_text(exc)
    return f"{name}: {text}" if text else name


def _type_name(value: object) -> str:
    try:
        return as_text(type(value).__qualname__)
    except BaseException:
        return "<unnamed type>"


def safe_outcome(
    run_id: int,
    status: str,
    duration: float,
    *,
    message: object = None,
    data: object = None,
    processed: object = None,
    failed: object = None,
    error_type: object = None,
    error_message: object = None,
    error_traceback: object = None,
    logs: object = None,
    caps: Caps = CAPS,
) -> Outcome:
    """An :class:`Outcome` of these fields that the database accepts; never raises.

    Text is cleaned and capped. Data or counts that cannot be stored make the outcome ``failed``
    with ``error_type``/``error_message`` saying why (the message is kept).
    """
    try:
        try:
            stored_data = None if data is None else safe_data(data, caps.data)
            items_processed = None if processed is None else safe_count("processed", processed)
            items_failed = None if failed is None else safe_count("failed", failed)
        except Unstorable as problem:
            status, stored_data, items_processed, items_failed = "failed", None, None, None
            error_type, error_message = problem.error_type, str(problem)
        return Outcome(
            run_id=run_id,
            status=status,
            duration=_finite(duration),
            message=safe_text(message, caps.message),
            data=stored_data,
            processed=items_processed,
            failed=items_failed,
            error_type=safe_text(error_type, caps.error_type),
            error_message=safe_text(error_message, caps.error_message),
            error_traceback=safe_text(error_traceback, caps.error_traceback, keep_end=True),
            logs=safe_text(logs, caps.logs, keep_end=True),
        )
    except BaseException as exc:  # an outcome must come out, whatever happened
        return failed_outcome(run_id, f"the run's outcome could not be built: {_fallback(exc)}")


def failed_outcome(run_id: int, reason: object, duration: float = 0.0) -> Outcome:
    """A ``failed`` outcome that the database accepts whatever ``reason`` is: its message and
    error message are ``reason`` as printable ASCII, at most 1,000 characters, and nothing else
    is set. The last resort when the database rejected an outcome.

    NUL characters become the two characters ``\\0``, anything else outside ASCII a
    backslash escape: nothing in it depends on the database's encoding."""
    text = reason if type(reason) is str else "the run's outcome could not be stored"
    text = text.replace("\x00", "\\0").encode("ascii", "backslashreplace").decode("ascii")
    if len(text) > 1000:
        text = text[:985] + " ... [truncated]"
    return Outcome(
        run_id=run_id,
        status="failed",
        duration=_finite(duration),
        message=text,
        error_type="OutcomeNotStored",
        error_message=text,
    )


def _fallback(exc: BaseException) -> str:
    try:
        return _describe(exc)
    except BaseException:
        return "an error that could not be described"


def _short_repr(value: object) -> str:
    """``repr(value)``, clean, at most 200 characters; ``as_text`` when repr raises."""
    try:
        text = clean_text(repr(value))
    except BaseException:
        text = as_text(value)
    return text if len(text) <= 200 else f"{text[:200]}…"


def _finite(seconds: object) -> float:
    if type(seconds) is float and math.isfinite(seconds):
        return seconds
    try:
        value = float(seconds)  # type: ignore[arg-type]
    except BaseException:
        return 0.0
    return value if value == value and abs(value) != float("inf") else 0.0


def exception_outcome(
    run_id: int, exc: BaseException, duration: float, *, caps: Caps = CAPS
) -> Outcome:
    """The ``failed`` outcome of a run whose job raised ``exc`` (any BaseException); its message,
    error message and traceback are made safe, whatever ``exc``'s ``__str__`` does."""
    try:
        name = _type_name(exc)
        text = as_text(exc)
        try:
            formatted = "".join(traceback.format_exception(exc))
        except BaseException as broken:
            formatted = f"(the traceback could not be formatted: {_describe(broken)})"
        if isinstance(exc, Exception):
            error_message = text
        else:  # KeyboardInterrupt, SystemExit: the job asked its process to stop
            error_message = f"{name} raised by the job (the worker carries on)"
            if text:
                error_message = f"{error_message}: {text}"
        return safe_outcome(
            run_id,
            "failed",
            duration,
            message=f"{name}: {text}" if text else name,
            error_type=name,
            error_message=error_message,
            error_traceback=formatted,
            caps=caps,
        )
    except BaseException as broken:
        return failed_outcome(run_id, f"the job raised: {_fallback(broken)}", duration)


def result_outcome(
    run_id: int, result: object, duration: float, *, cancelled: bool = False, caps: Caps = CAPS
) -> Outcome:
    """The outcome of a run whose job returned ``result`` (``None`` is success).

    Anything but a :class:`~pgjobs.job.JobResult` is a failed run; ``cancelled`` records the run
    as cancelled by an operator whatever it returned.
    """
    try:
        if result is None:
            result = JobResult.success()
        if not isinstance(result, JobResult):
            return safe_outcome(
                run_id,
                "failed",
                duration,
                message=f"execute returned {_type_name(result)}, not JobResult",
                error_type="TypeError",
                error_message=f"execute must return a JobResult, got {_short_repr(result)}",
                caps=caps,
            )
        message, data = result.message, result.data
        processed, failed = result.processed, result.failed
        ok = bool(result.ok)
    except BaseException as exc:  # a hostile result is still an outcome
        return safe_outcome(
            run_id,
            "failed",
            duration,
            message="the job's result could not be read",
            error_type="TypeError",
            error_message=f"the job's result could not be read: {_fallback(exc)}",
            caps=caps,
        )
    status = "cancelled" if cancelled else "succeeded" if ok else "failed"
    return safe_outcome(
        run_id,
        status,
        duration,
        message=message,
        data=data,
        processed=processed,
        failed=failed,
        caps=caps,
    )


def with_logs(outcome: Outcome, logs: object, *, caps: Caps = CAPS) -> Outcome:
    """``outcome`` with the run's captured ``logs`` (cleaned, the last ``caps.logs`` bytes)."""
    outcome.logs = safe_text(logs, caps.logs, keep_end=True)
    return outcome
