"""The soak's figures per window of time, its targets, and the table that sets them side by side.

A window's gauges (table and index size, tuples, worker memory) are the last sample in it; its
counters (claims, vacuums, pruned runs) are what happened in it; its lags are those of the runs
created in it. The targets compare the last window with the first, or hold in every window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.harness import percentile
from benchmarks.sampler import Observations, Sample

RAMP = 30.0  # seconds: the ramp-up from the empty queue, set against the rest of the soak
FLAT = 1.2  # the last window at most this many times the first
LAG_P99_MS = 50.0
RSS_GROWTH = 10.0  # percent
CALM = 5.0  # the every-second ticks from this second of a minute on: after the minute's burst


@dataclass
class Window:
    start_s: float  # seconds from the soak's start
    end_s: float
    enqueued_per_s: float | None = None
    claim_p50_ms: float | None = None  # enqueue -> start of the steady enqueues
    claim_p99_ms: float | None = None
    claim_max_ms: float | None = None
    late: int = 0  # runs not started SETTLE seconds after their enqueue
    claim_statement_ms: float | None = None  # the claim statement's mean time
    claims_per_s: float | None = None
    reaps_per_s: float | None = None
    second_p50_ms: float | None = None  # scheduled_for -> start, the every-second jobs
    second_p99_ms: float | None = None
    second_max_ms: float | None = None
    second_calm_p99_ms: float | None = None  # the ticks from second CALM of each minute on
    skipped: int = 0
    minute_p50_ms: float | None = None  # scheduled_for -> start, the 2,000 a minute
    minute_p99_ms: float | None = None
    minute_max_ms: float | None = None
    table_mb: float | None = None
    index_mb: float | None = None
    live: int | None = None
    dead: int | None = None
    dead_max: int | None = None
    queued_max: int | None = None
    autovacuums: int = 0
    autoanalyzes: int = 0
    worker_analyzes: int = 0
    pruned: int = 0
    prunes: int = 0
    prune_max_s: float | None = None
    rss_mib: float | None = None  # the workers' mean
    index_mib: dict[str, float] = field(default_factory=dict)  # each index of runs


@dataclass
class Verdict:
    target: str
    value: str
    passed: bool | None  # None: not enough data


def windows(seen: Observations, t0: float, seconds: float, length: float) -> list[Window]:
    count = max(1, math.ceil(seconds / length - 1e-9))
    out = []
    for k in range(count):
        start, end = k * length, min((k + 1) * length, seconds)
        out.append(window(seen, t0, start, end))
    return out


def window(seen: Observations, t0: float, start: float, end: float) -> Window:
    """The figures of ``[start, end)``, in seconds from the soak's start ``t0`` (epoch)."""
    w = Window(start, end)
    span = end - start
    lo, hi = t0 + start, t0 + end
    queue = seen.lags.get("queue")
    if queue is not None:
        lags, w.late = queue.between(lo, hi)
        w.enqueued_per_s = len(lags) / span
        w.claim_p50_ms, w.claim_p99_ms, w.claim_max_ms = _quantiles(lags)
    for kind in ("second", "minute"):
        found = seen.lags.get(kind)
        if found is not None:
            lags, _ = found.between(lo, hi)
            setattr(w, f"{kind}_p50_ms", _ms(percentile(lags, 0.5)))
            setattr(w, f"{kind}_p99_ms", _ms(percentile(lags, 0.99)))
            setattr(w, f"{kind}_max_ms", _ms(max(lags) if lags else None))
    second = seen.lags.get("second")
    if second is not None:
        w.second_calm_p99_ms = _ms(percentile(second.between(lo, hi, from_second=CALM)[0], 0.99))
    w.skipped = sum(1 for created in seen.skipped if lo <= created < hi)

    inside = [s for s in seen.samples if lo <= s.at < hi]
    before = [s for s in seen.samples if s.at < lo]
    if inside:
        last = inside[-1]
        first = before[-1] if before else inside[0]
        elapsed = last.at - first.at
        w.table_mb = last.table_bytes / 2**20
        w.index_mb = last.index_bytes / 2**20
        w.index_mib = {name: size / 2**20 for name, size in last.indexes.items()}
        w.live, w.dead = last.live, last.dead
        w.dead_max = max(s.dead for s in inside)
        w.queued_max = max(s.queued for s in inside)
        w.autovacuums = last.autovacuums - first.autovacuums
        w.autoanalyzes = last.autoanalyzes - first.autoanalyzes
        w.worker_analyzes = last.analyzes - first.analyzes
        calls, total = _delta(first, last, "claim")
        if calls:
            w.claim_statement_ms = total / calls
        if elapsed > 0:
            w.claims_per_s = calls / elapsed
            w.reaps_per_s = _delta(first, last, "reap")[0] / elapsed
        if last.rss_kib:
            w.rss_mib = sum(last.rss_kib) / len(last.rss_kib) / 1024
    prunes = [p for p in seen.prunes if lo <= p.finished < hi]
    w.prunes = len(prunes)
    w.pruned = sum(p.deleted for p in prunes)
    w.prune_max_s = max((p.seconds for p in prunes), default=None)
    return w


