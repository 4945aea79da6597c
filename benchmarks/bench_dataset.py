"""IrisDataset's items/s on shared cores: torch's default threads beside a busy process, against one thread.

``IrisDataset`` turns each image into a normalised float32 tensor. Done with torch's elementwise ops,
each op on a 400 x 640 frame is split over torch's intra-op threads; when another process keeps a
core busy, every op waits for a thread that is not running, and the dataset lost two thirds of its
speed (issue 24: 766 items/s against 2,103 with ``torch.set_num_threads(1)``). It now looks each
pixel up in a 256-entry table on the calling thread (``preprocessing.training.items``).

All in this one process, interleaved rounds (the cores are shared with other work), each mode the
best of its rounds, items of a synthetic v2 ``pupil`` split without augmentation:

  (1) ``one_thread``: ``torch.set_num_threads(1)``, nothing else started (the reference);
  (2) ``default``: torch's default thread count, nothing else started;
  (3) ``default_busy``: the default thread count, with ``python -c "while True: pass"`` running beside it;
  (4) ``torch_ops_busy``: (3) with the former normalisation (torch's elementwise ops), the baseline of the fix.

The goal: (3) keeps at least half of (1)'s speed. Prints items/s, the ratios, the load average
around each mode and ``uptime``'s, and writes them as JSON (results/dataset.json).

    python -m benchmarks.bench_dataset [--frames 16] [--repeat 16] [--items 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import datasets
import numpy as np
import torch

from benchmarks._common import write_results
from benchmarks._v2 import build_v2, repeated
from preprocessing.training import IrisDataset, items

GOAL = 0.5
MODES = ("one_thread", "default", "default_busy", "torch_ops_busy")


def torch_ops(image: np.ndarray) -> torch.Tensor:
    """The normalisation before the table: ``ToTensor`` + ``Normalize([0.5], [0.5])`` as torch's elementwise ops."""
    return torch.tensor(np.ascontiguousarray(image)).unsqueeze(0).float().div_(255).sub_(0.5).div_(0.5)


@contextlib.contextmanager
def busy_process(on: bool) -> Iterator[None]:
    """A process spinning on one core beside this one, for as long as the block runs."""
    if not on:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # scheduled and spinning before the timing starts
        yield
    finally:
        busy.kill()
        busy.wait()


@contextlib.contextmanager
def normalisation(ops: Callable[[np.ndarray], torch.Tensor] | None) -> Iterator[None]:
    """Items made with ``ops`` instead of the table (``items.to_item`` looks the function up at each call)."""
    if ops is None:
        yield
        return
    saved = items.to_normalized_tensor
    items.to_normalized_tensor = ops
    try:
        yield
    finally:
        items.to_normalized_tensor = saved


def time_mode(dataset: IrisDataset, mode: str, count: int, default_threads: int) -> dict:
    """Items/s of ``dataset[i]`` over ``count`` items in ``mode``, and the 1/5/15-minute load before and after."""
    torch.set_num_threads(1 if mode == "one_thread" else default_threads)
    rows = len(dataset)
    with busy_process(mode.endswith("_busy")), normalisation(torch_ops if mode.startswith("torch_ops") else None):
        dataset[0]  # warm-up
        load = os.getloadavg()
        wall = time.perf_counter()
        for i in range(count):
            dataset[i % rows]
        wall = time.perf_counter() - wall
        after = os.getloadavg()
    return {
        "items": count,
        "wall_s": wall,
        "items_per_s": count / wall,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in (*load, *after)],
    }


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        return f"uptime unavailable: {e}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="synthetic frames to render (default 16)")
    parser.add_argument("--repeat", type=int, default=16, help="times each frame is repeated (default 16)")
    parser.add_argument("--items", type=int, default=1024, help="items read per mode and round (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each mode reports its best")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()
    default_threads = torch.get_num_threads()
    cv2_threads = cv2.getNumThreads()
    with tempfile.TemporaryDirectory() as work:
        dataset = IrisDataset(repeated(build_v2(Path(work), args.frames), args.repeat), split="train")
        before = uptime()
        rounds: dict[str, list[dict]] = {mode: [] for mode in MODES}
        try:
            for _ in range(args.rounds):
                for mode in MODES:
                    rounds[mode].append(time_mode(dataset, mode, args.items, default_threads))
        finally:
            torch.set_num_threads(default_threads)
        after = uptime()
    results = {}
    for mode, runs in rounds.items():
        best = dict(max(runs, key=lambda r: r["items_per_s"]))
        best["rounds_items_per_s"] = [round(r["items_per_s"], 1) for r in runs]
        best["rounds_load_average"] = [r["load_average"] for r in runs]
        results[mode] = best
    rate = {mode: r["items_per_s"] for mode, r in results.items()}
    ratio = rate["default_busy"] / rate["one_thread"]
    for mode, r in results.items():
        spread = ", ".join(f"{x:.0f}" for x in r["rounds_items_per_s"])
        load = "/".join(f"{x:.2f}" for x in r["load_average"][:3])
        print(
            f"{mode:15s} {r['items_per_s']:8.1f} items/s (rounds {spread}), {r['torch_threads']} torch threads, "
            f"load {load}"
        )
    print(f"default_busy / one_thread: {ratio:.2f} (goal {GOAL:g}) {'met' if ratio >= GOAL else 'NOT met'}")
    print(f"torch_ops_busy / one_thread: {rate['torch_ops_busy'] / rate['one_thread']:.2f} (the former path)")
    print(f"uptime before: {before}\nuptime after:  {after}")
    path = write_results(
        "dataset",
        {
            "rows": len(dataset),
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "torch_default_threads": default_threads,
            "opencv_threads": cv2_threads,
            "versions": {"torch": torch.__version__, "opencv": cv2.__version__},
            "uptime": {"before": before, "after": after},
            "results": results,
            "goal": {"goal": GOAL, "measured": ratio, "met": ratio >= GOAL},
            "torch_ops_busy_over_one_thread": rate["torch_ops_busy"] / rate["one_thread"],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
