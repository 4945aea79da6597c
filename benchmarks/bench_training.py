"""Training-side read speed: the old v1 loader, IrisDataset, and the feeds built on it.

Renders a synthetic sample, builds it as v2 (the builder) and as v1 (raw image, flat
lists), both memory-mapped on disk and repeated to a few hundred rows, then times:

  (a) the v1 path as the old training code ran it: default Python format, reshape,
      gamma + CLAHE on the CPU, ToTensor + Normalize;
  (b) IrisDataset on v2, no augmentation;
  (c) IrisDataset on v2 with TRAIN_AUGMENT;
  (e) for reference, IrisDataset on v1 (fast read, gamma + CLAHE on the CPU);

and the feeds, batch 64, into model-ready tensors on the CPU device (after two warm-up
epochs; each in a child process of its own, which reports its peak RSS):

  (d)  DataLoader(IrisDataset), 2 workers;
  (d') (d) with TRAIN_AUGMENT;
  (f)  IrisLoader, 2 threads;
  (g)  (f) with TRAIN_AUGMENT;
  (h)  the copy limit: one thread copying each batch's stored bytes (uint8 image and
       label, float32 weights and distance maps) into a slot already touched;
  (f_wire) (f) in the wire format: uint8 image and label, as the batches would go to a
       GPU, before they are widened there;
  (i)  the alternative to (f) that was not kept: torchdata.nodes'
       ParallelMapper(method="thread"), each thread gathering whole batches into the
       same pool (only when torchdata is installed).

(a), (b), (c) and (e) run with one torch and one OpenCV thread, so their rate is per
core. The feeds run in interleaved rounds, and each reports its least disturbed round
(the cores are shared). Prints samples/s, the ratios against the goals and the load
average, and writes them as JSON (results/training.json).

**On a device** (``--device cuda``; ``--device cpu`` runs the same code on the CPU, which
is how the smoke test covers it) it times instead the feeds model-ready on the device,
without and with a model step beside them, and the fraction of the time the GPU waits
for data: benchmarks/training_on_device.py, results/training_on_<device>.json.

    python -m benchmarks.bench_training [--frames 64] [--repeat 8] [--epochs 3] [--rounds 3]
    python -m benchmarks.bench_training --device cuda --frames 64 --repeat 16 --rounds 2 --workers 4 8 16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import datasets
import numpy as np
import torch

from benchmarks._common import main_behind_the_boundary, run_in_child, status_mb, write_results
from benchmarks._v2 import build_v2, repeated
from benchmarks.training_on_device import DEVICE_BATCH, DEVICE_HELP, DEVICE_WORKERS, MODEL_WIDTH, device_main
from openeds import raw
from openeds.schema import HEIGHT, WIDTH
from preprocessing.augment import TRAIN_AUGMENT
from preprocessing.training import IrisDataset, IrisLoader
from preprocessing.training.buffers import WIRE, HostBatches, Pool, Slot, lease, slot_bytes
from preprocessing.training.source import MapRows

GOAL_RATIO, GOAL_PER_CORE = 50.0, 1500.0
#: (f) / (d), (g) / (d'), (f) / (h)
FEED_GOALS = {"f_over_d": 8.0, "g_over_d_aug": 4.0, "f_over_h": 0.5}
BATCH, THREADS = 64, 2


def build_data(work: Path, frames: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(v1, v2) train splits of ``frames`` synthetic frames, memory-mapped on disk under ``work``."""
    # Imported here: it brings SciPy (0.2-0.4 s), which the feed children and the device run never use.
    from tests.v1data import v1_split

    v2 = build_v2(work, frames)
    pairs = raw.list_pairs(raw.find_split_dirs(work / "raw")["train"]).pairs
    v1_split(pairs, "pupil").save_to_disk(str(work / "v1"))
    return datasets.load_from_disk(str(work / "v1")), v2


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


# --- the feeds, each in a child process ----------------------------------------------------


def time_epochs(batches: Callable[[], Iterable], epochs: int) -> dict:
    """Samples/s over ``epochs`` passes after two warm-up passes, and the RSS after each pass."""
    for _ in range(2):  # warm-up: threads or workers start, buffers are allocated and touched
        for _ in batches():
            pass
    rss, samples = [round(status_mb("VmRSS"))], 0
    wall = time.perf_counter()
    for _ in range(epochs):
        for batch in batches():
            samples += len(batch[2])
        del batch
        rss.append(round(status_mb("VmRSS")))
    wall = time.perf_counter() - wall
    return {"samples": samples, "wall_s": wall, "samples_per_s": samples / wall, "rss_mb_after_each_epoch": rss}


def dataloader(v2: datasets.Dataset, augment: bool, epochs: int) -> dict:
    dataset = IrisDataset(v2, split="train", transform=TRAIN_AUGMENT if augment else None, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=THREADS, persistent_workers=True)
    return time_epochs(lambda: loader, epochs)


