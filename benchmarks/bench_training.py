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
is how the smoke test covers it) it times instead, in one process, batches model-ready on
the device, ``--batch-size`` rows (default 64), without and with a model step beside them:

  (D<N>) ``DataLoader(IrisDataset, num_workers=N, pin_memory=True)``, each tensor moved with
         ``.to(device, non_blocking=True)``, as VisionAssist's scripts do (workers kept
         across epochs, which only helps it);
  (L<N>) ``IrisLoader(device=device, num_threads=N)``: its batches arrive on the device,
         the uint8 image and label widened there;
  (W)    the copy limit of the wire bytes: one batch's pinned uint8 image and label and
         float32 weights and distance maps, already in memory, copied non-blocking into
         the same device buffers again and again, then widened as (L) widens them;
  (R)    the model step alone, on one batch kept on the device: the ceiling of the rows
         with the model, and a check of the wait fraction, which should be near 0 there.

N takes each value of ``--workers`` (default 4). The model step is the forward pass,
backward pass and Adam step of a small convolutional encoder-decoder (``--width``
channels), with a per-pixel cross entropy weighted by ``1 + spatial_weights`` plus a
surface term on ``dist_map``, so every tensor of the batch is used.

**The fraction of time the GPU waits for data** is ``1 - model_s / wall_s``: ``wall_s``
is the wall time of the timed epochs (the device synchronised before and after);
``model_s`` is the sum, over the steps, of the time between two CUDA events recorded on
the stream just before and just after each model step, so it is measured on the GPU,
from when the GPU reaches the step's first kernel to when it ends its last, however far
ahead the CPU has run. What remains is the time the GPU spends on anything but the
model: idle while the CPU gathers rows, and copying and widening the batch (on the same
stream). Nothing in the loop waits for the GPU between steps, as in training without
per-step logging. On the CPU, which runs the step synchronously, ``model_s`` is
``perf_counter`` around each step. Each feed runs 1 warm-up epoch, then ``--epochs``,
in ``--rounds`` interleaved rounds, reporting the best; results/training_on_<device>.json.
Without CUDA, ``--device cuda`` is one ``error:`` line naming the reason, exit status 1.

    python -m benchmarks.bench_training [--frames 64] [--repeat 8] [--epochs 3] [--rounds 3]
    python -m benchmarks.bench_training --device cuda --frames 64 --repeat 16 --rounds 2 --workers 4 8 16
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import datasets
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import run_in_child, status_mb, write_results
from openeds import raw
from openeds.schema import HEIGHT, WIDTH
from openeds.synthetic import write_sample
from openeds_precomputed import OpenEDSPrecomputed
from preprocessing.augment import TRAIN_AUGMENT
from preprocessing.training import IrisDataset, IrisLoader
from preprocessing.training.buffers import IMAGE_TABLE, WIRE, HostBatches, Pool, Slot, lease, slot_bytes
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


def build_v2(work: Path, frames: int) -> datasets.Dataset:
    """The v2 train split of ``frames`` synthetic frames (raw files under ``work/raw``), saved to ``work/v2``."""
    write_sample(work / "raw", {"train": frames})
    builder = OpenEDSPrecomputed(config_name="pupil", data_dir=str(work / "raw"), cache_dir=str(work / "cache"))
    builder.download_and_prepare()
    builder.as_dataset(split="train").save_to_disk(str(work / "v2"))
    return datasets.load_from_disk(str(work / "v2"))


def repeated(dataset: datasets.Dataset, repeat: int) -> datasets.Dataset:
    return datasets.concatenate_datasets([dataset] * repeat)


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


# --- on a device: the feeds model-ready on the device, beside a model step ---------------------

#: what ``--device`` takes
DEVICE_HELP = "cpu or cuda (cuda:N for the N-th GPU)"
#: defaults of the device run's own options
DEVICE_BATCH, DEVICE_WORKERS, MODEL_WIDTH = 64, (4,), 16
#: untimed epochs before each timed run: workers, threads and buffers start, cuDNN picks its kernels
DEVICE_WARMUP_EPOCHS = 1

#: the fields of the device run's description that its report prints first
DEVICE_ABOUT = ("device", "gpu", "gpu_memory_gb", "gpu_peak_allocated_gb", "torch", "cuda", "cudnn", "cpus")
DEVICE_ABOUT += ("dev_shm_free_gb",)

