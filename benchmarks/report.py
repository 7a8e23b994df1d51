"""Benchmark rows, the printed table and the JSON file.

Every row is one figure with its peer, measured in the same run against the same paper gateway
stream: ``Row(bench, metric, unit, value, peer_name, peer_value, better, target, ...)``. ``ratio`` is
value / peer_value; ``better`` says which direction wins ("higher" or "lower"), so a reader can tell
whether a ratio above 1 is good. ``target`` is the issue's target in words and ``status`` "pass",
"miss", "info" (no target) or "not measured" (with ``note`` saying why).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


@dataclass
class Row:
    bench: str                     # ingest, tick_to_cell, history_to_sheet, order_path, memory
    metric: str                    # what is measured, in words
    unit: str
    value: float | None            # ibxl's figure (None: not measured)
    peer: str                      # what it is compared with
    peer_value: float | None
    better: str = "lower"          # "lower" or "higher" is better, for value and peer alike
    target: str = ""               # the target in words ("" = none)
    status: str = "info"           # pass, miss, info, not measured
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.peer_value is None or self.peer_value == 0:
            return None
        return self.value / self.peer_value

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return _finite(d)


def judged(ok: bool) -> str:
    return "pass" if ok else "miss"


def not_measured(bench: str, metric: str, unit: str, peer: str, why: str) -> Row:
    return Row(bench, metric, unit, None, peer, None, status="not measured", note=why)


def _finite(obj):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100_000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.2f}"
    return f"{v:.2g}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (prints readably in a terminal too)."""
    head = ["benchmark", "figure", "ibxl", "peer", "peer value", "ratio", "target", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ratio = r.ratio
        cells = [r.bench, f"{r.metric} ({r.unit})", _fmt(r.value), r.peer, _fmt(r.peer_value),
                 "-" if ratio is None else f"{ratio:.2f}", r.target or "-",
                 r.status + (f": {r.note}" if r.note and r.status in ("miss", "not measured") else "")]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def machine() -> dict:
    """Where the figures came from: CPU model, cores, Python, OS."""
    cpu = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform()}


def write_json(path: str, rows: list[Row], seconds: float, config: dict) -> None:
    doc = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
           "seconds": seconds, "config": config, "rows": [r.to_json() for r in rows]}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
