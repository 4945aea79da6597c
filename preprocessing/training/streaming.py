"""Per-sample items of a streamed split: :class:`IrisIterableDataset`.

For users who cannot hold the data on disk: ``load_dataset(..., streaming=True)``
gives a ``datasets.IterableDataset`` that reads the parquet shards as it goes. For
batches, give it to :class:`~preprocessing.training.loader.IrisLoader`; for items (a
``DataLoader`` with a custom ``collate_fn``, a per-sample loop),
:class:`IrisIterableDataset` yields what :class:`~preprocessing.training.dataset.IrisDataset`
yields for the same rows. Rows are read as Arrow record batches with their dtypes
(:class:`~preprocessing.training.source.StreamRows`), never as Python rows.

Example::

    from datasets import load_dataset
    from torch.utils.data import DataLoader
    from preprocessing.augment import TRAIN_AUGMENT
    from preprocessing.training import IrisIterableDataset

    stream = load_dataset("Conner/openeds-precomputed", split="train", streaming=True)
    train = IrisIterableDataset(stream, split="train", transform=TRAIN_AUGMENT, seed=0)
    loader = DataLoader(train, batch_size=8, num_workers=2)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for image, label, filenames, spatial_weights, dist_map in loader:
            ...
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import numpy as np
import torch

from preprocessing.augment import Sample, Transform
from preprocessing.training.arguments import check_seed, check_shuffle_buffer, check_transform, ranks
from preprocessing.training.arrow_rows import DatasetFormatError, Row
from preprocessing.training.items import Item, prepare, to_item
from preprocessing.training.reader import keep_closed_at_exit
from preprocessing.training.source import DEFAULT_SHUFFLE_BUFFER, StreamRows


class IrisIterableDataset(torch.utils.data.IterableDataset):
    """The items of :class:`~preprocessing.training.dataset.IrisDataset`, from a streamed split.

    Args:
        stream: one split from ``load_dataset(..., split=..., streaming=True)``, whole
            (not split by node), v1 or v2, config ``pupil`` or ``full``.
        split, transform, preprocessed: as for ``IrisDataset``.
        seed: seeds the shuffle and every sample's augmentation; ``None`` draws one
            (:attr:`seed`). Required with ``world_size > 1``.
        shuffle: ``None`` shuffles the train split only. Shuffling reorders the
            shards every epoch (datasets 5.x; 3.6 keeps the file order) and passes the
            rows through a shuffle of window ``shuffle_buffer``
            (:mod:`preprocessing.training.shuffle`), which holds at most that many row
            copies: ``shuffle_buffer`` x 3.58 MB for ``pupil``, x 5.63 MB for ``full``
            (917 MB and 1.44 GB at the default 256), in every DataLoader worker.
        rank, world_size: this process's share for distributed data parallel; by
            default from ``torch.distributed`` when it is initialised.

    Each ``for`` loop reads epoch :attr:`epoch`; call :meth:`set_epoch` before each
    epoch, as with a ``DistributedSampler`` (it reaches persistent DataLoader workers
    too). Row number ``r`` (see :mod:`preprocessing.training.source`) of epoch ``e`` draws
    from ``np.random.default_rng([seed, e, r])``: read unshuffled by one process, ``r``
    is the row's index in the map-style split, and the items equal
    ``IrisDataset.item(r, np.random.default_rng([seed, e, r]))``.

    **Parts.** In a ``DataLoader`` with ``W`` workers, worker ``w`` of rank ``k`` reads
    part ``k * W + w`` of ``world_size * W``: disjoint parts, whole shards each when the
    shard count is a multiple of ``world_size * W``, else every
    ``(world_size * W)``-th row (then every worker reads, and drops, all the others).
    One process reads the whole split. With ``world_size > 1`` every part yields
    exactly ``n // (world_size * W)`` rows, ``n`` the split's row count from the
    dataset card, so that every rank has the same number of batches: the last
    ``n % (world_size * W)`` rows of an epoch, at most, are not read (more with
    shards of unequal sizes; a part whose shards hold fewer rows reads its first rows
    again).

    **Batch counts.** ``len()`` is the rows this rank reads. A ``DataLoader`` batches
    each worker's rows on their own, so with ``W > 1`` workers it can yield up to
    ``W - 1`` batches more than ``len(loader)`` says, the last batch of each worker being
    short; with DDP the count is still the same on every rank. ``IrisLoader`` batches
    the rank's rows together and yields exactly ``len(loader)`` batches.
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        split: str = "train",
        transform: Transform | None = None,
        preprocessed: bool | None = None,
        seed: int | None = None,
        *,
        shuffle: bool | None = None,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if isinstance(stream, datasets.Dataset):
            raise TypeError(
                "stream is a map-style datasets.Dataset; IrisIterableDataset reads streamed splits "
                "(load_dataset(..., streaming=True)). Use IrisDataset, or IrisLoader, for a map-style split"
            )
        rank, world_size = _check_arguments(transform, shuffle_buffer, seed, rank, world_size)
        self._setup(StreamRows(stream, preprocessed), split, transform, seed, shuffle, shuffle_buffer, rank, world_size)

    @classmethod
    def from_rows(
        cls,
        rows: StreamRows,
        split: str = "train",
        transform: Transform | None = None,
        seed: int | None = None,
        *,
        shuffle: bool | None = None,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> IrisIterableDataset:
        """An IrisIterableDataset over a row source already made (``IrisLoader`` makes one, for itself and this)."""
        rank, world_size = _check_arguments(transform, shuffle_buffer, seed, rank, world_size)
        dataset = cls.__new__(cls)
        dataset._setup(rows, split, transform, seed, shuffle, shuffle_buffer, rank, world_size)
        return dataset

    def _setup(
        self,
        rows: StreamRows,
        split: str,
        transform: Transform | None,
        seed: int | None,
        shuffle: bool | None,
        shuffle_buffer: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.rank, self.world_size = rank, world_size
        #: the row source: the stream's columns checked, v1 or v2 detected, the channels counted
        self.rows = rows
        self.split = split
        self.transform = transform
        #: the seed of the shuffle and of every sample's draws (drawn once when none is given)
        self.seed: int = int(np.random.SeedSequence().entropy) if seed is None else seed
        self.shuffle = split == "train" if shuffle is None else bool(shuffle)
        self.shuffle_buffer = shuffle_buffer
        if self.world_size > 1 and self.num_rows is None:
            raise DatasetFormatError(
                f"world_size={self.world_size} needs the split's row count, to stop every rank after the same number "
                f"of batches, but the stream of split {rows.stream.split} has none: its dataset card gives none. Load "
                "it from a repo or folder with a card (push.py writes one)"
            )
        # in shared memory, so that set_epoch reaches persistent DataLoader workers
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def num_classes(self) -> int:
        """Distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)."""
        return self.rows.num_classes

    @property
    def preprocessed(self) -> bool:
        """Whether the stored images already have gamma + CLAHE (v2); v1's raw images get it on the CPU."""
        return self.rows.preprocessed

    @property
    def num_rows(self) -> int | None:
        """The split's row count from the dataset card, or None when the card has none."""
        return self.rows.num_rows

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next loops read epoch ``epoch``."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch={epoch!r}; expected a non-negative int")
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        """Rows this rank reads in an epoch (the split's rows on one process); at most that with DataLoader workers."""
        if self.num_rows is None:
            raise TypeError(
                f"the stream of split {self.rows.stream.split} has no row count: its dataset card gives none; "
                "load it from a repo or folder with a card (push.py writes one)"
            )
        return self.num_rows if self.world_size == 1 else self.num_rows // self.world_size

    def part_rows(self, epoch: int, part: int, parts: int, start: int = 0) -> Iterator[Row]:
        """The stored rows part ``part`` of ``parts`` reads in ``epoch``, in order (not yet prepared).

        ``start=h``: from its ``(h+1)``-th row on, exactly as the whole epoch's read goes on
        there, without reading the rows before (:meth:`StreamRows.rows`; a one-line
        :class:`~preprocessing.training.source.StreamResumeError` where the stream cannot).
        """
        limit = self.num_rows // parts if self.world_size > 1 else None  # a row count is required then
        return self.rows.rows(
            epoch,
            part=part,
            parts=parts,
            order_seed=self.seed if self.shuffle else None,
            buffer=self.shuffle_buffer,
            limit=limit,
            start=start,
        )

    def prepare(self, row: Row, epoch: int) -> Sample:
        """Row ``row`` of ``epoch`` preprocessed and, on the train split, augmented with its draws."""
        augment = self.transform is not None and self.split == "train"
        rng = np.random.default_rng([self.seed, epoch, row.index]) if augment else None
        return prepare(row.sample, self.preprocessed, self.transform if augment else None, rng)

    def __iter__(self) -> Iterator[Item]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        epoch = self.epoch
        rows = self.part_rows(epoch, self.rank * workers + worker, self.world_size * workers)
        keep_closed_at_exit(rows)
        try:
            for row in rows:
                yield to_item(self.prepare(row, epoch), row.filename)
        finally:
            rows.close()


def _check_arguments(
    transform: Transform | None, shuffle_buffer: int, seed: int | None, rank: int | None, world_size: int | None
) -> tuple[int, int]:
    """The arguments checked before the stream is read; ``(rank, world_size)``."""
    check_transform(transform)
    check_shuffle_buffer(shuffle_buffer)
    rank, world_size = ranks(rank, world_size)
    check_seed(seed, world_size)
    return rank, world_size