#: image, label, spatial_weights, dist_map, model-ready on the device
Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def cuda_problem(device: torch.device, build: str | None, visible: int, reason: str = "") -> str | None:
    """Why ``device`` (a ``cuda`` device) cannot run here, as the end of an error line, or ``None``.

    ``build`` is the CUDA (or ROCm) version torch was built for (``None``: a CPU-only build),
    ``visible`` the GPUs torch sees, ``reason`` what torch warned while looking for them.
    """
    if build is None:
        return (
            f"CUDA is not available: torch {torch.__version__} is a CPU-only build; install a CUDA build of torch "
            "on a machine with a GPU, or pass --device cpu"
        )
    if visible == 0:
        seen = f": {reason}" if reason else " (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
        return f"CUDA is not available: torch {torch.__version__} is a build for CUDA {build}; no GPU is visible{seen}"
    if device.index is not None and device.index >= visible:
        return f"only {visible} GPU(s) are visible, cuda:0 to cuda:{visible - 1}"
    return None


def open_device(name: str) -> torch.device:
    """``--device`` as a device this run can use; otherwise exit with one ``error:`` line saying why."""
    try:
        device = torch.device(name)
    except RuntimeError:
        sys.exit(f"error: --device {name!r} is not a torch device; expected {DEVICE_HELP}")
    if device.type not in ("cpu", "cuda"):
        sys.exit(f"error: --device {name!r}: this benchmark runs on {DEVICE_HELP}, not {device.type}")
    if device.type == "cuda":
        # torch warns (on stderr) when it finds no driver; that warning becomes part of the one line instead
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        reason = " ".join(str(caught[0].message).split()) if caught else ""
        build = torch.version.cuda or getattr(torch.version, "hip", None)
        if problem := cuda_problem(device, build, visible, reason):
            sys.exit(f"error: --device {name}: {problem}")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)  # the events and IrisLoader's copies use this device's current stream
    return device


def synchronize(device: torch.device) -> None:
    """Wait for everything queued on ``device`` (the CPU runs everything at once)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wait_fraction(model_s: float, wall_s: float) -> float:
    """The fraction of the wall time in which the device does not run the model step: ``1 - model_s / wall_s``.

    Clipped to [0, 1]: event timestamps and ``perf_counter`` are different clocks.
    """
    return min(1.0, max(0.0, 1.0 - model_s / wall_s))


class StepClock:
    """The time the device spends in the model steps (see the module docstring).

    On CUDA, two events around each step on the current stream; their elapsed times are
    read once, after the loop has synchronised, so timing never makes the CPU wait.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._cpu_s = 0.0
        self.steps = 0

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        self.steps += 1
        if self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
        else:
            start_s = time.perf_counter()
            yield
            self._cpu_s += time.perf_counter() - start_s

    def seconds(self) -> float:
        """The steps' total time; on CUDA only once the device has been synchronised."""
        return self._cpu_s + sum(start.elapsed_time(end) for start, end in self._events) / 1000


def small_net(classes: int, width: int) -> torch.nn.Module:
    """A small convolutional encoder-decoder: full resolution, one stride-2 stage, back up to full resolution.

    Small enough that the GPU's step is short, so that the feed decides how often it waits;
    large enough to be real convolution work at 400 x 640 (a few hundred GFLOP a batch of 64).
    """
    wide = 2 * width
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1),
        torch.nn.BatchNorm2d(width),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(width, wide, 3, stride=2, padding=1),
        torch.nn.BatchNorm2d(wide),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(wide, wide, 3, padding=1),
        torch.nn.BatchNorm2d(wide),
        torch.nn.ReLU(inplace=True),
        torch.nn.ConvTranspose2d(wide, width, 2, stride=2),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(width, classes, 1),
    )


