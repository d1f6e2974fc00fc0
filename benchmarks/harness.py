"""What every measure shares: the run's settings, the pgbench baseline and the recorded figures.

A figure is one number of one system in one case of one measure. Rates are also reported divided
by pgbench's TPS, and durations divided by pgbench's average transaction latency, both measured on
the same server in the same run: the machine is shared and its absolute speed varies, the ratios
much less.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

Kind = Literal["rate", "duration", "plain"]


@dataclass(frozen=True)
class Baseline:
    """pgbench's built-in write transaction (``-N``) on the benchmark server."""

    tps: float
    latency_ms: float
    clients: int
    threads: int
    seconds: float


@dataclass
class Figure:
    """One number: ``value`` in ``unit``, and ``ratio`` to the baseline where one makes sense."""

    measure: str
    case: str
    system: str
    metric: str
    value: float | None
    unit: str
    kind: Kind = "plain"
    ratio: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Bench:
    """One benchmark run: where it runs, how big, its baseline and everything it measured."""

    admin_dsn: str
    quick: bool
    log_dir: Path
    peers: bool = False
    baseline: Baseline | None = None
    figures: list[Figure] = field(default_factory=list)

    def pick(self, full: T, quick: T) -> T:
        """``quick`` in a ``--quick`` run, else ``full``."""
        return quick if self.quick else full

    def add(
        self,
        measure: str,
        case: str,
        system: str,
        metric: str,
        value: float | None,
        unit: str,
        kind: Kind = "plain",
        note: str = "",
    ) -> Figure:
        ratio = self._ratio(value, kind, unit)
        figure = Figure(measure, case, system, metric, value, unit, kind, ratio, note)
        self.figures.append(figure)
        return figure

    def at(self, measure: str, case: str, system: str) -> Recorder:
        """Records figures of one system in one case of one measure."""
        return Recorder(self, measure, case, system)

    def _ratio(self, value: float | None, kind: Kind, unit: str) -> float | None:
        if value is None or self.baseline is None:
            return None
        if kind == "rate" and self.baseline.tps > 0:
            return value / self.baseline.tps
        if kind == "duration" and self.baseline.latency_ms > 0:
            milliseconds = value if unit == "ms" else value * 1000.0
            return milliseconds / self.baseline.latency_ms
        return None


@dataclass(frozen=True)
class Recorder:
    bench: Bench
    measure: str
    case: str
    system: str

    def add(
        self, metric: str, value: float | None, unit: str, kind: Kind = "plain", note: str = ""
    ) -> Figure:
        return self.bench.add(self.measure, self.case, self.system, metric, value, unit, kind, note)


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns a truthy value; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def short(exc: BaseException) -> str:
    """The exception's type and first line, for a table cell."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class DrainResult:
    """One drain: ``jobs`` runs done by ``workers`` processes of ``concurrency`` each."""

    system: str
    workers: int
    concurrency: int
    jobs: int
    succeeded: int
    seconds: float | None
    settings: str = ""

    @property
    def jobs_per_s(self) -> float | None:
        return self.succeeded / self.seconds if self.seconds else None


@dataclass(frozen=True)
class Execution:
    """One execution of a scheduled job: the tick it ran for and when (epoch seconds).

    ``tick`` is None where the system does not say which tick an execution is for; ``next_tick``
    is the tick the system scheduled next, where it says so (pgqueuer).
    """

    job: str
    tick: float | None
    entered: float
    next_tick: float | None = None


def read_executions(pattern_prefix: Path) -> list[Execution]:
    """Executions that jobs appended to ``<prefix>.<pid>`` files: ``job tick entered [next]``."""
    found: list[Execution] = []
    for path in sorted(pattern_prefix.parent.glob(f"{pattern_prefix.name}.*")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue  # a line cut short by a stopping worker
            tick = None if parts[1] == "-" else float(parts[1])
            nxt = float(parts[3]) if len(parts) > 3 and parts[3] != "-" else None
            found.append(Execution(parts[0], tick, float(parts[2]), nxt))
    return found
