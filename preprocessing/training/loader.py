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
  order is ``augment.order_rng(seed, e).permutation(n)``, shared by all ranks;
* **streams too.** Given a streamed split (``load_dataset(..., streaming=True)``), a
  reader thread reads its Arrow record batches (:mod:`preprocessing.training.source`) a
  few rows ahead of the gather threads, which take the rows in the order read. The
  same buffers, draws, errors and epochs; the order is a shuffle buffer's instead of a
  permutation, and with DDP every rank stops after the same number of batches;
* **one route for the data.** The split becomes its row source once, in
  ``__init__`` (:func:`~preprocessing.training.source.open_rows`: columns checked, v1
  or v2 detected, channels counted); :attr:`IrisLoader.dataset` reads the same source,
  and each epoch is planned from ``(seed, epoch)`` and the batch positions alone.

Nothing of ``torchdata.nodes`` is used; docs/training.md ("Why not `torchdata.nodes`") gives
the measurements behind that choice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import datasets
import numpy as np
import torch

from preprocessing.augment import Transform, order_rng
from preprocessing.training.arguments import check_seed, check_shuffle_buffer, check_transform, positive_int, ranks
from preprocessing.training.arrow_rows import Row
from preprocessing.training.buffers import DeviceBatches, HostBatches, Pool, Slot
from preprocessing.training.dataset import IrisDataset
from preprocessing.training.feed import Feed, MapBatch, StreamBatch, stream_batches
from preprocessing.training.items import prepare
from preprocessing.training.reader import RowReader
from preprocessing.training.source import DEFAULT_SHUFFLE_BUFFER, STREAM_BATCH_ROWS, StreamRows, open_rows
from preprocessing.training.streaming import IrisIterableDataset

#: ``(image float32 [B, 1, H, W] in [-1, 1], label int64 [B, H, W], filenames,
#: spatial_weights float32 [B, H, W], dist_map float32 [B, C, H, W])``
Batch = tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor, torch.Tensor]


