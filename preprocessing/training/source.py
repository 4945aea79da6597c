"""The row source: one split, map-style or streamed, made once into what every feed reads.

:func:`open_rows` makes a split its row source: its columns checked, v1 or v2 detected
(``preprocessed``), its distance-map channels counted (``num_classes``), its row count
known where there is one (``num_rows``), once:

* :class:`MapRows`, over a map-style ``datasets.Dataset``: random access, row ``i`` as a
  :class:`~preprocessing.training.arrow_rows.Row` of zero-copy views;
* :class:`StreamRows`, over a streamed ``datasets.IterableDataset``
  (``load_dataset(..., streaming=True)``, which reads the parquet shards as it goes, so
  training needs no local copy of the data): the rows each part of an epoch reads, in
  order, as views of its Arrow record batches
  (``with_format("arrow").iter(batch_size=16)``, whose array columns keep their
  ``Array2D``/``Array3D`` types).

:class:`~preprocessing.training.dataset.IrisDataset`,
:class:`~preprocessing.training.streaming.IrisIterableDataset` and
:class:`~preprocessing.training.loader.IrisLoader` all read from a source (the loader
makes it and hands it to the dataset it wraps), and none of them derives these again.
A source hands out stored rows (:class:`~preprocessing.training.arrow_rows.Row`: a
number, the arrays, the filename) and keeps no state from one epoch to the next but
reused memory: an epoch's order follows from ``(seed, epoch)`` (and the part), a row's
augmentation draws from ``(seed, epoch, number)``. No torch here.

**Row numbers.** A row's number keys its augmentation draws
(``np.random.default_rng([seed, epoch, number])``). A reader that is part ``p`` of
``P`` (a DDP rank, or a rank's DataLoader worker) numbers the ``k``-th row it reads
``k * P + p``. Read by one reader in file order, that is the row's position in the
split, its index in the map-style split, so an unshuffled stream gives the map-style
items one for one. Split one row in ``P`` (see below), it is still the position.
Split by shards, or with the shard order shuffled, it is a number unique to the row
in that epoch.

**Parts.** ``P > 1`` readers split the stream with
``datasets.distributed.split_dataset_by_node`` when its shard count is a multiple of
``P`` (each reads whole shards). Otherwise every reader reads every shard and keeps
every ``P``-th row, as ``split_dataset_by_node`` then does; that step is done here, on
the Arrow batches, because datasets 3.6 does it on Python rows (measured: 2.5 rows/s
instead of about 70, and int64 lists instead of the stored dtypes).

**Shuffling.** ``order_seed`` reorders the shards every epoch where datasets can do so
on the Arrow path: ``IterableDataset.set_epoch`` reorders a stream's shards in datasets
5.x (alike on every rank, before each takes its share; ``split_dataset_by_node`` starts a
stream at epoch 0 again, so the epoch is set after it); datasets 3.6 keeps the file
order, and only shuffles shards together with a row buffer that leaves the Arrow path.
``buffer`` rows then go through a shuffle of that window
(:mod:`preprocessing.training.shuffle`), which holds at most ``buffer`` row copies.

**Resuming mid-epoch.** ``StreamRows.rows(..., start=h)`` yields exactly what the same
call yields from its ``(h+1)``-th row on, and reads little before: the shuffle's order is
a function of positions (replayed on integers to output ``h``), the part's files and
their order are the ones datasets reads for it that epoch, and the parquet footers say
in which file and row group a position lies. datasets 5.x then reads a file from a given
row group (its parquet ``row_groups_list``): no file before is opened (but for its
footer), no row group before is decoded. Only the rows the shuffle held at ``h`` are
read again, with the rows between them: fewer than ``3 * buffer`` part rows (times the
part count for a split row by row), plus the rows before the first in its row group.
datasets' own ``IterableDataset.load_state_dict`` skips whole shards without opening
them but decodes the resumed shard up to the offset, and loses a shuffle buffer's rows.
datasets 3.6 reads a streamed parquet file from its start only: ``start > 0`` is then a
one-line :class:`StreamResumeError` naming the release, never a wrong resume.
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections.abc import Iterator
from copy import copy
from typing import NamedTuple

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets.distributed import split_dataset_by_node
from datasets.iterable_dataset import ArrowExamplesIterable
from datasets.packaged_modules.parquet.parquet import Parquet

from preprocessing.augment import Sample, order_rng
from preprocessing.shapes import DIST_CHANNELS, HEIGHT, WIDTH
from preprocessing.training.arrow_rows import (
    ArrowRows,
    DatasetFormatError,
    Row,
    check_requested,
    dist_channels,
    require_columns,
)
from preprocessing.training.shuffle import KeyedOrder, RowArena, replay, shuffled

#: Rows per Arrow table read from a stream: push.py's row group, so one table is one decoded row group.
STREAM_BATCH_ROWS = 16
#: Rows a shuffle buffer holds by default: 917 MB for ``pupil`` (3.58 MB a row), 1.44 GB for ``full`` (5.63 MB).
DEFAULT_SHUFFLE_BUFFER = 256


def detect_preprocessed(dataset: datasets.Dataset) -> bool:
    """Whether the images already have gamma + CLAHE, from the ``preprocessed`` column.

    No column (v1) means raw images. Reads the column once, through Arrow.
    """
    if "preprocessed" not in dataset.column_names:
        return False
    column = dataset.data.column("preprocessed")
    if pc.all(column).as_py():
        return True
    if not pc.any(column).as_py():
        return False
    raise DatasetFormatError(
        "the dataset's 'preprocessed' column mixes True and False; expected one value for every "
        "row. Split the dataset by that column and wrap each part in its own IrisDataset"
    )


class MapRows:
    """A map-style split as a row source: zero-copy views of its rows, by index.

    Made once per split: the type and the columns are checked, ``preprocessed`` is
    resolved against the ``preprocessed`` column (read once, through Arrow), and the
    distance channels are counted from the first row. The views follow any
    ``select``/``shuffle`` index mapping. They are not pickled: a DataLoader worker
    started with spawn or forkserver rebuilds them from the ``datasets.Dataset``, which
    pickles memory-mapped tables by path.

    ``read`` and ``row`` may be called from several threads at once: they only build views.
    """

    def __init__(self, dataset: datasets.Dataset, preprocessed: bool | None = None) -> None:
        if isinstance(dataset, datasets.IterableDataset):
            raise TypeError(
                "hf_dataset is a streamed datasets.IterableDataset (load_dataset(..., streaming=True)), which has "
                "no random access; use IrisIterableDataset for its items or IrisLoader for batches, which both "
                "read streams, or load the split without streaming=True"
            )
        if isinstance(dataset, datasets.IterableDatasetDict):
            raise TypeError(
                "hf_dataset is a datasets.IterableDatasetDict, every split of a stream; expected one split, "
                "e.g. load_dataset(..., streaming=True)['train'], for IrisLoader or IrisIterableDataset"
            )
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(
                f"hf_dataset is a {type(dataset).__name__}; expected one split as a map-style "
                "datasets.Dataset, e.g. load_dataset(...)['train']"
            )
        require_columns(dataset.column_names)
        #: the split
        self.dataset = dataset
        #: whether the stored images already have gamma + CLAHE (v2), from the ``preprocessed`` column
        self.preprocessed = check_requested(
            preprocessed, detect_preprocessed(dataset), "preprocessed" in dataset.column_names
        )
        #: distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)
        self.num_classes = dist_channels(dataset.data.column("dist_map"))
        self._views = self._make_views()

    @property
    def num_rows(self) -> int:
        """The split's row count."""
        return len(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, index: int) -> tuple[Sample, str]:
        """Row ``index`` (``0 <= index < len``) as read-only views of the stored arrays, and its filename."""
        return self._views.read(index)

    def row(self, index: int, number: int | None = None) -> Row:
        """Row ``index`` as a :class:`Row` numbered ``number`` (default: ``index``)."""
        return self._views.row(index, number)

    def _make_views(self) -> ArrowRows:
        # ``select``/``shuffle``/``train_test_split`` keep the table and add an index
        # mapping; datasets has no public accessor for it. ``data`` is the Arrow table,
        # memory-mapped for on-disk datasets.
        indices = self.dataset._indices
        return ArrowRows(self.dataset.data, self.num_classes, None if indices is None else indices.column(0).to_numpy())

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_views": None}  # the views hold Arrow chunks, which pickle by value

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._views = self._make_views()


