"""Smoke test: every benchmark script runs end to end on a tiny input and writes its results.

Nothing here is timed: the figures are the benchmarks' business (see README, "Benchmarks").
This only keeps the scripts from breaking unnoticed between the runs that measure. The
results go to a temporary folder (``OPENEDS_BENCH_RESULTS``), never over the committed ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.datasets_independent("measured on the default line; the feeds they time are tested on both")

REPO = Path(__file__).resolve().parents[1]

#: (script, tiny arguments, keys its results must have)
SCRIPTS = [
    ("bench_preprocess", ("--frames", "2", "--repeats", "1"), ("configs",)),
    ("bench_rerun", ("--frames", "4", "--repeats", "1"), ("hash_mb_per_s", "rerun_over_build")),
    ("bench_parquet", ("--frames", "4"), ()),
    ("bench_memory", ("--frames", "4"), ()),
    ("bench_training", ("--frames", "4", "--repeat", "2", "--epochs", "1", "--rounds", "1"), ("results", "goals")),
    ("bench_streaming", ("--frames", "4", "--repeat", "2", "--seconds", "0.5", "--rounds", "1"), ("results", "goal")),
    (
        "bench_resume",
        ("--frames", "4", "--repeat", "2", "--epochs", "1", "--rounds", "1", "--repeats", "1"),
        ("goals",),
    ),
]


@pytest.mark.parametrize(("script", "args", "keys"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_benchmark_runs_and_writes_its_results(script, args, keys, tmp_path):
    if script in ("bench_training", "bench_streaming", "bench_resume"):
        pytest.importorskip("torch")
    env = {**os.environ, "OPENEDS_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    name = script.removeprefix("bench_")
    results = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["benchmark"] == name
    assert all(key in results for key in keys), sorted(results)
