"""Training-side read speed: VisionAssist's v1 loader against IrisDataset on v2.

Renders a synthetic sample, builds it as v2 (the builder) and as v1 (raw image, flat
lists), both memory-mapped on disk and repeated to a few hundred rows, then times in
this one process:

  (a) the v1 path as the old training code ran it: default Python format, reshape,
      gamma + CLAHE on the CPU, ToTensor + Normalize;
  (b) IrisDataset on v2, no augmentation;
  (c) IrisDataset on v2 with TRAIN_AUGMENT;
  (d) (b) in a DataLoader, 2 workers, batch 64 (wall clock, after a warm-up epoch);
  (e) for reference, IrisDataset on v1 (fast read, gamma + CLAHE on the CPU).

(a), (b), (c) and (e) run with one torch and one OpenCV thread, so their rate is per
core. Prints samples/s and ratios to (a), and writes them as JSON.

    python -m benchmarks.bench_training [--frames 64] [--repeat 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import datasets
import numpy as np
import torch

from benchmarks._common import write_results
from openeds import raw
from openeds.schema import HEIGHT, WIDTH
from openeds.synthetic import write_sample
from openeds_precomputed import OpenEDSPrecomputed
from preprocessing.augment import TRAIN_AUGMENT
from preprocessing.training import IrisDataset
from tests.v1data import v1_split

GOAL_RATIO, GOAL_PER_CORE = 50.0, 1500.0

def build_data(work: Path, frames: int, repeat: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(v1, v2) train splits of ``frames`` synthetic frames, each repeated ``repeat`` times."""
    write_sample(work / "raw", {"train": frames})
    builder = OpenEDSPrecomputed(config_name="pupil", data_dir=str(work / "raw"), cache_dir=str(work / "cache"))
    builder.download_and_prepare()
    v2 = builder.as_dataset(split="train")

    pairs = raw.list_pairs(raw.find_split_dirs(work / "raw")["train"]).pairs
    v1_split(pairs, "pupil").save_to_disk(str(work / "v1"))
    v1 = datasets.load_from_disk(str(work / "v1"))  # memory-mapped, like load_dataset's output
    return (datasets.concatenate_datasets([v1] * repeat), datasets.concatenate_datasets([v2] * repeat))


_GAMMA_TABLE = 255.0 * np.linspace(0, 1, 256) ** 0.8
_CLAHE = cv2.createCLAHE(clipLimit=1.5, tileGridSize=(8, 8))


def old_v1_item(dataset: datasets.Dataset, index: int) -> tuple:
    """VisionAssist's ``IrisDataset.__getitem__`` on v1 rows, without augmentation."""
    sample = dataset[index]  # the default Python format: every array as nested lists
    image = np.array(sample["image"], dtype=np.uint8).reshape(HEIGHT, WIDTH)
    label = np.array(sample["label"], dtype=np.uint8).reshape(HEIGHT, WIDTH)
    spatial_weights = np.array(sample["spatial_weights"], dtype=np.float32).reshape(HEIGHT, WIDTH)
    dist_map = np.array(sample["dist_map"], dtype=np.float32).reshape(2, HEIGHT, WIDTH)
    image = _CLAHE.apply(np.uint8(cv2.LUT(image, _GAMMA_TABLE)))
    tensor = torch.from_numpy(image[None].copy()).float().div(255).sub(0.5).div(0.5)  # ToTensor + Normalize
    return tensor, torch.from_numpy(label.astype(np.int64)), sample["filename"], spatial_weights, dist_map


def time_items(get: Callable[[int], object], rows: int, samples: int) -> dict[str, float]:
    """Read ``samples`` items round-robin over ``rows`` rows, after one warm-up read."""
    get(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(samples):
        get(i % rows)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "samples": samples,
        "wall_s": wall,
        "cpu_s": cpu,
        "samples_per_s": samples / wall,
        "samples_per_cpu_s": samples / cpu,
    }


def time_loader(dataset: IrisDataset, epochs: int) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=2, persistent_workers=True)
    for _ in loader:  # warm-up: start the workers, fault the pages in
        pass
    wall = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            pass
    wall = time.perf_counter() - wall
    samples = epochs * len(dataset)
    image, label, _, weights, dist = dataset[0]
    payload = sum(t.numel() * t.element_size() for t in (image, label, weights, dist))
    return {"samples": samples, "wall_s": wall, "samples_per_s": samples / wall, "mb_per_sample": payload / 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="synthetic frames to render (default 64)")
    parser.add_argument("--repeat", type=int, default=4, help="times each frame is repeated (default 4)")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as work:
        v1, v2 = build_data(Path(work), args.frames, args.repeat)
        rows = len(v2)
        plain = IrisDataset(v2, split="train")
        augmented = IrisDataset(v2, split="train", transform=TRAIN_AUGMENT, seed=0)
        results = {
            "a_old_v1": time_items(lambda i: old_v1_item(v1, i), rows, samples=min(rows, 48)),
            "b_v2": time_items(plain.__getitem__, rows, samples=4 * rows),
            "c_v2_augmented": time_items(augmented.__getitem__, rows, samples=2 * rows),
            "d_v2_dataloader_2_workers": time_loader(plain, epochs=2),
            "e_v1_iris_dataset": time_items(IrisDataset(v1, split="train").__getitem__, rows, samples=rows),
        }

    base = results["a_old_v1"]["samples_per_s"]
    ratios = {name: r["samples_per_s"] / base for name, r in results.items()}
    per_core_b = results["b_v2"]["samples_per_cpu_s"]
    goals = {
        "b_over_a": {"goal": GOAL_RATIO, "measured": ratios["b_v2"], "met": ratios["b_v2"] >= GOAL_RATIO},
        "b_per_core": {"goal": GOAL_PER_CORE, "measured": per_core_b, "met": per_core_b >= GOAL_PER_CORE},
    }
    for name, r in results.items():
        cpu = f", {r['samples_per_cpu_s']:8.1f}/cpu-s" if "samples_per_cpu_s" in r else ""
        print(f"{name:28s} {r['samples_per_s']:8.1f} samples/s{cpu}   x{ratios[name]:.1f} vs (a)")
    for goal, g in goals.items():
        print(f"goal {goal}: {g['measured']:.1f} (goal {g['goal']:g}) {'met' if g['met'] else 'NOT met'}")
    path = write_results(
        "training",
        {
            "rows": rows,
            "cpus": os.cpu_count(),
            "versions": {"torch": torch.__version__, "datasets": datasets.__version__, "opencv": cv2.__version__},
            "results": results,
            "ratio_to_a": ratios,
            "goals": goals,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
