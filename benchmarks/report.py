"""The results: a table for people, JSON for tools."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.harness import Bench, Figure

HEADERS = ("measure", "case", "system", "metric", "value", "vs pgbench", "note")


def table(bench: Bench) -> str:
    lines = []
    if bench.baseline is not None:
        b = bench.baseline
        lines.append(
            f"baseline: pgbench -N -c {b.clients} -j {b.threads} -T {b.seconds:g}: "
            f"{b.tps:,.0f} tps, latency {b.latency_ms:.3f} ms "
            "(vs pgbench: rates / tps, durations / latency)"
        )
    else:
        lines.append("baseline: pgbench not measured (no ratios)")
    rows = [HEADERS] + [_row(f) for f in bench.figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in (4, 5) else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(f: Figure) -> tuple[str, ...]:
    ratio = "" if f.ratio is None else _number(f.ratio) + "x"
    return (f.measure, f.case, f.system, f.metric, _value(f), ratio, f.note)


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _value(f: Figure) -> str:
    if f.value is None:
        return "n/a"
    v = f.value
    if f.unit in ("jobs/s", "tps"):
        text = f"{v:,.0f}"
    elif f.unit == "ms":
        text = f"{v:,.2f}"
    elif f.unit in ("s", "1/s", "x", "%", "MiB"):
        text = _number(v)
    else:
        text = f"{v:,.0f}" if float(v).is_integer() else _number(v)
    return f"{text} {f.unit}"


def write_json(
    bench: Bench, path: Path, meta: dict[str, Any], measures: dict[str, Any], peers: dict[str, Any]
) -> None:
    document = {
        "meta": meta,
        "baseline": asdict(bench.baseline) if bench.baseline is not None else None,
        "peers": peers,
        "measures": measures,
        "figures": [f.as_dict() for f in bench.figures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