def ramp_up(seen: Observations, t0: float, seconds: float) -> dict[str, Any]:
    """The steady enqueues' lag in the first ``RAMP`` seconds (the queue was empty, the tables
    new), and in the same ``RAMP`` seconds of every later minute: the same moment between two
    of the minute's bursts of ticks, with the queue warm."""
    queue = seen.lags.get("queue")
    spans = {
        "ramp": [(0.0, RAMP)],
        "rest": [(60.0 * k, 60.0 * k + RAMP) for k in range(1, math.ceil(seconds / 60))],
    }
    out: dict[str, Any] = {}
    for label, parts in spans.items():
        lags: list[float] = []
        for lo, hi in parts:
            if queue is not None and lo < seconds:
                lags += queue.between(t0 + lo, t0 + min(hi, seconds))[0]
        p50, p99, peak = _quantiles(lags)
        out[label] = {"runs": len(lags), "p50_ms": p50, "p99_ms": p99, "max_ms": peak}
    return out


def verdicts(found: list[Window], ramp: dict[str, Any]) -> list[Verdict]:
    first, last = found[0], found[-1]

    def flat(what: str, get: Callable[[Window], float | None], unit: str) -> Verdict:
        a, b = get(first), get(last)
        target = f"{what}: last window <= {FLAT:g} x the first"
        if a is None or b is None or a <= 0:
            return Verdict(target, "n/a", None)
        return Verdict(target, f"{b:,.1f} / {a:,.1f} {unit} = {b / a:.2f}x", b <= FLAT * a)

    out = [
        flat("runs table size", lambda w: w.table_mb, "MiB"),
        flat("runs index size", lambda w: w.index_mb, "MiB"),
        flat("claim latency p99", lambda w: w.claim_p99_ms, "ms"),
    ]
    lags = [w.second_p99_ms for w in found]
    worst = max((v for v in lags if v is not None), default=None)
    out.append(
        Verdict(
            f"schedule lag p99 (every-second jobs) <= {LAG_P99_MS:g} ms in every window",
            "n/a" if worst is None else f"worst {worst:,.1f} ms",
            None if worst is None else worst <= LAG_P99_MS,
        )
    )
    if first.rss_mib and last.rss_mib:
        growth = (last.rss_mib - first.rss_mib) * 100 / first.rss_mib
        out.append(
            Verdict(
                f"worker RSS growth <= {RSS_GROWTH:g} %",
                f"{first.rss_mib:.1f} -> {last.rss_mib:.1f} MiB = {growth:+.1f} %",
                growth <= RSS_GROWTH,
            )
        )
    head, rest = ramp["ramp"]["p99_ms"], ramp["rest"]["p99_ms"]
    out.append(
        Verdict(
            f"ramp-up from empty (first {RAMP:g} s): claim p99 <= {FLAT:g} x later minutes'",
            "n/a" if head is None or rest is None else f"{head:,.1f} vs {rest:,.1f} ms",
            None if head is None or rest is None else head <= FLAT * rest,
        )
    )
    return out


