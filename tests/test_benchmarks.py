"""Smoke test: every benchmark script runs end to end on a tiny input and writes its results.

Nothing here is timed: the figures are the benchmarks' business (see README, "Benchmarks").
This only keeps the scripts from breaking unnoticed between the runs that measure. The
results go to a temporary folder (``OPENEDS_BENCH_RESULTS``), never over the committed ones.
``bench_training --device`` is made for a GPU; here its CPU branches run (``--device cpu``,
one row), and ``--device cuda`` must refuse, in one line, to run without one.

Each script runs as ``python -m benchmarks.<script>`` runs it (its module as ``__main__``, its
``sys.argv``), but in this test's process (:func:`run_script`): its torch, datasets and OpenCV are
imported here already, which a fresh process would spend 1.5-3.5 CPU-seconds on, and with
``OPENEDS_BENCH_IN_PROCESS=1`` its "children" run in it too (benchmarks/_common.py). What a process
would print on its stderr is in the stderr seen here, and what a script sets for its whole process
is put back after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import datasets
import pyarrow
import pytest

pytestmark = pytest.mark.datasets_independent("measured on the default line; the feeds they time are tested on both")

REPO = Path(__file__).resolve().parents[1]

#: (script, tiny arguments, keys its results must have)
SCRIPTS = [
    ("bench_preprocess", ("--frames", "2", "--repeats", "1"), ("configs",)),
    ("bench_rerun", ("--frames", "2", "--repeats", "1"), ("hash_mb_per_s", "rerun_over_build")),
    ("bench_parquet", ("--frames", "2"), ()),
    ("bench_memory", ("--frames", "2"), ()),
    ("bench_training", ("--frames", "1", "--repeat", "2", "--epochs", "1", "--rounds", "1"), ("results", "goals")),
    ("bench_dataset", ("--frames", "1", "--repeat", "2", "--items", "4", "--rounds", "1"), ("results", "goal", "date")),
    (
        "bench_streaming",
        # 6 rows, one a shard; one timed epoch a feed (after its warm-up); the shuffle section on 2 windows
        ("--frames", "2", "--repeat", "3", "--seconds", "0", "--rounds", "1", "--positions", "512"),
        ("results", "goal"),
    ),
    (
        "bench_resume",
        ("--frames", "1", "--repeat", "2", "--epochs", "1", "--rounds", "1", "--repeats", "1"),
        ("goals",),
    ),
    (
        "bench_xet_resume",
        # 4 runs of push.py: a reference publication, one killed 10% into its upload (0.2 s), its re-run, and
        # the re-run after a fixed label
        ("--frames", "1", "--seconds", "0.2", "--at", "0.1", "--variants", "push.py", "--grants", "never"),
        ("references", "kills", "fixed_label"),
    ),
]


@contextlib.contextmanager
def process_settings() -> Iterator[None]:
    """Put back, after a script, what it sets for its whole process: threads, Arrow's pool, progress bars, seeds.

    torch's only when it was imported before (the tests of the scripts that use it import it first).
    """
    torch = sys.modules.get("torch")
    threads, arrow, bars = cv2.getNumThreads(), pyarrow.cpu_count(), datasets.is_progress_bar_enabled()
    if torch is not None:
        torch_threads, seeds, cudnn = (
            torch.get_num_threads(),
            torch.random.get_rng_state(),
            torch.backends.cudnn.benchmark,
        )
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        pyarrow.set_cpu_count(arrow)
        (datasets.enable_progress_bars if bars else datasets.disable_progress_bars)()
        if torch is not None:
            torch.set_num_threads(torch_threads)
            torch.random.set_rng_state(seeds)
            torch.backends.cudnn.benchmark = cudnn


def run_script(script: str, args: Sequence[str], monkeypatch, capfd) -> tuple[int, str, str]:
    """``python -m benchmarks.<script> *args`` in this process: its exit status, stdout and stderr.

    The module runs as ``__main__`` (``runpy``, as ``-m`` runs it), from the repo root, with its
    own ``sys.argv``, and not imported yet under its own name, as in a fresh process (where an
    import of it by name, e.g. ``run_in_child``'s, makes a second copy). Its stderr is what a
    process would print there: what its threads raise and its unraisable errors (Python's own
    hooks for the run, not pytest's, which would turn them into warnings), the warnings it
    raises, and the message of a ``sys.exit("...")``. Any other exception propagates, and fails
    the test with its traceback.
    """
    monkeypatch.chdir(REPO)
    monkeypatch.delitem(sys.modules, f"benchmarks.{script}", raising=False)  # put back after the test
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / f"{script}.py"), *args])
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    capfd.readouterr()
    status, message = 0, ""
    with process_settings(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            runpy.run_module(f"benchmarks.{script}", run_name="__main__")
        except SystemExit as exit:  # as the interpreter ends on it
            if isinstance(exit.code, int) or exit.code is None:
                status = exit.code or 0
            else:
                status, message = 1, f"{exit.code}\n"
    out, err = capfd.readouterr()
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return status, out, err + shown + message


@pytest.mark.parametrize(("script", "args", "keys"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_benchmark_runs_and_writes_its_results(script, args, keys, tmp_path, monkeypatch, capfd):
    if script in ("bench_training", "bench_streaming", "bench_resume"):
        pytest.importorskip("torch")
    # the feeds' "children" run in the script's own process (benchmarks/_common.py: run_in_child)
    monkeypatch.setenv("OPENEDS_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv("OPENEDS_BENCH_IN_PROCESS", "1")
    status, _out, err = run_script(script, args, monkeypatch, capfd)
    assert status == 0, err[-3000:]
    assert "Traceback" not in err
    name = script.removeprefix("bench_")
    results = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["benchmark"] == name
    assert all(key in results for key in keys), sorted(results)


#: bench_training's device run at its smallest: one row, a batch of 1, one worker, a model of width 2
DEVICE_RUN = ("--frames", "1", "--repeat", "1", "--batch-size", "1", "--workers", "1", "--width", "2")
DEVICE_RUN += ("--epochs", "1", "--rounds", "1")


def test_bench_training_on_a_device_runs_its_cpu_branches(tmp_path, monkeypatch, capfd):
    """The device run's code on the CPU: every feed, the model step, the clock and the wait fraction."""
    pytest.importorskip("torch")
    # the feeds' "children" run in the script's own process (benchmarks/_common.py: run_in_child)
    monkeypatch.setenv("OPENEDS_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv("OPENEDS_BENCH_IN_PROCESS", "1")
    status, out, err = run_script("bench_training", ("--device", "cpu", *DEVICE_RUN), monkeypatch, capfd)
    assert status == 0, err[-3000:]
    assert "Traceback" not in err
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
    assert "CPU waits" in out


def test_bench_training_on_cuda_without_a_gpu_is_one_error_line(tmp_path, monkeypatch, capfd):
    """No GPU (a CPU-only torch, or none visible): one line naming the device and why, exit status 1."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("OPENEDS_BENCH_RESULTS", str(tmp_path))
    if torch.version.cuda is None:  # a CPU-only build sees no GPU in any process: this one will do
        status, _out, err = run_script("bench_training", ("--device", "cuda"), monkeypatch, capfd)
    else:
        # With a CUDA build, hiding every GPU takes the "none visible" branch instead of running the benchmark;
        # CUDA reads CUDA_VISIBLE_DEVICES once, when a process first asks it for devices: a fresh one, then.
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_training", "--device", "cuda"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        status, err = done.returncode, done.stderr
    assert status == 1, err[-3000:]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: CUDA is not available: "), err
    why = "is a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
    assert why in lines[0], lines[0]
    assert not list(tmp_path.iterdir())  # nothing built, nothing written


def test_the_cuda_errors_name_the_reason():
    """The branches a CPU-only machine cannot reach: a CUDA build that sees no GPU, or fewer than asked for."""
    torch = pytest.importorskip("torch")
    from benchmarks.training_on_device import cuda_problem

    cuda = torch.device("cuda")
    assert "CPU-only build" in cuda_problem(cuda, None, 0)
    assert cuda_problem(cuda, "12.8", 0).endswith("no GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
    assert cuda_problem(cuda, "12.8", 0, "CUDA initialization: Found no NVIDIA driver").endswith(
        "no GPU is visible: CUDA initialization: Found no NVIDIA driver"
    )
    assert cuda_problem(torch.device("cuda", 2), "12.8", 2) == "only 2 GPU(s) are visible, cuda:0 to cuda:1"
    assert cuda_problem(cuda, "12.8", 1) is None and cuda_problem(torch.device("cuda", 0), "12.8", 1) is None