class ModelStep:
    """One training step of :func:`small_net` on a batch: forward, backward and an Adam step.

    The loss uses every tensor of the batch, as RITnet's does: a per-pixel cross entropy
    weighted by ``1 + spatial_weights``, plus a surface term, the mean of the softmax times
    ``dist_map``. Nothing reads the loss back, so nothing waits for the device.
    """

    def __init__(self, classes: int, width: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.model = small_net(classes, width).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, weights: torch.Tensor, dist: torch.Tensor) -> None:
        logits = self.model(image)
        cross_entropy = F.cross_entropy(logits, label, reduction="none")
        loss = (cross_entropy * (1 + weights)).mean() + (logits.softmax(1) * dist).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class DataLoaderFeed:
    """(D<N>) ``DataLoader(IrisDataset, num_workers=N, pin_memory=True)``, then ``.to(device, non_blocking=True)``.

    Its batches are model-ready on the host already (float32 image, int64 label: 6.1 MB a
    sample over the bus against the 3.6 MB of the wire format). Memory is pinned only for
    CUDA (elsewhere torch warns that it cannot pin). The workers are kept across epochs, so
    that the short epochs here do not charge their start-up.
    """

    def __init__(self, v2: datasets.Dataset, device: torch.device, batch: int, workers: int) -> None:
        self.device = device
        self._loader: torch.utils.data.DataLoader | None = torch.utils.data.DataLoader(
            IrisDataset(v2, split="train", seed=0), batch_size=batch, shuffle=True, drop_last=True,
            num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=True,
        )  # fmt: skip

    def batches(self) -> Iterator[Tensors]:
        for image, label, _names, weights, dist in self._loader:
            yield tuple(t.to(self.device, non_blocking=True) for t in (image, label, weights, dist))

    def close(self) -> None:
        self._loader = None  # its iterator goes with it (no cycle holds them), and that stops the workers


class IrisLoaderFeed:
    """(L<N>) ``IrisLoader(device=device, num_threads=N)``: batches widened on the device already."""

    def __init__(self, v2: datasets.Dataset, device: torch.device, batch: int, threads: int) -> None:
        self._loader = IrisLoader(v2, batch, seed=0, device=device, num_threads=threads, drop_last=True)

    def batches(self) -> Iterator[Tensors]:
        for image, label, _names, weights, dist in self._loader:
            yield image, label, weights, dist

    def close(self) -> None:
        self._loader.close()


class WireFeed:
    """(W) the copy limit of the wire bytes, or with ``copy=False`` (R) one batch kept on the device.

    The host batch is the wire slot IrisLoader uses (pinned for CUDA), filled once with
    real rows. Each batch of (W) copies it non-blocking into the same device buffers and
    widens the image and label as IrisLoader does, so (W) is what (L) would give if
    gathering the rows cost nothing.
    """

    def __init__(self, v2: datasets.Dataset, device: torch.device, batch: int, copy: bool = True) -> None:
        rows = MapRows(v2)
        self.host = Slot(batch, rows.num_classes, WIRE, pinned=device.type == "cuda")
        for j in range(batch):
            self.host.write(j, rows.read(j % len(rows))[0])
        self._on_device = [torch.empty_like(t, device=device) for t in self.host.tensors]
        self._table = torch.from_numpy(IMAGE_TABLE.copy()).to(device)
        self._copy, self._per_epoch = copy, len(v2) // batch
        self._resident = None if copy else self._arrived()

    def _arrived(self) -> Tensors:
        for target, source in zip(self._on_device, self.host.tensors, strict=True):
            target.copy_(source, non_blocking=True)
        image, label, weights, dist = self._on_device
        return self._table[image.int()], label.long(), weights, dist

    def batches(self) -> Iterator[Tensors]:
        for _ in range(self._per_epoch):
            yield self._arrived() if self._copy else self._resident

    def close(self) -> None:
        self.host = self._on_device = self._resident = None


#: a feed of the device run: ``batches()`` is one epoch of batches model-ready on the device
DeviceFeed = DataLoaderFeed | IrisLoaderFeed | WireFeed