def iris_loader(v2: datasets.Dataset, augment: bool, epochs: int, wire: bool = False) -> dict:
    loader = IrisLoader(v2, BATCH, transform=TRAIN_AUGMENT if augment else None, seed=0, num_threads=THREADS)
    if wire:  # the batches as they would go to a GPU, before they are widened there
        loader._batches = HostBatches(WIRE)
    result = time_epochs(lambda: loader, epochs)
    result["pool_slots"], result["pool_peak_slots"] = loader._pool.allocated, loader._pool.peak
    loader.close()
    return result


def copy_limit(v2: datasets.Dataset, epochs: int) -> dict:
    """One thread copying each batch's stored bytes into a wire slot whose pages are already touched."""
    rows, slot = MapRows(v2), Slot(BATCH, 2, WIRE, pinned=False)
    for array in slot.arrays:
        array.fill(0)

    def batches() -> Iterable:
        for start in range(0, len(v2), BATCH):
            names = []
            for j, row in enumerate(range(start, min(start + BATCH, len(v2)))):
                sample, name = rows.read(row)
                slot.write(j, sample)
                names.append(name)
            yield None, None, names

    return time_epochs(batches, epochs)


def torchdata_feed(v2: datasets.Dataset, epochs: int) -> dict:
    """(f) built from torchdata.nodes: ParallelMapper threads each gather a whole batch into the same pool."""
    try:
        import torchdata.nodes as tn
    except ImportError:
        return {"skipped": "torchdata is not installed"}
    dataset = IrisDataset(v2, split="train")
    # up to THREADS batches in flight or queued, one handed out, the one before it
    pool = Pool(lambda: Slot(BATCH, 2, (np.float32, np.int64), pinned=False), keep=THREADS + 2)

    def gather(rows: np.ndarray) -> tuple:
        slot, names = pool.take(), []
        for j, row in enumerate(rows):
            sample, name = dataset.sample(int(row))
            slot.write(j, sample)
            names.append(name)
        return slot, len(rows), names

    def batches() -> Iterable:
        order = np.arange(len(v2))
        source = tn.IterableWrapper([order[i : i + BATCH] for i in range(0, len(order), BATCH)])
        node = tn.ParallelMapper(source, gather, num_workers=THREADS, method="thread", max_concurrent=THREADS)
        for slot, n, names in tn.Loader(node):
            image, label, weights, dist = lease(slot, n, pool)
            yield image, label, names, weights, dist

    result = time_epochs(batches, epochs)
    result["pool_slots"], result["pool_peak_slots"] = pool.allocated, pool.peak
    return result


FEEDS = {
    "d_dataloader_2_workers": lambda v2, epochs: dataloader(v2, False, epochs),
    "f_iris_loader_2_threads": lambda v2, epochs: iris_loader(v2, False, epochs),
    "d_aug_dataloader_2_workers_augmented": lambda v2, epochs: dataloader(v2, True, epochs),
    "g_iris_loader_augmented": lambda v2, epochs: iris_loader(v2, True, epochs),
    "h_copy_limit_1_thread": copy_limit,
    "f_wire_iris_loader_wire_format": lambda v2, epochs: iris_loader(v2, False, epochs, wire=True),
    "i_torchdata_parallel_mapper": torchdata_feed,
}


def run_child(name: str, data: str, repeat: int, epochs: int) -> dict:
    """Run one feed in this (child) process; its result, peak RSS and load average as JSON on stdout."""
    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    v2 = repeated(datasets.load_from_disk(data), repeat)
    load = os.getloadavg()
    result = FEEDS[name](v2, epochs)
    result["load_average"] = [round(x, 2) for x in (*load, *os.getloadavg())]
    result["peak_rss_mb"] = round(status_mb("VmHWM"))
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # DataLoader workers, once joined
    if workers:
        result["largest_worker_peak_rss_mb"] = round(workers)
    print(json.dumps(result))
    return result


def feed_in_child(name: str, data: Path, repeat: int, epochs: int) -> dict:
    args = ("--child", name, "--data", str(data), "--repeat", str(repeat), "--epochs", str(epochs))
    return run_in_child("benchmarks.bench_training", *args)


