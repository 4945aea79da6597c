"""The training feed: :class:`IrisLoader`, batches gathered in threads into reused buffers.

``DataLoader(IrisDataset)`` spends most of its time on memory, not on reading: every
worker batch is a freshly allocated ~390 MB shared-memory block, and writing into
fresh pages runs at about 0.4 GB/s here against about 8 GB/s into memory already
touched. :class:`IrisLoader` reads the same rows, with the same values, without that
cost:

* **threads, not processes.** Each batch's rows are split among ``num_threads``
  threads (NumPy, OpenCV and Arrow copies release the GIL). A coordinator thread
  keeps one batch gathered ahead of the training loop;
* **one pass, into reused buffers.** Each row is written once, straight into a
  batch-sized slot of a small pool: on the CPU device, the image through a 256-entry
  float table (the exact values of ``ToTensor`` + ``Normalize``) and the label cast
  straight to int64. For another device the slot holds the wire format, a uint8 image
  and label (3.5 MB a sample instead of 6), which are widened on the device;
* **a batch the caller holds is never overwritten.** On the CPU the batch's tensors
  are views of the slot, and the slot returns to the pool once nothing refers to them
  (a ``weakref.finalize`` on the exact array each tensor was made from). A normal
  loop drops each batch before the next and runs on 3 slots, allocated once; a caller
  who keeps batches makes the pool grow by as many as they keep. On CUDA the slots are
  pinned, the copies are non-blocking, and a slot is refilled only once the CUDA
  event recorded after its copy has completed;
* **reproducible.** Row ``r`` of epoch ``e`` draws its augmentation from
  ``np.random.default_rng([seed, e, r])``, whichever thread gathers it; the shuffled
  order is ``np.random.default_rng([seed, e]).permutation(n)``, shared by all ranks.

Nothing of ``torchdata.nodes`` is used; the README's "Training side" section gives
the measurements behind that choice.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial

import datasets
import numpy as np
import torch

from preprocessing.augment import Transform
from preprocessing.buffers import DeviceBatches, HostBatches, Pool, Slot
from preprocessing.training import IrisDataset

#: ``(image float32 [B, 1, H, W] in [-1, 1], label int64 [B, H, W], filenames,
#: spatial_weights float32 [B, H, W], dist_map float32 [B, C, H, W])``
Batch = tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor, torch.Tensor]


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Feed:
    """One pass over batches of rows: a coordinator thread gathers each batch with the
    executor's threads into a pool slot, at most one batch ahead of the caller."""

    def __init__(
        self,
        batches: Sequence[np.ndarray],
        gather_row: Callable[[Slot, int, int], str],
        pool: Pool,
        executor: ThreadPoolExecutor,
        num_threads: int,
    ) -> None:
        self._batches, self._gather_row, self._pool = batches, gather_row, pool
        self._executor, self._num_threads = executor, num_threads
        self._ready: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(1)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="IrisLoader-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for rows in self._batches:
                while not self._room.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                slot = self._pool.take()
                try:
                    names = self._gather_batch(slot, rows)
                except BaseException:
                    self._pool.give_back(slot)
                    raise
                if self._stop.is_set():  # closed mid-batch
                    self._pool.give_back(slot)
                    return
                self._ready.put((slot, len(rows), names))
            self._ready.put(None)
        except BaseException as error:  # noqa: BLE001 (handed to the caller's thread)
            self._ready.put(_Failed(error))

    def _gather_batch(self, slot: Slot, rows: np.ndarray) -> list[str]:
        names = [""] * len(rows)
        positions: queue.SimpleQueue = queue.SimpleQueue()
        for j in range(len(rows)):
            positions.put(j)
        tasks = [
            self._executor.submit(self._gather, slot, rows, names, positions)
            for _ in range(min(self._num_threads, len(rows)))
        ]
        done, running = wait(tasks, return_when=FIRST_EXCEPTION)
        errors = [task.exception() for task in done if task.exception() is not None]
        if errors:
            self._stop.set()  # the other threads stop after their current row,
            wait(running)  # and are done with the slot before it goes back
            raise errors[0]
        return names

    def _gather(self, slot: Slot, rows: np.ndarray, names: list[str], positions: queue.SimpleQueue) -> None:
        # Each thread takes the next free position until none is left, so a slow row
        # (a flip, a blur) holds up only its own thread.
        while not self._stop.is_set():
            try:
                j = positions.get_nowait()
            except queue.Empty:
                return
            names[j] = self._gather_row(slot, j, int(rows[j]))

    def next(self) -> tuple[Slot, int, list[str]] | None:
        """The next gathered batch, or None at the end. Re-raises a gather error as it is."""
        if self._closed:
            raise RuntimeError(
                "this loop over the IrisLoader was ended by close() or by a newer loop over it; start a new loop"
            )
        while True:
            try:
                item = self._ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._ready.empty():
                    raise RuntimeError("IrisLoader's feed thread ended without a batch or an error") from None
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        self._room.release()
        return item

    def close(self) -> None:
        """Stop gathering, and put back the slots of batches gathered but not handed out."""
        self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=60)
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple):
                self._pool.give_back(item[0])


