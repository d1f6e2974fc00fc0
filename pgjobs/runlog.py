"""Run logs: what a run logs through ``ctx.log``, on the console and kept with the run.

Every record of ``ctx.log`` carries the run's ``run_id``, ``job``, ``attempt`` and ``worker_id``
(see :func:`pgjobs.execution.run_logger`). This module

- formats records for the worker's console as text or as one JSON object per line
  (:class:`TextFormatter`, :class:`JsonFormatter`, :func:`configure_logging`), and
- keeps the last lines of each run (:class:`RunLogCapture`, bounded to :data:`MAX_LINES` lines
  and :data:`MAX_BYTES` bytes) so the worker stores them in ``runs.logs`` with the outcome.

A capture is attached for the duration of one run and keeps only records whose ``run_id`` is that
run's, so runs executing side by side on one worker never see each other's lines.

Console lines are written for a terminal, and a job controls part of them (its log lines, its error
messages): both formatters neutralise terminal control characters (:func:`visible_controls`), so
a job cannot clear the operator's screen, set a window title or plant a link. The capture keeps
the lines exactly; whoever shows them neutralises them.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

MAX_LINES = 200
"""At most this many lines of a run are kept (the last ones)."""

MAX_BYTES = 64 * 1024
"""At most this many bytes (UTF-8) of a run's lines are kept (the last ones)."""

JOB_LOGGER = "pgjobs.job"
"""The parent of every run's logger (``pgjobs.job.<job name>``)."""

RUN_FIELDS = ("run_id", "job", "attempt", "worker_id")
"""The attributes ``ctx.log`` puts on every record, in the order they are shown."""

LOG_FORMATS = ("text", "json")
"""The values of the worker's ``--log-format``."""

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


# C0 controls but tab and newline, DEL and C1 controls: what a terminal may act on. ESC starts
# the escape sequences (clear screen, OSC window title, OSC 8 link); C1 0x9b and 0x9d are CSI
# and OSC on their own.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SHOWN = {
    code: f"\\x{code:02x}" for code in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))
}
# In JSON text C0 controls are already escaped; DEL and C1 are not (ensure_ascii=False).
_JSON_RAW = re.compile(r"[\x7f-\x9f]")
_JSON_SHOWN = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def visible_controls(text: str) -> str:
    """``text`` with each terminal control character written visibly as ``\\xNN`` (ESC as
    ``\\x1b``); newline and tab are kept. One scan, and one translation only when needed:
    linear in the length of ``text``."""
    return text.translate(_SHOWN) if _CONTROL.search(text) else text


def json_visible_controls(text: str) -> str:
    """JSON ``text`` (from ``json.dumps(..., ensure_ascii=False)``) with DEL and C1 characters
    escaped as ``\\u00NN``: the same JSON value, with nothing a terminal acts on."""
    return text.translate(_JSON_SHOWN) if _JSON_RAW.search(text) else text


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of ``record`` beyond the run fields, in the order they were given."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and key not in RUN_FIELDS and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pairs(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_scalar(value)}" for key, value in fields.items())


