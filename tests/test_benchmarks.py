"""Smoke test: every benchmark script runs end to end on a tiny input and writes its results.

Nothing here is timed: the figures are the benchmarks' business (see README, "Benchmarks").
This only keeps the scripts from breaking unnoticed between the runs that measure. The
results go to a temporary folder (``OPENEDS_BENCH_RESULTS``), never over the committed ones.
``bench_training --device`` is made for a GPU; here its CPU branches run (``--device cpu``,
one row), and ``--device cuda`` must refuse, in one line, to run without one.
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
    # the feeds' "children" run in the script's own process (benchmarks/_common.py: run_in_child)
    env = {**os.environ, "OPENEDS_BENCH_RESULTS": str(tmp_path), "OPENEDS_BENCH_IN_PROCESS": "1"}
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


#: bench_training's device run at its smallest: one row, a batch of 1, one worker, a model of width 2
DEVICE_RUN = ("--frames", "1", "--repeat", "1", "--batch-size", "1", "--workers", "1", "--width", "2")
DEVICE_RUN += ("--epochs", "1", "--rounds", "1")


def test_bench_training_on_a_device_runs_its_cpu_branches(tmp_path):
    """The device run's code on the CPU: every feed, the model step, the clock and the wait fraction."""
    pytest.importorskip("torch")
    # the feeds' "children" run in the script's own process (benchmarks/_common.py: run_in_child)
    env = {**os.environ, "OPENEDS_BENCH_RESULTS": str(tmp_path), "OPENEDS_BENCH_IN_PROCESS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_training", "--device", "cpu", *DEVICE_RUN],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    results = json.loads((tmp_path / "training_on_cpu.json").read_text())
    assert results["benchmark"] == "training_on_cpu" and results["device"] == "cpu"
    feeds = results["results"]
    assert sorted(feeds) == [
        "D1_dataloader_1_workers", "L1_iris_loader_1_threads", "R_model_on_a_resident_batch", "W_wire_copy_limit",
    ]  # fmt: skip
    for name, feed in feeds.items():
        modes = ("with_model",) if name.startswith("R_") else ("without_model", "with_model")
        assert sorted(feed) == sorted(modes), name
        assert all(feed[mode]["samples"] == 1 for mode in modes), name  # one timed epoch of one row
        timed = feed["with_model"]
        assert 0 < timed["model_s"] < timed["wall_s"], name
        assert timed["wait_fraction"] == pytest.approx(1 - timed["model_s"] / timed["wall_s"]), name
    assert {"L1_over_D1_without_model", "L1_over_D1_with_model", "wire_copy_gb_per_s"} <= set(results["summary"])
    assert "CPU waits" in done.stdout


def test_bench_training_on_cuda_without_a_gpu_is_one_error_line(tmp_path):
    """No GPU (a CPU-only torch, or none visible): one line naming the device and why, exit status 1."""
    torch = pytest.importorskip("torch")
    # With a CUDA build, hiding every GPU takes the "none visible" branch instead of running the benchmark.
    env = {**os.environ, "OPENEDS_BENCH_RESULTS": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_training", "--device", "cuda"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: CUDA is not available: "), done.stderr
    why = "is a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
    assert why in lines[0], lines[0]
    assert not list(tmp_path.iterdir())  # nothing built, nothing written


def test_the_cuda_errors_name_the_reason():
    """The branches a CPU-only machine cannot reach: a CUDA build that sees no GPU, or fewer than asked for."""
    torch = pytest.importorskip("torch")
    from benchmarks.bench_training import cuda_problem

    cuda = torch.device("cuda")
    assert "CPU-only build" in cuda_problem(cuda, None, 0)
    assert cuda_problem(cuda, "12.8", 0).endswith("no GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    assert cuda_problem(cuda, "12.8", 0, "CUDA initialization: Found no NVIDIA driver").endswith(
        "no GPU is visible: CUDA initialization: Found no NVIDIA driver"
    )
    assert cuda_problem(torch.device("cuda", 2), "12.8", 2) == "only 2 GPU(s) are visible, cuda:0 to cuda:1"
    assert cuda_problem(cuda, "12.8", 1) is None and cuda_problem(torch.device("cuda", 0), "12.8", 1) is None