_ROWS: list[tuple[str, str, str]] = [
    # (label, attribute, format)
    ("steady enqueues (runs/s)", "enqueued_per_s", "{:,.0f}"),
    ("claim latency p50 (ms)", "claim_p50_ms", "{:,.1f}"),
    ("claim latency p99 (ms)", "claim_p99_ms", "{:,.1f}"),
    ("claim latency max (ms)", "claim_max_ms", "{:,.1f}"),
    ("runs not started after 5 s", "late", "{:,}"),
    ("claim statement mean (ms)", "claim_statement_ms", "{:.2f}"),
    ("claim statements/s", "claims_per_s", "{:,.0f}"),
    ("reaps/s", "reaps_per_s", "{:.2f}"),
    ("schedule lag p50 (ms), every second", "second_p50_ms", "{:,.1f}"),
    ("schedule lag p99 (ms), every second", "second_p99_ms", "{:,.1f}"),
    ("schedule lag max (ms), every second", "second_max_ms", "{:,.1f}"),
    ("  p99 of the ticks at :05 to :59", "second_calm_p99_ms", "{:,.1f}"),
    ("skipped ticks", "skipped", "{:,}"),
    ("schedule lag p50 (ms), 2,000/min", "minute_p50_ms", "{:,.0f}"),
    ("schedule lag p99 (ms), 2,000/min", "minute_p99_ms", "{:,.0f}"),
    ("schedule lag max (ms), 2,000/min", "minute_max_ms", "{:,.0f}"),
    ("runs table (MiB)", "table_mb", "{:,.1f}"),
    ("runs indexes (MiB)", "index_mb", "{:,.1f}"),
    ("live tuples", "live", "{:,}"),
    ("dead tuples", "dead", "{:,}"),
    ("dead tuples, max", "dead_max", "{:,}"),
    ("queued and due, max", "queued_max", "{:,}"),
    ("autovacuums", "autovacuums", "{:,}"),
    ("autoanalyzes", "autoanalyzes", "{:,}"),
    ("ANALYZE by a worker", "worker_analyzes", "{:,}"),
    ("runs pruned", "pruned", "{:,}"),
    ("prune runs", "prunes", "{:,}"),
    ("longest prune (s)", "prune_max_s", "{:.2f}"),
    ("worker RSS (MiB, mean)", "rss_mib", "{:.1f}"),
]


def table(found: list[Window], ramp: dict[str, Any], verdicts_: list[Verdict]) -> str:
    heads = ["metric"] + [_span(w) for w in found]
    rows = [heads]
    for label, attribute, fmt in _ROWS:
        cells = []
        for w in found:
            value = getattr(w, attribute)
            cells.append("n/a" if value is None else fmt.format(value))
        rows.append([label, *cells])
        if attribute == "index_mb":
            for name in sorted({n for w in found for n in w.index_mib}):
                sizes = [w.index_mib.get(name) for w in found]
                rows.append([f"  {name}", *("n/a" if v is None else f"{v:,.1f}" for v in sizes)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for label in ("ramp", "rest"):
        part = ramp[label]
        name = (
            f"first {RAMP:g} s (ramp-up from empty)"
            if label == "ramp"
            else f"the same {RAMP:g} s of each later minute"
        )
        lines.append(
            f"claim latency, {name}: {part['runs']:,} runs, p50 {_fmt(part['p50_ms'])} ms, "
            f"p99 {_fmt(part['p99_ms'])} ms, max {_fmt(part['max_ms'])} ms"
        )
    lines.append("")
    lines.append("targets:")
    width = max(len(v.target) for v in verdicts_)
    for v in verdicts_:
        mark = "n/a " if v.passed is None else ("PASS" if v.passed else "FAIL")
        lines.append(f"  {mark}  {v.target.ljust(width)}  {v.value}")
    return "\n".join(lines)


def as_dicts(found: list[Window]) -> list[dict[str, Any]]:
    return [asdict(w) for w in found]


def _span(w: Window) -> str:
    return f"{w.start_s / 60:g}-{w.end_s / 60:g} min"


def _quantiles(lags: list[float]) -> tuple[float | None, float | None, float | None]:
    return (
        _ms(percentile(lags, 0.5)),
        _ms(percentile(lags, 0.99)),
        _ms(max(lags) if lags else None),
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _delta(first: Sample, last: Sample, name: str) -> tuple[int, float]:
    a, b = first.statements.get(name, (0, 0.0)), last.statements.get(name, (0, 0.0))
    return b[0] - a[0], b[1] - a[1]