def _scalar(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


class TextFormatter(logging.Formatter):
    """``2026-11-25T17:00:03.120Z INFO pgjobs.job.x: message run_id=7 job=x attempt=1 worker_id=w
    deleted=3``: the run fields and ``extra`` fields follow the message as ``key=value``.
    Terminal control characters are shown as ``\\xNN`` (:func:`visible_controls`)."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (plus the traceback, if the record has one)."""
        return visible_controls(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = {k: getattr(record, k) for k in RUN_FIELDS if hasattr(record, k)}
        fields.update(record_extras(record))
        if fields:
            line = f"{line} {_pairs(fields)}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the run fields when
    the record has them, every ``extra`` field, and ``exc_info`` (the traceback) if any. Every
    control character is escaped in the JSON text (:func:`json_visible_controls`)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; values JSON cannot hold are written with ``str()``."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in RUN_FIELDS if hasattr(record, k)})
        entry.update(record_extras(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        return json_visible_controls(json.dumps(entry, default=str, ensure_ascii=False))


def formatter_for(log_format: str) -> logging.Formatter:
    """The console formatter for ``--log-format`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")


def configure_logging(
    level: str | int = "INFO", log_format: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Send pgjobs' logs to ``stream`` (stderr) at ``level``, as text or JSON lines.

    Run logs below ``level`` (down to INFO) still reach each run's capture: the console shows what
    the operator asked for, ``runs.logs`` keeps the run's INFO lines in any case.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler.setLevel(numeric)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger(JOB_LOGGER).setLevel(min(numeric, logging.INFO))
    return handler


class RunLogCapture(logging.Handler):
    """Keeps the last lines one run logged: at most ``max_lines`` lines and ``max_bytes`` bytes.

    Only records whose ``run_id`` attribute equals ``run_id`` are kept. Safe to use from the run's
    thread and the event loop at once. :meth:`text` is what the worker stores in ``runs.logs``.
    """

    def __init__(
        self, run_id: int, *, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES
    ) -> None:
        super().__init__(logging.DEBUG)
        self.run_id = run_id
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._lines: deque[tuple[str, int]] = deque()
        self._bytes = 0
        self._dropped = 0
        self._guard = threading.Lock()
        self.addFilter(self._is_ours)

    def _is_ours(self, record: logging.LogRecord) -> bool:
        return getattr(record, "run_id", None) == self.run_id

    def format(self, record: logging.LogRecord) -> str:
        """``17:00:03.120 INFO message key=value`` (plus the traceback, if the record has one).

        The run fields are left out: every line of the capture belongs to the same run.
        """
        moment = datetime.fromtimestamp(record.created, UTC)
        line = f"{moment.strftime('%H:%M:%S.%f')[:-3]} {record.levelname} {record.getMessage()}"
        extras = record_extras(record)
        if extras:
            line = f"{line} {_pairs(extras)}"
        if record.exc_info:
            line = f"{line}\n{logging.Formatter().formatException(record.exc_info).rstrip()}"
        return line

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's line; drop the oldest lines beyond the bounds."""
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        encoded = line.encode("utf-8", "replace")
        if len(encoded) > self.max_bytes:
            line = encoded[: self.max_bytes - 16].decode("utf-8", "ignore") + " …[truncated]"
            encoded = line.encode("utf-8")
        size = len(encoded) + 1
        with self._guard:
            self._lines.append((line, size))
            self._bytes += size
            while len(self._lines) > self.max_lines or self._bytes > self.max_bytes:
                _, dropped = self._lines.popleft()
                self._bytes -= dropped
                self._dropped += 1

    @property
    def dropped(self) -> int:
        """How many of the run's earliest lines were dropped to stay within the bounds."""
        return self._dropped

    def text(self) -> str | None:
        """The kept lines, oldest first, one per line; None if the run logged nothing.

        When earlier lines were dropped, a first line says how many.
        """
        with self._guard:
            lines = [line for line, _ in self._lines]
            dropped = self._dropped
        if not lines and not dropped:
            return None
        if dropped:
            lines.insert(0, f"[{dropped} earlier line(s) dropped]")
        return "\n".join(lines)


class RunLogs:
    """What :func:`capture_run_logs` yields: the lines one run logged so far.

    The :class:`RunLogCapture` behind it is made with the run's first line, so a run that logs
    nothing costs no handler.
    """

    __slots__ = ("capture", "run_id")

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.capture: RunLogCapture | None = None

    @property
    def dropped(self) -> int:
        """How many of the run's earliest lines were dropped to stay within the bounds."""
        return 0 if self.capture is None else self.capture.dropped

    def text(self) -> str | None:
        """The kept lines, as :meth:`RunLogCapture.text`; None if the run logged nothing."""
        return None if self.capture is None else self.capture.text()


@contextmanager
def capture_run_logs(run_id: int, logger: str | logging.Logger = JOB_LOGGER) -> Iterator[RunLogs]:
    """Capture the lines run ``run_id`` logs while the block runs (attached to ``logger``).

    A logger that inherits its level (the default) is set to INFO, so a run's INFO lines are kept
    even in a process whose logging shows only warnings; an explicitly set level is respected.
    """
    target = logger if isinstance(logger, logging.Logger) else cached_logger(logger)
    router = _router_for(target)
    logs = RunLogs(run_id)
    router.runs[run_id] = logs
    try:
        yield logs
    finally:
        router.runs.pop(run_id, None)


class _RunLogRouter(logging.Handler):
    """One handler per logger that hands each record to the capture of its run, so the cost of a
    log line does not grow with the number of runs executing side by side."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.runs: dict[int, RunLogs] = {}

    def handle(self, record: logging.LogRecord) -> bool:
        logs = self.runs.get(getattr(record, "run_id", None))  # type: ignore[arg-type]
        if logs is not None:
            if logs.capture is None:
                with _routers_guard:  # a sync job's thread and the event loop may log at once
                    if logs.capture is None:
                        logs.capture = RunLogCapture(logs.run_id)
            logs.capture.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() routes
        self.handle(record)


_routers: dict[str, _RunLogRouter] = {}
_routers_guard = threading.Lock()


@functools.cache
def cached_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` without its lock on every call: loggers are never replaced."""
    return logging.getLogger(name)


def _router_for(target: logging.Logger) -> _RunLogRouter:
    router = _routers.get(target.name)
    if router is not None and target.level != logging.NOTSET:
        return router
    with _routers_guard:
        if target.level == logging.NOTSET:
            target.setLevel(logging.INFO)
        router = _routers.get(target.name)
        if router is None:
            router = _routers[target.name] = _RunLogRouter()
            target.addHandler(router)
        return router