def device_epochs(feed: DeviceFeed, device: torch.device, step: ModelStep | None, epochs: int) -> dict:
    """Samples/s over ``epochs`` epochs of ``feed`` after the warm-up, with ``step`` on each batch when given.

    With a step, also the model's time on the device and the fraction of the wall time the
    device waited for data (:func:`wait_fraction`).
    """
    clock = StepClock(device)

    def epoch(timed: bool) -> int:
        samples = 0
        for batch in feed.batches():
            samples += len(batch[0])
            if step is None:
                continue
            with clock.step() if timed else contextlib.nullcontext():
                step(*batch)
        return samples

    for _ in range(DEVICE_WARMUP_EPOCHS):
        epoch(timed=False)
    synchronize(device)
    wall = time.perf_counter()
    samples = sum(epoch(timed=True) for _ in range(epochs))
    synchronize(device)
    wall = time.perf_counter() - wall
    result = {"samples": samples, "wall_s": wall, "samples_per_s": samples / wall}
    if step is not None:
        model_s = clock.seconds()
        result |= {
            "model_s": model_s,
            "model_ms_per_step": 1000 * model_s / clock.steps,
            "wait_fraction": wait_fraction(model_s, wall),
        }
    return result


def device_feeds(v2: datasets.Dataset, device: torch.device, batch: int, workers: Iterable[int]) -> dict:
    """The feeds of the device run: name -> (make the feed, whether it is also timed without the model)."""
    feeds: dict[str, tuple[Callable[[], DeviceFeed], bool]] = {}
    for n in workers:
        feeds[f"D{n}_dataloader_{n}_workers"] = (lambda n=n: DataLoaderFeed(v2, device, batch, n), True)
        feeds[f"L{n}_iris_loader_{n}_threads"] = (lambda n=n: IrisLoaderFeed(v2, device, batch, n), True)
    feeds["W_wire_copy_limit"] = (lambda: WireFeed(v2, device, batch), True)
    feeds["R_model_on_a_resident_batch"] = (lambda: WireFeed(v2, device, batch, copy=False), False)
    return feeds


def run_on_device(v2: datasets.Dataset, device: torch.device, args: argparse.Namespace) -> dict:
    """Every feed without and with the model step, in interleaved rounds; the best round of each.

    A feed that fails (a DataLoader worker killed for want of shared memory, the GPU out of
    memory) is reported with its one-line error, and the others still run: the run is
    meant to be done once, on a machine that is hard to get.
    """
    classes = MapRows(v2).num_classes
    feeds = device_feeds(v2, device, args.batch_size, args.workers)
    runs: dict[str, dict[str, list[dict]]] = {name: {"without_model": [], "with_model": []} for name in feeds}
    failed: dict[str, str] = {}
    for _ in range(args.rounds):  # interleaved, so that a busy spell hits every feed
        for name, (make, without) in feeds.items():
            if name in failed:
                continue
            feed = None
            try:
                feed = make()
                for mode in ("without_model", "with_model") if without else ("with_model",):
                    step = ModelStep(classes, args.width, device) if mode == "with_model" else None
                    load = os.getloadavg()
                    result = device_epochs(feed, device, step, args.epochs)
                    result["load_average"] = [round(x, 2) for x in (*load, *os.getloadavg())]
                    runs[name][mode].append(result)
            except (RuntimeError, OSError) as error:  # torch.OutOfMemoryError is a RuntimeError
                failed[name] = " ".join(f"{type(error).__name__}: {error}".split())
            finally:
                if feed is not None:
                    feed.close()
    results: dict[str, dict] = {}
    for name, modes in runs.items():
        if name in failed:
            results[name] = {"failed": failed[name]}
            continue
        results[name] = {}
        for mode, rounds in modes.items():
            if rounds:
                best = dict(max(rounds, key=lambda r: r["samples_per_s"]))
                best["rounds_samples_per_s"] = [round(r["samples_per_s"], 1) for r in rounds]
                results[name][mode] = best
    return results


def describe_device(device: torch.device) -> dict:
    """What the figures were measured on: the device, the builds, the CPUs and the shared memory DataLoader uses."""
    about: dict = {"device": str(device), "cpus": os.cpu_count(), "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        about |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / 1e9, 1),
            "cuda": torch.version.cuda or getattr(torch.version, "hip", None),
            "cudnn": torch.backends.cudnn.version(),
            "gpu_peak_allocated_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 1),  # over the run
        }
    if os.path.isdir("/dev/shm"):  # DataLoader workers hand their batches over in it
        about["dev_shm_free_gb"] = round(shutil.disk_usage("/dev/shm").free / 1e9, 1)
    return about


