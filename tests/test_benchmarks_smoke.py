"""`python -m benchmarks --quick`: the smallest configuration of every benchmark runs end to end
against real paper gateways and writes JSON in which every row has its figure, peer and ratio.
No timing asserts: the figures themselves belong to the benchmark's own report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = {"ingest", "tick_to_cell", "history_to_sheet", "history_burst", "order_path", "slow_reader", "service",
           "udf_latency", "memory"}


def test_quick_run_writes_every_row_with_figure_peer_and_ratio(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--memory-seconds", "2",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert {r["bench"] for r in rows} == BENCHES
    for r in rows:
        assert r["status"] in ("pass", "miss", "info"), r            # every benchmark measured
        assert isinstance(r["value"], (int, float)), r
        assert isinstance(r["peer_value"], (int, float)) and r["peer"], r
        if r["peer_value"]:
            assert abs(r["ratio"] - r["value"] / r["peer_value"]) < 1e-9, r
    targets = {r["target"] for r in rows if r["target"]}
    assert {">= ib_async", "one write per changed rectangle", "< 5 ms", "<= 45", "< 50 ms"} <= targets
    assert doc["machine"]["cores"] and doc["machine"]["python"]
    assert "| benchmark |" in proc.stdout                                  # the printed table
