"""What resume support costs `IrisLoader` (map-style): the first batch after a resume, the state, the steady state.

Renders a synthetic sample, builds it as v2 (the builder), memory-mapped on disk and
repeated to a few hundred rows, then measures, batch 64, 2 threads, model-ready on the CPU:

* **first batch**: from ``load_state_dict`` (a state taken mid-epoch) to the first batch
  of a fresh loader, against a fresh loader's first batch with no state (goal: at most
  1.2x). Both allocate their first slot and start their threads; each is the best of
  ``--repeats`` interleaved tries;
* **state_dict()**: per call, taken between two batches of a running loop (goal: under
  1 ms), and ``load_state_dict`` (its checks);
* **the state's size**: pickled, through ``torch.save``, as JSON;
* **steady state**: samples/s and CPU ms a sample (all threads; steadier than the rate
  on busy shared cores) of (f) ``IrisLoader`` and (g) with ``TRAIN_AUGMENT``, as in
  ``bench_training``, and (f) with ``state_dict()`` taken after every batch, each in a
  child process, the best of ``--rounds`` interleaved rounds (the highest rate, the
  least CPU). With ``--baseline PATH``
  (a checkout without resume support, e.g. the main branch before it) the same child
  code imports that checkout's ``preprocessing`` instead, in the same rounds: the
  ratio is the cost of resume support (goal: none measurable). With ``OPENEDS_BENCH_IN_PROCESS=1``
  (the smoke test) this tree's loops run in this process instead; the baseline's keep their own.

Prints the figures with the load average, and writes them as JSON.

    python -m benchmarks.bench_resume [--frames 64] [--repeat 8] [--epochs 3] [--rounds 3] [--baseline PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch

from benchmarks._common import REPO, in_process, main_behind_the_boundary, run_python_here, write_results
from benchmarks._v2 import build_v2, repeated
from preprocessing.training import IrisLoader

BATCH, THREADS = 64, 2
GOALS = {"first_batch_resumed_over_fresh": 1.2, "state_dict_ms": 1.0}

#: The steady-state loops, run in a child process with ``sys.argv[1]``'s ``preprocessing`` (this tree or
#: the baseline): (f), (g), and (f) taking the state after every batch where the loader has one.
CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import datasets, torch
import preprocessing.training.loader as loader_module
from preprocessing.augment import TRAIN_AUGMENT
from preprocessing.training import IrisLoader
torch.set_num_threads(1)
data = sys.argv[2]
repeat, epochs, batch, threads = (int(arg) for arg in sys.argv[3:7])
rows = datasets.concatenate_datasets([datasets.load_from_disk(data)] * repeat)
def rate(transform, take_state):
    loader = IrisLoader(rows, batch, transform=transform, seed=0, num_threads=threads)
    for _ in range(2):  # warm-up: threads start, slots are allocated and touched
        for batch_ in loader:
            pass
    del batch_
    samples, wall, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for batch_ in loader:
            samples += len(batch_[2])
            if take_state:
                loader.state_dict()
        del batch_
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    loader.close()
    return samples / wall, cpu / samples * 1e3
resumable = hasattr(IrisLoader, "state_dict")
loops = {"f": (None, False), "g": (TRAIN_AUGMENT, False)}
if resumable:
    loops["f_state_every_batch"] = (None, True)
out = {"loader": loader_module.__file__, "resumable": resumable}
for name, (transform, take_state) in loops.items():
    out[name], out[name + "_cpu_ms_a_sample"] = rate(transform, take_state)
print(json.dumps(out))
"""


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def first_batches(data: datasets.Dataset, repeats: int) -> dict:
    """Seconds to a fresh loader's first batch, without a state and after ``load_state_dict`` of a mid-epoch state."""
    with IrisLoader(data, BATCH, seed=0, num_threads=THREADS) as source:
        batches = iter(source)
        for _ in range(max(1, len(source) // 2)):
            next(batches)
        state = source.state_dict()
        del batches
    fresh, resumed = [], []
    for _ in range(repeats):  # interleaved: a busy spell on the shared cores hits both
        for times, resume in ((fresh, False), (resumed, True)):
            loader = IrisLoader(data, BATCH, seed=0, num_threads=THREADS)
            start = time.perf_counter()
            if resume:
                loader.load_state_dict(state)
            batch = next(iter(loader))
            times.append(time.perf_counter() - start)
            del batch
            loader.close()
    return {
        "state": {"epoch": state["epoch"], "consumed": state["consumed"]},
        "fresh_s": min(fresh),
        "resumed_s": min(resumed),
        "fresh_all_s": [round(t, 4) for t in fresh],
        "resumed_all_s": [round(t, 4) for t in resumed],
        "resumed_over_fresh": min(resumed) / min(fresh),
        "load_average": load_average(),
    }


def state_costs(data: datasets.Dataset, calls: int) -> dict:
    """``state_dict()`` and ``load_state_dict``, ms a call, between two batches of a running loop; the state's size."""
    with IrisLoader(data, BATCH, seed=0, num_threads=THREADS) as loader:
        batches = iter(loader)
        next(batches)
        start = time.perf_counter()
        for _ in range(calls):
            state = loader.state_dict()
        taken = (time.perf_counter() - start) / calls
        other = IrisLoader(data, BATCH, seed=0, num_threads=THREADS)
        start = time.perf_counter()
        for _ in range(calls):
            other.load_state_dict(state)
        loaded = (time.perf_counter() - start) / calls
        del batches
    saved = io.BytesIO()
    torch.save(state, saved)
    return {
        "state_dict_ms": taken * 1e3,
        "load_state_dict_ms": loaded * 1e3,
        "bytes": {
            "pickle": len(pickle.dumps(state)),
            "torch_save": len(saved.getvalue()),
            "json": len(json.dumps(state)),
        },
        "state": state,
        "load_average": load_average(),
    }


def steady_in_child(tree: Path, data: Path, args: argparse.Namespace) -> dict:
    """(f), (g) and (f) with a state per batch, samples/s, with ``tree``'s ``preprocessing``."""
    argv = ["-c", CHILD, str(tree), str(data), str(args.repeat), str(args.epochs), str(BATCH), str(THREADS)]
    before = load_average()
    if in_process() and tree == REPO:  # the smoke test: this tree's loader is the one imported here already
        printed = run_python_here(argv)
    else:
        printed = subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, text=True, check=True).stdout
    result = json.loads(printed.strip().splitlines()[-1])
    if not Path(result["loader"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"the child imported {result['loader']}, not the loader of {tree}")
    return {**result, "load_average": [*before, *load_average()]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="synthetic frames to render (default 64)")
    parser.add_argument("--repeat", type=int, default=8, help="times each frame is repeated (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of each steady-state loop (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each loop reports its best")
    parser.add_argument("--repeats", type=int, default=5, help="tries of each first batch (default 5)")
    parser.add_argument("--baseline", type=Path, help="a checkout without resume support, for the before figures")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()
    trees = {"resume": REPO, **({"baseline": args.baseline} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as work:
        data = repeated(build_v2(Path(work), args.frames), args.repeat)
        saved = Path(work) / "v2"  # where build_v2 saved it, for the children
        results = {"first_batch": first_batches(data, args.repeats), "state": state_costs(data, 10_000)}
        rounds: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                rounds[name].append(steady_in_child(tree, saved, args))
    results["steady"] = {name: best(runs) for name, runs in rounds.items()}
    report(results, len(data), args)


def best(runs: list[dict]) -> dict:
    """Each loop's best round (the least disturbed), with every round's figures and load."""
    loops = [key for key in runs[0] if key not in ("loader", "resumable", "load_average")]
    return {
        **{loop: (min if loop.endswith("_cpu_ms_a_sample") else max)(run[loop] for run in runs) for loop in loops},
        "rounds": [{loop: round(run[loop], 1) for loop in loops} for run in runs],
        "rounds_load_average": [run["load_average"] for run in runs],
        "loader": runs[0]["loader"],
    }


def report(results: dict, rows: int, args: argparse.Namespace) -> None:
    first, state, steady = results["first_batch"], results["state"], results["steady"]
    measured = {"first_batch_resumed_over_fresh": first["resumed_over_fresh"], "state_dict_ms": state["state_dict_ms"]}
    goals = {
        name: {"goal": GOALS[name], "measured": value, "met": value <= GOALS[name]} for name, value in measured.items()
    }
    if "baseline" in steady:
        for loop in ("f", "g", "f_cpu_ms_a_sample", "g_cpu_ms_a_sample"):
            ratio = steady["resume"][loop] / steady["baseline"][loop]
            goals[f"{loop}_resume_over_baseline"] = {"goal": "no measurable change", "measured": ratio}
    load = "/".join(f"{x:.2f}" for x in first["load_average"])
    print(
        f"first batch: fresh {first['fresh_s'] * 1e3:.1f} ms, after load_state_dict "
        f"{first['resumed_s'] * 1e3:.1f} ms ({first['resumed_over_fresh']:.2f}x), load {load}"
    )
    sizes = ", ".join(f"{how} {n} B" for how, n in state["bytes"].items())
    print(
        f"state_dict() {state['state_dict_ms'] * 1e3:.1f} us, load_state_dict {state['load_state_dict_ms'] * 1e3:.1f} "
        f"us; the state: {sizes}"
    )
    for name, loops in steady.items():
        names = [loop for loop in loops if loop in ("f", "g", "f_state_every_batch")]
        figures = ", ".join(
            f"({loop}) {loops[loop]:.0f}/s {loops[loop + '_cpu_ms_a_sample']:.2f} cpu-ms" for loop in names
        )
        loads = "; ".join("/".join(f"{x:.2f}" for x in r) for r in loops["rounds_load_average"])
        print(f"steady, {name}: {figures} a sample (load before/after each round {loads})")
    for goal, g in goals.items():
        met = "" if "met" not in g else (" met" if g["met"] else " NOT met")
        print(f"goal {goal}: {g['measured']:.3f} (goal {g['goal']}){met}")
    path = write_results(
        "resume",
        {
            "rows": rows,
            "batch_size": BATCH,
            "threads": THREADS,
            "timed_epochs": args.epochs,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "baseline": None if args.baseline is None else str(args.baseline),
            "results": results,
            "goals": goals,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main_behind_the_boundary(__spec__.name, main)