def device_main(args: argparse.Namespace) -> None:
    """The device run (``--device``): build the data, time the feeds, print, write the JSON."""
    device = open_device(args.device)
    rows = args.frames * args.repeat
    if rows < args.batch_size:
        sys.exit(
            f"error: --frames {args.frames} x --repeat {args.repeat} = {rows} rows, fewer than --batch-size "
            f"{args.batch_size}: every epoch would be empty (the last short batch is dropped); raise --repeat"
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes (drop_last): cuDNN picks its fastest kernels once
    datasets.disable_progress_bars()
    torch.set_num_threads(1)  # as in the CPU run: a feed's parallelism is its workers or threads
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as work:
        v2 = repeated(build_v2(Path(work), args.frames), args.repeat)
        classes = MapRows(v2).num_classes
        load_before = os.getloadavg()
        results = run_on_device(v2, device, args)
        load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    about = describe_device(device)
    weights = sum(p.numel() for p in small_net(classes, args.width).parameters())
    wire_bytes = slot_bytes(1, classes, WIRE)
    summary = device_summary(results, args.workers, wire_bytes)
    payload = {
        **about,
        "rows": rows,
        "batch_size": args.batch_size,
        "workers_or_threads": args.workers,
        "model": {"width": args.width, "weights": weights},
        "warmup_epochs": DEVICE_WARMUP_EPOCHS,
        "timed_epochs": args.epochs,
        "rounds": args.rounds,
        "wire_mb_per_sample": wire_bytes / 1e6,
        "load_average": load,
        "results": results,
        "summary": summary,
    }
    path = write_results(f"training_on_{device.type}", payload)
    print_device_report(payload)
    print(f"wrote {path}")
    if failed := [name for name, r in results.items() if "failed" in r]:
        sys.exit(f"error: {len(failed)} feed(s) failed: {', '.join(failed)}; their errors are above and in {path}")


def device_summary(results: dict, workers: Iterable[int], wire_bytes: int) -> dict:
    """IrisLoader over the DataLoader at each N, with and without the model, and the copy limit in GB/s."""

    def rate(name: str, mode: str) -> float | None:
        return results.get(name, {}).get(mode, {}).get("samples_per_s")

    summary: dict = {}
    for n in workers:
        for mode in ("without_model", "with_model"):
            loader, baseline = rate(f"L{n}_iris_loader_{n}_threads", mode), rate(f"D{n}_dataloader_{n}_workers", mode)
            if loader and baseline:
                summary[f"L{n}_over_D{n}_{mode}"] = loader / baseline
    if copies := rate("W_wire_copy_limit", "without_model"):
        summary["wire_copy_gb_per_s"] = copies * wire_bytes / 1e9
    return summary


def print_device_report(payload: dict) -> None:
    about = ", ".join(f"{key} {payload[key]}" for key in DEVICE_ABOUT if key in payload)
    model = payload["model"]
    print(f"{about}; load average {'/'.join(f'{x:.2f}' for x in payload['load_average'][:3])} before the run")
    print(
        f"{payload['rows']} rows, batch {payload['batch_size']}, model-ready on the device; model: small conv net, "
        f"width {model['width']}, {model['weights']:,} weights; {payload['warmup_epochs']} warm-up + "
        f"{payload['timed_epochs']} timed epochs, best of {payload['rounds']} rounds"
    )
    waits = "GPU waits" if payload["device"].startswith("cuda") else "CPU waits"
    print(f"{'samples/s':>43s} {'':>11s} {'':>9s} {'a step':>9s}")
    print(f"{'feed':32s} {'no model':>10s} {'with model':>11s} {waits:>9s} {'model ms':>9s}  load (1 min)")
    for name, result in payload["results"].items():
        if "failed" in result:
            print(f"{name:32s} failed: {result['failed']}")
            continue
        without, with_model = result.get("without_model"), result["with_model"]
        plain = f"{without['samples_per_s']:10.1f}" if without else f"{'-':>10s}"
        load = "/".join(f"{x:.2f}" for x in (with_model["load_average"][0], with_model["load_average"][3]))
        print(
            f"{name:32s} {plain} {with_model['samples_per_s']:11.1f} {with_model['wait_fraction']:9.1%} "
            f"{with_model['model_ms_per_step']:9.2f}  {load}"
        )
    for key, value in payload["summary"].items():
        print(f"{key}: {value:.2f}")


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
    main()