def positive(text: str) -> int:
    """An argparse type: an int of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive int")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="synthetic frames to render (default 64)")
    parser.add_argument("--repeat", type=int, default=8, help="times each frame is repeated (default 8)")
    parser.add_argument("--epochs", type=positive, default=3, help="timed epochs of each feed (default 3)")
    parser.add_argument(
        "--rounds", type=positive, default=3, help="rounds of the feeds; each reports its best (default 3)"
    )
    parser.add_argument(
        "--device", help=f"time the feeds model-ready on this device beside a model step instead: {DEVICE_HELP}"
    )
    device_only = parser.add_argument_group("with --device")
    device_only.add_argument("--batch-size", type=positive, help=f"rows per batch (default {DEVICE_BATCH})")
    device_only.add_argument(
        "--workers", type=positive, nargs="+", help="DataLoader workers and IrisLoader threads, each tried (default 4)"
    )
    device_only.add_argument("--width", type=positive, help=f"the model's first channels (default {MODEL_WIDTH})")
    parser.add_argument("--child", choices=list(FEEDS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.data, args.repeat, args.epochs)
        return
    given = [f"--{key.replace('_', '-')}" for key in ("batch_size", "workers", "width") if getattr(args, key)]
    if args.device is not None:
        args.batch_size, args.width = args.batch_size or DEVICE_BATCH, args.width or MODEL_WIDTH
        args.workers = args.workers or list(DEVICE_WORKERS)
        device_main(args)
        return
    if given:
        verb = "go" if len(given) > 1 else "goes"
        parser.error(f"{' and '.join(given)} {verb} with --device; the CPU feeds use batch {BATCH}, {THREADS} threads")
    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as work:
        v1_base, v2_base = build_data(Path(work), args.frames)
        v1, v2 = repeated(v1_base, args.repeat), repeated(v2_base, args.repeat)
        rows = len(v2)
        plain = IrisDataset(v2, split="train")
        augmented = IrisDataset(v2, split="train", transform=TRAIN_AUGMENT, seed=0)
        load_before = os.getloadavg()
        results = {
            "a_old_v1": time_items(lambda i: old_v1_item(v1, i), rows, samples=min(rows, 48)),
            "b_v2": time_items(plain.__getitem__, rows, samples=2 * rows),
            "c_v2_augmented": time_items(augmented.__getitem__, rows, samples=rows),
            "e_v1_iris_dataset": time_items(IrisDataset(v1, split="train").__getitem__, rows, samples=rows // 2),
        }
        for result in results.values():
            result["load_average"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
        rounds: dict[str, list[dict]] = {name: [] for name in FEEDS}
        for _ in range(args.rounds):  # interleaved, so that a busy spell on shared cores hits every feed
            for name in FEEDS:
                if name == "i_torchdata_parallel_mapper" and importlib.util.find_spec("torchdata") is None:
                    rounds[name].append({"skipped": "torchdata is not installed"})  # no process started to say so
                    continue
                rounds[name].append(feed_in_child(name, Path(work) / "v2", args.repeat, args.epochs))
        for name, runs in rounds.items():
            results[name] = best_round(runs)

    report(results, rows, args)


def best_round(runs: list[dict]) -> dict:
    """The least disturbed round (highest rate), with every round's rate and load, and the highest peak RSS."""
    if "skipped" in runs[0]:
        return runs[0]
    best = dict(max(runs, key=lambda r: r["samples_per_s"]))
    best["rounds_samples_per_s"] = [round(r["samples_per_s"], 1) for r in runs]
    best["rounds_load_average"] = [r["load_average"] for r in runs]
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return best


def report(results: dict, rows: int, args: argparse.Namespace) -> None:
    rate = {name: r.get("samples_per_s") for name, r in results.items()}
    base = rate["a_old_v1"]
    per_core_b = results["b_v2"]["samples_per_cpu_s"]
    measured = {
        "b_over_a": rate["b_v2"] / base,
        "b_per_core": per_core_b,
        "f_over_d": rate["f_iris_loader_2_threads"] / rate["d_dataloader_2_workers"],
        "g_over_d_aug": rate["g_iris_loader_augmented"] / rate["d_aug_dataloader_2_workers_augmented"],
        "f_over_h": rate["f_iris_loader_2_threads"] / rate["h_copy_limit_1_thread"],
    }
    targets = {"b_over_a": GOAL_RATIO, "b_per_core": GOAL_PER_CORE, **FEED_GOALS}
    goals = {k: {"goal": targets[k], "measured": v, "met": v >= targets[k]} for k, v in measured.items()}
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:38s} skipped: {r['skipped']}")
            continue
        cpu = f", {r['samples_per_cpu_s']:7.1f}/cpu-s" if "samples_per_cpu_s" in r else ""
        memory = f", peak RSS {r['peak_rss_mb']:,} MB" if "peak_rss_mb" in r else ""
        memory += f" (+ worker {r['largest_worker_peak_rss_mb']:,} MB)" if "largest_worker_peak_rss_mb" in r else ""
        load = "/".join(f"{x:.2f}" for x in r["load_average"][:3])
        rounds = r.get("rounds_samples_per_s")
        spread = f" (rounds {', '.join(f'{x:.0f}' for x in rounds)})" if rounds else ""
        print(f"{name:38s} {r['samples_per_s']:8.1f} samples/s{spread}{cpu}{memory}, load {load}")
    for goal, g in goals.items():
        print(f"goal {goal}: {g['measured']:.2f} (goal {g['goal']:g}) {'met' if g['met'] else 'NOT met'}")
    path = write_results(
        "training",
        {
            "rows": rows,
            "batch_size": BATCH,
            "threads_or_workers": THREADS,
            "timed_epochs": args.epochs,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "slot_mb": {"model_ready": slot_bytes(BATCH, 2) / 1e6, "wire": slot_bytes(BATCH, 2, WIRE) / 1e6},
            "versions": {"torch": torch.__version__, "datasets": datasets.__version__, "opencv": cv2.__version__},
            "results": results,
            "ratio_to_a": {name: r / base for name, r in rate.items() if r},
            "goals": goals,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main_behind_the_boundary(__spec__.name, main)