def split_rows(stream: datasets.IterableDataset) -> int | None:
    """The split's row count from the dataset card (``info.splits``), or None when the card has none."""
    splits = stream.info.splits
    name = None if stream.split is None else str(stream.split)
    if not splits or name not in splits:
        return None
    return splits[name].num_examples


def shard_order_key(seed: int, epoch: int) -> int:
    """The ``set_epoch`` value that orders the shards of ``epoch`` (never 0: 0 keeps the file order)."""
    return int(order_rng(seed, epoch, shards=True).integers(1, 2**31))


class StreamRows:
    """The rows of a streamed split, read as zero-copy views of its Arrow record batches.

    The columns are checked when it is made, from the stream's features (no rows are
    read, except the first one of v1 data, whose flat ``dist_map`` gives the channel
    count). v2 streams have a ``preprocessed`` column: it must be True on every row,
    which is checked batch by batch as the rows are read. v1 streams have none.
    """

    def __init__(self, stream: datasets.IterableDataset, preprocessed: bool | None = None) -> None:
        if not isinstance(stream, datasets.IterableDataset):
            raise TypeError(
                f"stream is a {type(stream).__name__}; expected one split of a stream, a datasets.IterableDataset "
                "such as load_dataset(..., streaming=True)['train']"
            )
        if getattr(stream, "_distributed", None) is not None:  # no public accessor
            raise ValueError(
                "the stream is already split by node (split_dataset_by_node); pass the whole split: the rows are "
                "split by rank and world_size here, where the number of batches of every rank is known"
            )
        # No public accessor either: a stream that went through take, skip, filter, map or shuffle
        # keeps the card's row count, which then no longer counts its rows (len, DDP shares).
        source = getattr(stream, "_ex_iterable", None)
        if not isinstance(source, ArrowExamplesIterable):
            raise DatasetFormatError(
                f"the stream is not a split as load_dataset(..., streaming=True) gives it (its rows come through "
                f"{type(source).__name__}, e.g. from take, skip, filter, map or shuffle), so the dataset card's row "
                "count does not count its rows; pass the split unmodified: the loader shuffles, splits and counts it"
            )
        features = stream.features
        first = None
        if features is None or not isinstance(features.get("dist_map"), datasets.Array3D):
            first = _first_row(stream)  # v1, or no features: the first row tells the layout
            columns = first.column_names
        else:
            columns = list(features)
        require_columns(columns)
        has_column = "preprocessed" in columns
        #: whether the stored images already have gamma + CLAHE (v2), from the columns
        self.preprocessed = check_requested(preprocessed, has_column, has_column)
        #: distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)
        self.num_classes = _channels(features["dist_map"]) if first is None else dist_channels(first.column("dist_map"))
        #: the split's row count from the dataset card, or None
        self.num_rows = split_rows(stream)
        self.stream = stream
        self._arena: RowArena | None = None
        #: rows of the Arrow tables this source took from datasets, all reads together: what it had decoded
        #: (a measure for tests and benchmarks; reads from several threads may miss a count)
        self.rows_decoded = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arena": None}  # DataLoader workers: the stream pickles, the buffer stays

    def drop_buffer(self) -> None:
        """Let go of the shuffle's memory (rows still held keep their copies)."""
        self._arena = None

    def rows(
        self,
        epoch: int,
        *,
        part: int = 0,
        parts: int = 1,
        order_seed: int | None = None,
        buffer: int = 0,
        limit: int | None = None,
        start: int = 0,
    ) -> Iterator[Row]:
        """The rows part ``part`` of ``parts`` reads in ``epoch``, in the order they come out.

        ``order_seed``: reorder the shards (datasets 5.x) and, with ``buffer > 0``, pass the
        rows through a shuffle of window ``buffer``
        (:class:`~preprocessing.training.shuffle.KeyedOrder`, drawn from
        ``(order_seed, epoch, part)``). ``limit``: exactly this many rows; a part whose
        stream ends before reads it again from its start (as ``DistributedSampler`` pads),
        each pass letting out all the shuffle holds before the next (so no row comes twice
        before the part is read through), and the rows that would come out after the first
        ``limit`` are not read in this epoch (other rows each epoch, as the shard order and
        the shuffle change).

        ``start=h``: exactly what the same call with ``start=0`` yields from its
        ``(h+1)``-th row on (the same rows, numbers and values), without reading the rows
        before: whole files and row groups are skipped from their parquet footers, and
        only the rows the shuffle still held at output ``h`` are read again, with the
        rows between them (at most ``3 * buffer`` part rows, plus the rest of the first
        one's row group). Needs a parquet stream on datasets 5.x:
        :meth:`check_resumable` says why not, in one line, and this raises it at once.
        """
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start={start!r}; expected a non-negative int, the rows this part has handed out")
        order = arena = None
        if order_seed is not None and buffer > 0:
            if self._arena is None:
                self._arena = RowArena(self.num_classes)
            # this epoch's own reference: drop_buffer() (IrisLoader.close) from another thread lets
            # go of the arena for the next epochs, not under the passes of this one
            arena = self._arena
            order = KeyedOrder(buffer, order_seed, epoch, part)  # one order for the epoch, through every pass
        layout = None
        if start:
            self.check_resumable()
            layout = _Layout(self._part_stream(epoch, part, parts, order_seed), self._by_shards(parts), part, parts)
        return self._rows(epoch, part, parts, order_seed, order, arena, limit, start, layout)

    def check_resumable(self) -> None:
        """Raise a one-line :class:`StreamResumeError` unless :meth:`rows` can start mid-epoch on this stream.

        It can where datasets reads a streamed parquet file from a given row group
        (``row_groups_list``, datasets 5.x): a resumed read then opens no file before the
        resumed row's and decodes no row group before its own. datasets 3.6 reads a
        streamed file from its start only, and its own resume
        (``IterableDataset.load_state_dict``) decodes the file up to the offset (and loses
        a shuffle buffer); that line refuses instead of decoding up to a shard per part.
        """
        source = self.stream._ex_iterable  # an ArrowExamplesIterable: checked when made
        builder = getattr(source.generate_tables_fn, "__self__", None)
        if "row_groups_list" not in source.kwargs:
            if isinstance(builder, Parquet):  # a subclass of it on datasets 3.6, named after the data
                raise StreamResumeError(
                    f"datasets {datasets.__version__} reads a streamed parquet file from its start only, so a stream "
                    "cannot resume mid-epoch without decoding the rows before; resume needs datasets 5.x (pip "
                    "install 'datasets>=5'), or restart the epoch from its first batch"
                )
            raise StreamResumeError(
                f"the stream's files are read by datasets' {type(builder).__name__} builder, which cannot start at a "
                "row; resuming a stream mid-epoch needs parquet files (push.py writes them), or restart the epoch "
                "from its first batch"
            )
        filters = getattr(getattr(builder, "config", None), "filters", None)
        if filters is not None:
            raise StreamResumeError(
                f"the stream was loaded with filters={filters!r}, so its files' footers do not count "
                "its rows and a resumed read cannot find its place; load it without filters to resume mid-epoch"
            )

    def _rows(
        self,
        epoch: int,
        part: int,
        parts: int,
        order_seed: int | None,
        order: KeyedOrder | None,
        arena: RowArena | None,
        limit: int | None,
        start: int,
        layout: _Layout | None,
    ) -> Iterator[Row]:
        repeat = limit is not None
        if repeat and start >= limit:
            return
        first = start  # the first input position to read
        if layout is not None:
            if repeat and not layout.exists(0):
                raise self._no_rows(limit, part, parts)
            if order is not None:
                if replay(order, start, layout.exists, repeat) < start:
                    return  # the part has no more rows than start
                held = order.held
                first = min(held) if held else order.frontier
            elif not repeat and not layout.exists(start):
                return
        inputs = self._inputs(epoch, part, parts, order_seed, limit, first, layout)
        out = _rows_of(inputs) if order is None else shuffled(inputs, order, arena)
        produced = start
        try:
            for row in out:
                yield row
                produced += 1
                if produced == limit:
                    return
        finally:
            out.close()

    def _inputs(
        self,
        epoch: int,
        part: int,
        parts: int,
        order_seed: int | None,
        limit: int | None,
        first: int,
        layout: _Layout | None,
    ) -> Iterator[tuple[int, Row] | None]:
        """``(position, row)`` for every input position from ``first`` on: the part's pass, again and again with
        a ``limit`` (positions counted on across passes, ``None`` after each pass), from the pass row of ``first``."""
        repeat = limit is not None
        base, begin = 0, first  # the input position of the pass's first row; the pass row to start at
        if first and not layout.exists(first):  # in a later pass: passes repeat only with a limit
            length = layout.length()
            if not repeat:
                return
            base, begin = first - first % length, first % length
        while True:
            rows = self._part_rows(epoch, part, parts, order_seed, layout.at(begin) if begin else None)
            count = 0
            try:
                for row in rows:
                    yield base + (row.index - part) // parts, row
                    count += 1
            finally:
                rows.close()
            if not repeat:
                return
            if begin + count == 0:
                raise self._no_rows(limit, part, parts)
            yield None  # the pass ends: the shuffle lets out what it holds before the next pass
            base, begin = base + begin + count, 0

    def _no_rows(self, limit: int, part: int, parts: int) -> DatasetFormatError:
        return DatasetFormatError(
            f"part {part} of {parts} of the stream of split {self.stream.split} has no rows; expected {limit} per "
            "part. Use fewer ranks or DataLoader workers, or a split with more rows"
        )

    def _by_shards(self, parts: int) -> bool:
        """Whether ``parts`` parts read whole shards each (else each reads all and keeps every ``parts``-th row)."""
        return parts > 1 and self.stream.n_shards % parts == 0

    def _part_stream(self, epoch: int, part: int, parts: int, order_seed: int | None) -> datasets.IterableDataset:
        """The stream part ``part`` reads in ``epoch``: its shards, in the epoch's order."""
        stream = self.stream.with_format("arrow")  # a new stream at epoch 0: datasets 5.x reorders shards after
        if self._by_shards(parts):
            stream = split_dataset_by_node(stream, rank=part, world_size=parts)
        if order_seed is not None:
            # After the split, which starts a stream at epoch 0 again: every part then orders the
            # whole shard list alike and takes its share of that order, a disjoint share each epoch.
            stream.set_epoch(shard_order_key(order_seed, epoch))
        return stream

    def _part_rows(
        self, epoch: int, part: int, parts: int, order_seed: int | None, resume: _Resume | None = None
    ) -> Iterator[Row]:
        """The rows of one pass of part ``part``, in stream order; with ``resume``, from its row on."""
        by_shards = self._by_shards(parts)
        position, skip = 0, 0  # the stream position of the next table's first row; the first one to hand out
        if resume is None:
            stream = self._part_stream(epoch, part, parts, order_seed)
        else:
            stream, position, skip = resume
        finished = False
        tables = stream.iter(batch_size=STREAM_BATCH_ROWS)
        try:
            for table in tables:
                self.rows_decoded += table.num_rows
                self._check_batch(table)
                reader = ArrowRows(table, self.num_classes)
                for i in range(max(0, skip - position), table.num_rows):
                    if parts == 1 or by_shards:
                        yield reader.row(i, (position + i) * parts + part)
                    elif (position + i) % parts == part:
                        yield reader.row(i, position + i)
                position += table.num_rows
            finished = True
        finally:
            tables.close()
            if not finished:
                # A stream left mid-way: free its Arrow scan now, while the interpreter runs.
                # Left to the garbage collector at exit, an Arrow thread may release it during
                # finalization and abort the process (see reader.close_open_streams).
                gc.collect()

    def _check_batch(self, table: pa.Table) -> None:
        """v2 rows only: the ``preprocessed`` column of every batch must be all True."""
        if not self.preprocessed:
            return
        column = table.column("preprocessed")
        if pc.all(column).as_py():
            return
        names = table.column("filename")
        where = f"the streamed rows {names[0].as_py()} to {names[-1].as_py()} ({table.num_rows} rows):"
        if pc.any(column).as_py():
            raise DatasetFormatError(
                f"{where} 'preprocessed' column mixes True and False; expected True on every row of a stream with "
                "that column (v2). Split the data by that column and read each part on its own"
            )
        raise DatasetFormatError(
            f"{where} 'preprocessed' is False, but a stream with a 'preprocessed' column is read as v2 data, "
            "True on every row. Load this data map-style, or remove the column if its images are raw (v1)"
        )


