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
  same buffers, draws, errors and epochs; the order is a shuffle window's instead of a
  permutation, and with DDP every rank stops after the same number of batches;
* **resumable, exactly.** :meth:`IrisLoader.state_dict` is two numbers and the settings
  they follow from (:mod:`preprocessing.training.state`): the epoch and how much of its
  order was consumed. A fresh loader that loads it plans the rest of that epoch from
  ``(seed, epoch)`` as it plans any epoch, so it gives the very batches the interrupted
  loop would have given next, bit for bit, then the following epochs; a map-style split
  also on another number of ranks (the rest of the epoch's order dealt to them);
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
from dataclasses import dataclass
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
from preprocessing.training.state import check_state, make_state
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

    **Checkpoint and resume.** :meth:`state_dict` and :meth:`load_state_dict` follow the
    ``Stateful`` protocol of ``torch.distributed.checkpoint`` and torchdata, so the loader
    goes into a checkpoint as a model does. A resuming loop::

        loader.load_state_dict(checkpoint["loader"])  # applies to the next loop
        while loader.epoch < epochs:
            for batch in loader:
                ...  # the step; then, now and then, save {"loader": loader.state_dict(), ...}

    (``for epoch in range(loader.epoch, epochs): loader.set_epoch(epoch); for batch in
    loader`` resumes alike.)

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
        self._resume: tuple[int, int] | None = None  # (epoch, consumed) for the next loop, from load_state_dict
        self._loop: _Loop | None = None  # the latest loop's progress
        #: what a state must share with this loader (:data:`preprocessing.training.state.SETTINGS`), and world_size
        self._settings = {
            "kind": "stream" if self.streaming else "map",
            "split": str(split),
            "num_rows": _num_rows(self.dataset),
            "num_classes": self.num_classes,
            "preprocessed": self.preprocessed,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "shuffle_buffer": shuffle_buffer if self.streaming else 0,
            "world_size": self.world_size,
        }
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
        """The batches of an epoch (a resumed epoch has fewer: its rest)."""
        # a stream's dataset is this rank's share already (from the dataset card's row count)
        share = len(self.dataset) if self.streaming else len(self.dataset) // self.world_size
        return self._batch_count(share)

    @property
    def epoch(self) -> int:
        """The epoch of the loop running, else the one the next loop reads (see :meth:`set_epoch`).

        After :meth:`load_state_dict`, the state's epoch: ``while loader.epoch < epochs: for
        batch in loader: ...`` finishes the interrupted epoch, then reads the rest.
        """
        with self._lock:
            loop = self._loop
            return loop.epoch if loop is not None and not loop.ended else self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next loop epoch ``epoch`` (the one after continues from there).

        After :meth:`load_state_dict`, the state's epoch keeps the place in it that the
        state says (so ``for e in range(loader.epoch, epochs): loader.set_epoch(e)`` resumes
        right); any other epoch drops it, and that epoch is read whole.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r}; expected a non-negative int")
        with self._lock:
            self._next_epoch = epoch
            if self._resume is not None and self._resume[0] != epoch:
                self._resume = None

    def state_dict(self) -> dict:
        """Where the training is: a small dict of ints, bools and strings (no row data), to checkpoint.

        Taken between two batches (in the loop, after the step on the batch just handed
        out; before an epoch's first batch; after its last; between epochs), it says the
        epoch and how much of it the batches handed out so far consumed, and the settings
        those follow from (:mod:`preprocessing.training.state`). A batch the loader has
        gathered ahead but not yet handed out is not counted. After an epoch's last batch
        it says the next epoch. Outside a loop it is where the next loop starts (a loop left
        mid-epoch is over: the next one reads the next epoch, so take the state inside the
        loop). ``torch.save``, also with ``weights_only=True``, and JSON carry it as it is.

        With DDP every rank holds the same state (all ranks hand out the same number of
        batches, and a map-style state counts the rows of all of them), so saving rank 0's
        is enough.
        """
        with self._lock:
            loop = self._loop
            if loop is None or loop.ended or (loop.batches is not None and loop.handed >= loop.batches):
                epoch = self._next_epoch
                consumed = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
            elif self.streaming:
                epoch, consumed = loop.epoch, loop.start + loop.rows  # this rank's rows
            else:
                epoch, consumed = loop.epoch, loop.start + loop.rows * self.world_size  # all ranks' rows
        return make_state(self._settings, epoch, consumed)

    def load_state_dict(self, state: dict) -> None:
        """Resume from a :meth:`state_dict`: the next loop reads the rest of the state's epoch.

        The loader must be built with the same arguments as the one the state is from
        (``num_threads`` may differ): then it yields exactly the batches that loader would
        have yielded after the state was taken (the same rows in the same order, the same
        augmentation draws, the same values bit for bit), then the following epochs as usual.
        A state that does not fit is refused with a one-line ``ValueError`` naming the field,
        the value in the state and the value expected: another split, row count, class count,
        data version, batch size, seed, shuffle, ``drop_last`` or ``shuffle_buffer``, a
        stream's state in a map-style loader or the other way round, a state format this
        release cannot read, a missing, extra or mistyped field.

        **Elastic (map-style).** A state taken on ``W`` ranks loads on any number of ranks
        ``W'``: the rest of the epoch is the part of its order no rank has consumed,
        ``perm[consumed:]``, dealt to the ``W'`` ranks as a whole epoch is dealt (equal
        shares, the remainder ``len(rest) % W'`` dropped); :meth:`rows` with
        ``start=state["consumed"]`` lists this rank's. No row of the epoch is read twice,
        none is lost but that remainder. **Streams** resume on as many ranks as they ran
        on; another ``world_size`` is refused, naming both. A stream that cannot start
        mid-epoch (datasets 3.6, or files that are not parquet) is refused here too, in one
        line (:class:`~preprocessing.training.source.StreamResumeError`), not at the next loop.

        Like :meth:`set_epoch`, it applies to the next loop, not to one running.
        """
        epoch, consumed = check_state(state, self._settings)
        if self.streaming and consumed:
            self.dataset.rows.check_resumable()
        with self._lock:
            self._next_epoch = epoch
            self._resume = (epoch, consumed) if consumed else None

    def rows(self, epoch: int, start: int = 0) -> np.ndarray:
        """The dataset rows this rank reads in ``epoch``, in order (the short last batch included).

        ``start``: the rows of the rest of the epoch once the first ``start`` of its order
        are consumed (a state's ``consumed``): what a loop resumed there reads, on this
        loader's ranks.
        """
        if self.streaming:
            raise TypeError(
                "rows() lists the rows of a map-style epoch; a streamed epoch's rows are known only as they are "
                "read: each batch's filenames say which"
            )
        n = len(self.dataset)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= n:
            raise ValueError(f"start={start!r}; expected an int in 0..{n}, the rows of the split")
        order = (order_rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n))[start:]
        return order[: len(order) // self.world_size * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Batch]:
        """The batches of the next epoch (see :meth:`set_epoch`), ending any previous loop."""
        with self._lock:
            feed, pool, loop = self._start_feed()
        try:
            while (gathered := feed.next()) is not None:
                slot, n, filenames = gathered
                image, label, weights, dist = self._batches.hand_out(slot, n, pool)
                loop.handed, loop.rows = loop.handed + 1, loop.rows + n  # handed out: the state counts it
                yield image, label, filenames, weights, dist
        finally:
            loop.ended = True
            feed.close()

    def _start_feed(self) -> tuple[Feed, Pool, _Loop]:
        """End the previous loop's feed and start the next epoch's (under ``self._lock``)."""
        epoch = self._next_epoch
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._end_feed()
        # Nothing the pool and the threads hold refers back to the loader, so dropping
        # the loader frees the buffers at once, not at the next cyclic garbage collection.
        if self._pool is None:
            make = partial(Slot, self.batch_size, self.num_classes, self._batches.layout, self._batches.pinned)
            self._pool = Pool(make)
            self._executor = ThreadPoolExecutor(self.num_threads, thread_name_prefix="IrisLoader-gather")
        batches, reader, count = self._epoch_batches(epoch, start)
        self._next_epoch, self._resume = epoch + 1, None
        augment = self.dataset.transform if self._augments else None
        gather_row = partial(_gather_row, self.preprocessed, augment, self.seed, epoch)
        drop_short = self.batch_size if self.drop_last else 0
        self._feed = Feed(batches, gather_row, self._pool, self._executor, self.num_threads, drop_short, reader)
        self._loop = _Loop(epoch, start, count)
        return self._feed, self._pool, self._loop

    def _epoch_batches(
        self, epoch: int, start: int
    ) -> tuple[list[MapBatch] | Iterator[StreamBatch], RowReader | None, int | None]:
        """The batches of ``epoch`` for the feed, from the row source, a stream's reader thread, and their number.

        Map-style: the batches of :meth:`rows`, each a slice of this rank's order. Streamed: batches
        taken from a reader thread over this rank's part of the stream. ``start`` (a resumed epoch):
        what a state's ``consumed`` says was read already. The number is None for a stream read to
        its end (one process), whose rows are known only once read.
        """
        if self.streaming:
            reader = RowReader(
                self.dataset.part_rows(epoch, self.rank, self.world_size, start=start), STREAM_BATCH_ROWS
            )
            if self.world_size == 1:
                return stream_batches(reader, self.batch_size, None), reader, None
            # the row count is known with DDP (IrisIterableDataset requires it): this rank's rows, less those read
            share = len(self.dataset) - start
            count = self._batch_count(share)
            return (
                stream_batches(reader, self.batch_size, count * self.batch_size if self.drop_last else share),
                reader,
                count,
            )
        order = self.rows(epoch, start)
        count = self._batch_count(len(order))
        stop = min(count * self.batch_size, len(order))
        read = self.dataset.rows.row  # a map-style split's MapRows
        starts = range(0, stop, self.batch_size)
        return [MapBatch(order[i : min(i + self.batch_size, stop)], read) for i in starts], None, count

    def _batch_count(self, rows: int) -> int:
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def _end_feed(self) -> None:
        if self._loop is not None:
            self._loop.ended = True
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


@dataclass
class _Loop:
    """The progress of one loop over the loader, which :meth:`IrisLoader.state_dict` reads."""

    epoch: int
    start: int  #: what the state's ``consumed`` was when the loop started (a resumed epoch), else 0
    batches: int | None  #: the batches the loop hands out, when known (not for a stream read to its end)
    handed: int = 0  #: batches handed out (the one the feed gathered ahead is not)
    rows: int = 0  #: this rank's rows in them
    ended: bool = False  #: it ended, was ended (close, a newer loop), or was left


def _num_rows(dataset: IrisDataset | IrisIterableDataset) -> int:
    """The split's row count for the state: -1 for a stream whose card gives none."""
    if isinstance(dataset, IrisIterableDataset):
        return -1 if dataset.num_rows is None else dataset.num_rows
    return len(dataset)


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