class IrisLoader:
    """Batches of OpenEDS rows for a training loop, on ``device``: the feed training should use.

    Args:
        hf_dataset: one split: a map-style ``datasets.Dataset``, or a streamed
            ``datasets.IterableDataset`` from ``load_dataset(..., streaming=True)``.
        split, transform, preprocessed: as for :class:`IrisDataset`.
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
        shuffle_buffer: streams only: rows of the shuffle buffer (default 256: 917 MB
            for ``pupil``, 1.44 GB for ``full``); see :class:`IrisIterableDataset`.

    Each batch is ``(image float32 [B, 1, 400, 640] in [-1, 1], label int64 [B, 400, 640],
    filenames list[str], spatial_weights float32 [B, 400, 640], dist_map float32
    [B, C, 400, 640])``: the same values as ``torch.stack`` of the :class:`IrisDataset`
    items of the same rows with the same draws (:meth:`IrisDataset.item` with
    ``np.random.default_rng([seed, epoch, row])``). :meth:`rows` says which rows an
    epoch reads, in order.

    Each ``for`` loop over the loader is the next epoch (as a ``DataLoader`` reshuffles
    every epoch), unless :meth:`set_epoch` says which. Starting a loop ends the
    previous one, also when the two run in different threads: the earlier loop raises
    ``RuntimeError`` saying that a newer loop took over (after at most the one batch it
    was already taking). Use :meth:`close`, or ``with IrisLoader(...) as loader:``, to
    stop the threads of a loop left mid-epoch and free the buffers.

    With ``world_size > 1`` all ranks share one permutation per epoch and each takes
    ``perm[rank::world_size]`` of its first ``n // world_size * world_size`` rows:
    equal, disjoint shares, the remainder dropped, as ``DistributedSampler(drop_last=True)``.

    **A stream** is read as :class:`IrisIterableDataset` reads it (:attr:`dataset` is
    one, with the same arguments): row number ``r`` of the stream draws from
    ``(seed, epoch, r)``, and read unshuffled by one process an epoch is the map-style
    epoch item for item. Shuffling reorders the shards (datasets 5.x) and passes the
    rows through a buffer of ``shuffle_buffer`` copies. ``len`` comes from the split's
    row count on the dataset card. With ``world_size > 1`` the ranks split the stream
    (``split_dataset_by_node``), and every rank reads exactly ``n // world_size`` rows,
    in ``len(loader)`` batches, so that collective operations never wait for a rank
    that has stopped.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset | datasets.IterableDataset,
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
        shuffle_buffer: int | None = None,
    ) -> None:
        self.batch_size = positive_int(batch_size, "batch_size")
        self.rank, self.world_size = ranks(rank, world_size)
        check_seed(seed, self.world_size)
        #: the seed of the shuffle and of every sample's draws (drawn once when none is given)
        self.seed: int = int(np.random.SeedSequence().entropy) if seed is None else seed
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.streaming = isinstance(hf_dataset, datasets.IterableDataset)
        if not self.streaming and shuffle_buffer is not None:
            raise ValueError(
                f"shuffle_buffer={shuffle_buffer!r} is for streamed splits; a map-style split is shuffled with a "
                "permutation of all its rows. Leave it out, or pass load_dataset(..., streaming=True)"
            )
        check_transform(transform)
        shuffle_buffer = DEFAULT_SHUFFLE_BUFFER if shuffle_buffer is None else shuffle_buffer
        check_shuffle_buffer(shuffle_buffer)
        # The split becomes its row source here, once, and the dataset reads from that source.
        rows = open_rows(hf_dataset, preprocessed)
        #: the items of the same rows: an :class:`IrisDataset`, or an :class:`IrisIterableDataset` for a stream
        self.dataset: IrisDataset | IrisIterableDataset
        if isinstance(rows, StreamRows):
            self.dataset = IrisIterableDataset.from_rows(
                rows, split, transform, self.seed, shuffle=self.shuffle, shuffle_buffer=shuffle_buffer,
                rank=self.rank, world_size=self.world_size,
            )  # fmt: skip
        else:
            self.dataset = IrisDataset.from_rows(rows, split, transform, seed)
        self.drop_last = bool(drop_last)
        self.device = _device(device)
        self.num_threads = _default_threads() if num_threads is None else positive_int(num_threads, "num_threads")
        self._batches = HostBatches() if self.device.type == "cpu" else DeviceBatches(self.device)
        self._augments = transform is not None and split == "train"
        self._next_epoch = 0
        self._pool: Pool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._feed: Feed | None = None
        # Starting a loop and close() each run whole under this lock, so that with several
        # threads on one loader the later one always ends the earlier: one feed at a time, one
        # pool and one executor, and the loop that loses gets feed.ENDED.
        self._lock = threading.Lock()

    @property
    def num_classes(self) -> int:
        """Distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)."""
        return self.dataset.num_classes

    @property
    def preprocessed(self) -> bool:
        """Whether the stored images already have gamma + CLAHE (else the threads apply it)."""
        return self.dataset.preprocessed

    def __len__(self) -> int:
        # a stream's dataset is this rank's share already (from the dataset card's row count)
        share = len(self.dataset) if self.streaming else len(self.dataset) // self.world_size
        return share // self.batch_size if self.drop_last else -(-share // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next loop epoch ``epoch`` (the one after continues from there)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r}; expected a non-negative int")
        self._next_epoch = epoch

    def rows(self, epoch: int) -> np.ndarray:
        """The dataset rows this rank reads in ``epoch``, in order (the short last batch included)."""
        if self.streaming:
            raise TypeError(
                "rows() lists the rows of a map-style epoch; a streamed epoch's rows are known only as they are "
                "read: each batch's filenames say which"
            )
        n = len(self.dataset)
        order = order_rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        return order[: n // self.world_size * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Batch]:
        """The batches of the next epoch (see :meth:`set_epoch`), ending any previous loop."""
        with self._lock:
            feed, pool, epoch = self._start_feed()
        try:
            while (gathered := feed.next()) is not None:
                slot, n, filenames = gathered
                image, label, weights, dist = self._batches.hand_out(slot, n, pool)
                yield image, label, filenames, weights, dist
        finally:
            feed.close()

    def _start_feed(self) -> tuple[Feed, Pool, int]:
        """End the previous loop's feed and start the next epoch's (under ``self._lock``)."""
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        self._end_feed()
        # Nothing the pool and the threads hold refers back to the loader, so dropping
        # the loader frees the buffers at once, not at the next cyclic garbage collection.
        if self._pool is None:
            make = partial(Slot, self.batch_size, self.num_classes, self._batches.layout, self._batches.pinned)
            self._pool = Pool(make)
            self._executor = ThreadPoolExecutor(self.num_threads, thread_name_prefix="IrisLoader-gather")
        batches, reader = self._epoch_batches(epoch)
        augment = self.dataset.transform if self._augments else None
        gather_row = partial(_gather_row, self.preprocessed, augment, self.seed, epoch)
        drop_short = self.batch_size if self.drop_last else 0
        self._feed = Feed(batches, gather_row, self._pool, self._executor, self.num_threads, drop_short, reader)
        return self._feed, self._pool, epoch

    def _epoch_batches(self, epoch: int) -> tuple[list[MapBatch] | Iterator[StreamBatch], RowReader | None]:
        """The batches of ``epoch`` for the feed, from the row source, and a stream's reader thread.

        Map-style: the batches of :meth:`rows`, each a slice of this rank's order. Streamed: batches
        taken from a reader thread over this rank's part of the stream.
        """
        if self.streaming:
            # the row count is known with DDP (IrisIterableDataset requires it), and read to the end without
            rows = len(self) * self.batch_size if self.world_size > 1 else None
            reader = RowReader(self.dataset.part_rows(epoch, self.rank, self.world_size), STREAM_BATCH_ROWS)
            return stream_batches(reader, self.batch_size, rows), reader
        order, stop = self.rows(epoch), len(self) * self.batch_size
        read = self.dataset.rows.row  # a map-style split's MapRows
        starts = range(0, stop, self.batch_size)
        return [MapBatch(order[i : min(i + self.batch_size, stop)], read) for i in starts], None

    def _end_feed(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def close(self) -> None:
        """Stop the gather threads and let go of the buffers (batches still held stay valid).

        A loop still running, in this thread or another, raises :data:`~preprocessing.training.feed.ENDED`
        at its next batch.
        """
        with self._lock:
            self._end_feed()
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = self._pool = None
            if self.streaming:
                self.dataset.rows.drop_buffer()

    def __enter__(self) -> IrisLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _gather_row(
    preprocessed: bool, transform: Transform | None, seed: int, epoch: int, slot: Slot, j: int, row: Row
) -> str:
    """Write ``row`` into row ``j`` of the slot, augmented with draws from ``(seed, epoch, row.index)``; its filename.

    ``transform=None``: no augmentation, no draws.
    """
    rng = None if transform is None else np.random.default_rng([seed, epoch, row.index])
    slot.write(j, prepare(row.sample, preprocessed, transform, rng))
    return row.filename


def _default_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 4)


def _device(device: str | torch.device | None) -> torch.device:
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
        raise ValueError(
            f"device={str(device)!r}, but CUDA is not available (torch {torch.__version__}: {build}); "
            "use device='cpu', or install a CUDA build of torch on a machine with a GPU"
        )
    return device
