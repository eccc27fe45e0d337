"""`terrain bench` with a tiny load: the stack starts, every phase runs, the table and JSON come out, nothing left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_bench_tiny_run(tmp_path: Path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAIN_")}
    env["TMPDIR"] = str(tmp_path)  # the bench's temporary home lands here, and must be gone at the end
    proc = subprocess.run(
        [sys.executable, "-m", "terrain.cli", "bench", "-n", "300", "--rate", "200", "--seconds", "1",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "end to end" in proc.stdout and "inbound -> scored" in proc.stdout
    got = json.loads(out.read_text())
    assert got["ceiling_per_s"] > 0 and got["end_to_end_per_s"] > 0
    assert len(got["ceiling_runs_per_s"]) == 3 and got["ceiling_per_s"] == max(got["ceiling_runs_per_s"])
    assert got["scorer"] == "fast"
    stages = {s["name"]: s["count"] for s in got["stages"]}
    assert stages["escalation stored"] == 300
    # The topic stages count this phase's comments only, never a warm-up record the broker's offsets let in.
    assert stages["ingest -> comments"] == 300 and stages["sentiment -> scored"] == 300
    assert got["latency_ms"]["inbound -> scored"]["n"] == 200
    # Each hop's batches in the latency phase, read from the services' own /metrics.
    batches = {(b["service"], b["topic"]): b for b in got["latency_batches"]}
    inbound = batches[("ingest", "terrain.comments.inbound.v1")]
    assert inbound["batches"] >= 1 and inbound["messages"] == 200 and inbound["seconds"] > 0
    assert batches[("escalation", "terrain.comments.scored.v1")]["messages"] == 200
    assert "Batches in the latency phase" in proc.stdout
    names = {u["name"] for u in got["usage"]}
    assert {"broker", "database", "ingest", "sentiment", "escalation", "events"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
