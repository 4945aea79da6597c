"""The device run of bench_training: the training feeds model-ready on a device, beside a model step.

``python -m benchmarks.bench_training --device cuda`` runs it: bench_training parses the
options and calls :func:`device_main`, which builds the rows as bench_training does
(benchmarks/_v2.py). ``--device cpu`` runs the same code on the CPU, which is how the smoke
test covers it. It times, in one process, batches model-ready on the device,
``--batch-size`` rows (default 64), without and with a model step beside them:

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

    python -m benchmarks.bench_training --device cuda --frames 64 --repeat 16 --rounds 2 --workers 4 8 16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import datasets
import torch
import torch.nn.functional as F

from benchmarks._common import write_results
from benchmarks._v2 import build_v2, repeated
from preprocessing.training import IrisDataset, IrisLoader
from preprocessing.training.buffers import IMAGE_TABLE, WIRE, Slot, slot_bytes
from preprocessing.training.source import MapRows

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