class StreamResumeError(ValueError):
    """A stream that cannot resume mid-epoch here (its datasets release, its files, its filters). One line."""


def _rows_of(inputs: Iterator[tuple[int, Row] | None]) -> Iterator[Row]:
    try:
        for item in inputs:
            if item is not None:
                yield item[1]
    finally:
        inputs.close()


class _Resume(NamedTuple):
    """Where a resumed pass reads: a stream from a file's row group on, the stream position of its first
    row, and the stream position of the first row to hand out."""

    stream: datasets.IterableDataset
    first: int
    skip: int


class _Layout:
    """Where each row of a part's pass lies in the files it reads, from their parquet footers, read as needed.

    The files and their order are the ones datasets itself reads for the part in this
    epoch (its shard order, its share of the shards), taken from the stream prepared as
    for iteration; each file's row groups are counted from its footer, opened with the
    ``open`` datasets reads that file with. A part row ``q`` is the stream row
    ``q * step + offset``: ``step`` is the part count where every part reads every file
    and keeps every ``parts``-th row, else 1.
    """

    def __init__(self, stream: datasets.IterableDataset, by_shards: bool, part: int, parts: int) -> None:
        source = stream._prepare_ex_iterable_for_iteration(batch_size=STREAM_BATCH_ROWS)  # no public accessor
        while not isinstance(source, ArrowExamplesIterable):
            source = source.ex_iterable
        self._source = source
        self._info, self._split = stream.info.copy(), stream.split
        self._files = source.kwargs["files"]
        self._groups = source.kwargs["row_groups_list"]
        function = getattr(source.generate_tables_fn, "__func__", source.generate_tables_fn)
        # the builder module's open, patched by datasets for streaming (remote paths, the download config)
        self._open = function.__globals__.get("open", open)
        self._step, self._offset = (1, 0) if parts == 1 or by_shards else (parts, part)
        self._counts: list[list[int]] = []  # rows of each row group read, per file read so far
        self._ends: list[int] = []  # stream rows up to the end of each file read so far

    def _read_footer(self) -> bool:
        k = len(self._counts)
        if k == len(self._files):
            return False
        with self._open(self._files[k], "rb") as file:
            metadata = pq.read_metadata(file)
        groups = self._groups[k]
        ids = range(metadata.num_row_groups) if groups is None else groups
        counts = [metadata.row_group(g).num_rows for g in ids]
        self._counts.append(counts)
        self._ends.append((self._ends[-1] if self._ends else 0) + sum(counts))
        return True

    def _covers(self, position: int) -> bool:
        while (not self._ends or self._ends[-1] <= position) and self._read_footer():
            pass
        return bool(self._ends) and position < self._ends[-1]

    def exists(self, row: int) -> bool:
        """Whether the pass has a row ``row``."""
        return self._covers(row * self._step + self._offset)

    def length(self) -> int:
        """The pass's rows (reads every footer)."""
        while self._read_footer():
            pass
        total = self._ends[-1] if self._ends else 0
        return max(0, -(-(total - self._offset) // self._step))

    def at(self, row: int) -> _Resume:
        """A stream that reads the pass from its row ``row`` on: from that row's row group, no file opened before."""
        position = row * self._step + self._offset
        if not self._covers(position):
            raise ValueError(f"row {row} is past the end of the pass ({self.length()} rows)")
        k = bisect_right(self._ends, position)
        first = self._ends[k - 1] if k else 0
        groups, counts = self._groups[k], self._counts[k]
        g = 0
        while first + counts[g] <= position:
            first += counts[g]
            g += 1
        selected = tuple(range(len(counts)) if groups is None else groups)[g:]
        kwargs = {
            name: value[k:] if isinstance(value, list) and len(value) == len(self._files) else value
            for name, value in self._source.kwargs.items()
        }
        kwargs["row_groups_list"] = [selected, *kwargs["row_groups_list"][1:]]
        source = copy(self._source)
        source.kwargs = kwargs
        # A stream at epoch 0 and not split: the files are already the part's, in the epoch's order.
        stream = datasets.IterableDataset(source, info=self._info, split=self._split).with_format("arrow")
        return _Resume(stream, first, position)


def _channels(feature: datasets.Array3D) -> int:
    channels, *frame = feature.shape
    if tuple(frame) != (HEIGHT, WIDTH) or channels not in DIST_CHANNELS.values():
        raise DatasetFormatError(
            f"the stream's 'dist_map' feature has shape {feature.shape}; expected (C, {HEIGHT}, {WIDTH}) with C = "
            f"{' or '.join(map(str, DIST_CHANNELS.values()))} (configs {', '.join(DIST_CHANNELS)})"
        )
    return channels


def _first_row(stream: datasets.IterableDataset) -> pa.Table:
    """The stream's first row as an Arrow table, its iterator closed at once."""
    tables = stream.with_format("arrow").iter(batch_size=1)
    try:
        table = next(tables, None)
    finally:
        tables.close()
        gc.collect()
    if table is None:
        raise DatasetFormatError(f"the stream of split {stream.split} has no rows; expected OpenEDS v1 or v2 rows")
    return table


#: A split as its row source: random access (map-style), or each part's rows of an epoch in order (streamed).
RowSource = MapRows | StreamRows


def open_rows(data: datasets.Dataset | datasets.IterableDataset, preprocessed: bool | None = None) -> RowSource:
    """One split as its row source: a stream as :class:`StreamRows`, anything else as :class:`MapRows`,
    which names what it expected if it is not a map-style split either."""
    if isinstance(data, datasets.IterableDataset):
        return StreamRows(data, preprocessed)
    return MapRows(data, preprocessed)