class IrisLoader:
    """Batches of OpenEDS rows for a training loop, on ``device``: the feed training should use.

    Args:
        hf_dataset, split, transform, preprocessed: as for :class:`IrisDataset`.
        batch_size: rows per batch.
        shuffle: reshuffle every epoch; ``None`` shuffles the train split only.
        drop_last: drop the last batch if it is short (by default it is kept).
        seed: seeds the shuffle and every sample's augmentation. ``None`` draws one
            (see :attr:`seed`); required with ``world_size > 1``.
        device: where batches go (default the CPU). For the CPU the threads write
            model-ready tensors; for a GPU they fill pinned uint8 wire buffers, and
            the image and label are widened on the device.
        num_threads: gather threads (default: the usable cores, at most 4).
        rank, world_size: this process's share for distributed data parallel;
            by default from ``torch.distributed`` when it is initialised.

    Each batch is ``(image float32 [B, 1, 400, 640] in [-1, 1], label int64 [B, 400, 640],
    filenames list[str], spatial_weights float32 [B, 400, 640], dist_map float32
    [B, C, 400, 640])``: the same values as ``torch.stack`` of the :class:`IrisDataset`
    items of the same rows with the same draws (:meth:`IrisDataset.item` with
    ``np.random.default_rng([seed, epoch, row])``). :meth:`rows` says which rows an
    epoch reads, in order.

    Each ``for`` loop over the loader is the next epoch (as a ``DataLoader`` reshuffles
    every epoch), unless :meth:`set_epoch` says which. Starting a loop ends the
    previous one. Use :meth:`close`, or ``with IrisLoader(...) as loader:``, to stop
    the threads of a loop left mid-epoch and free the buffers.

    With ``world_size > 1`` all ranks share one permutation per epoch and each takes
    ``perm[rank::world_size]`` of its first ``n // world_size * world_size`` rows:
    equal, disjoint shares, the remainder dropped, as ``DistributedSampler(drop_last=True)``.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        batch_size: int = 64,
        *,
        split: str = "train",
        shuffle: bool | None = None,
        drop_last: bool = False,
        transform: Transform | None = None,
        preprocessed: bool | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.rank, self.world_size = _ranks(rank, world_size)
        if seed is None and self.world_size > 1:
            raise ValueError(
                f"world_size={self.world_size} needs a seed: every rank must draw the same permutation "
                "to read a disjoint share. Pass the same seed=... on every rank"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed={seed!r}; expected a non-negative int or None")
        self.dataset = IrisDataset(hf_dataset, split=split, transform=transform, preprocessed=preprocessed, seed=seed)
        #: the seed of the shuffle and of every sample's draws (drawn once when none is given)
        self.seed: int = int(np.random.SeedSequence().entropy) if seed is None else seed
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.drop_last = bool(drop_last)
        self.device = _device(device)
        self.num_threads = _default_threads() if num_threads is None else _positive_int(num_threads, "num_threads")
        self._batches = HostBatches() if self.device.type == "cpu" else DeviceBatches(self.device)
        self._augments = transform is not None and split == "train"
        self._next_epoch = 0
        self._pool: Pool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._feed: _Feed | None = None
        self.dataset._reader()  # build the row views here, not racing in the threads

    @property
    def num_classes(self) -> int:
        """Distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)."""
        return self.dataset.num_classes

    @property
    def preprocessed(self) -> bool:
        """Whether the stored images already have gamma + CLAHE (else the threads apply it)."""
        return self.dataset.preprocessed

    def __len__(self) -> int:
        share = len(self.dataset) // self.world_size
        return share // self.batch_size if self.drop_last else -(-share // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next loop epoch ``epoch`` (the one after continues from there)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r}; expected a non-negative int")
        self._next_epoch = epoch

    def rows(self, epoch: int) -> np.ndarray:
        """The dataset rows this rank reads in ``epoch``, in order (the short last batch included)."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        return order[: n // self.world_size * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Batch]:
        """The batches of the next epoch (see :meth:`set_epoch`), ending any previous loop."""
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        rows = self.rows(epoch)
        stop = len(self) * self.batch_size
        batches = [rows[i : min(i + self.batch_size, stop)] for i in range(0, stop, self.batch_size)]
        self._end_feed()
        # Nothing the pool and the threads hold refers back to the loader, so dropping
        # the loader frees the buffers at once, not at the next cyclic garbage collection.
        if self._pool is None:
            make = partial(Slot, self.batch_size, self.num_classes, self._batches.layout, self._batches.pinned)
            self._pool = Pool(make)
            self._executor = ThreadPoolExecutor(self.num_threads, thread_name_prefix="IrisLoader-gather")
        gather_row = partial(_gather_row, self.dataset, self.seed if self._augments else None, epoch)
        feed = self._feed = _Feed(batches, gather_row, self._pool, self._executor, self.num_threads)
        pool = self._pool
        try:
            while (gathered := feed.next()) is not None:
                slot, n, filenames = gathered
                image, label, weights, dist = self._batches.hand_out(slot, n, pool)
                yield image, label, filenames, weights, dist
        finally:
            feed.close()

    def _end_feed(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def close(self) -> None:
        """Stop the gather threads and let go of the buffers (batches still held stay valid)."""
        self._end_feed()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = self._pool = None

    def __enter__(self) -> IrisLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _gather_row(dataset: IrisDataset, seed: int | None, epoch: int, slot: Slot, j: int, row: int) -> str:
    """Write dataset row ``row`` into row ``j`` of the slot, drawing from ``(seed, epoch, row)``; its filename.

    ``seed=None``: no augmentation, no draws.
    """
    rng = None if seed is None else np.random.default_rng([seed, epoch, row])
    sample, filename = dataset.sample(row, rng)
    slot.write(j, sample)
    return filename


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive int")
    return value


def _default_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 4)


def _ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else from an initialised ``torch.distributed``."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        rank = torch.distributed.get_rank() if rank is None else rank
        world_size = torch.distributed.get_world_size() if world_size is None else world_size
    elif rank is None and world_size is None:
        return 0, 1
    elif rank is None or world_size is None:
        raise ValueError(
            f"rank={rank!r} and world_size={world_size!r}: pass both, or neither and initialise torch.distributed"
        )
    world_size = _positive_int(world_size, "world_size")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}; expected an int in 0..{world_size - 1} for world_size={world_size}")
    return rank, world_size


def _device(device: str | torch.device | None) -> torch.device:
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
        raise ValueError(
            f"device={str(device)!r}, but CUDA is not available (torch {torch.__version__}: {build}); "
            "use device='cpu', or install a CUDA build of torch on a machine with a GPU"
        )
    return device
