"""Rows of a streamed split: zero-copy views of the Arrow record batches of a ``datasets.IterableDataset``.

``load_dataset(..., streaming=True)`` reads the parquet shards as it goes, so training
needs no local copy of the data. :class:`StreamRows` reads such a stream as Arrow
record batches (``with_format("arrow").iter(batch_size=16)``), whose array columns keep
their ``Array2D``/``Array3D`` types, and hands out :class:`~preprocessing.arrow_rows.Row` objects
that view them, through the same :class:`~preprocessing.arrow_rows.ArrowRows` as a
map-style split. No torch here.

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
``buffer`` rows then go through a shuffle buffer (:func:`shuffled`). The buffer holds
copies (:class:`RowArena`): a view would keep its whole record batch (16 rows) in
memory, and a buffer of ``S`` views would keep about ``3.4 * S`` rows (simulated: rows
leave the buffer at random, so most batches keep a row or two for long).
"""

from __future__ import annotations

import atexit
import gc
import queue
import threading
import weakref
from collections.abc import Callable, Iterator

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.distributed import split_dataset_by_node
from datasets.iterable_dataset import ArrowExamplesIterable

from preprocessing.shapes import DIST_CHANNELS, HEIGHT, WIDTH
from preprocessing.training.arrow_rows import (
    ArrowRows,
    DatasetFormatError,
    Row,
    check_requested,
    dist_channels,
    require_columns,
)
from preprocessing.augment import Sample, order_rng

#: Rows per Arrow table read from a stream: push.py's row group, so one table is one decoded row group.
STREAM_BATCH_ROWS = 16
#: Rows a shuffle buffer holds by default: 917 MB for ``pupil`` (3.58 MB a row), 1.44 GB for ``full`` (5.63 MB).
DEFAULT_SHUFFLE_BUFFER = 256


def row_bytes(channels: int) -> int:
    """Bytes of one row's arrays: ``H * W * (1 + 1 + 4 + 4 * C)``."""
    return HEIGHT * WIDTH * (2 + 4 + 4 * channels)


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
        self.num_classes = (
            _channels(features["dist_map"]) if first is None else dist_channels(first.column("dist_map"))
        )
        #: the split's row count from the dataset card, or None
        self.num_rows = split_rows(stream)
        self.stream = stream
        self._arena: RowArena | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arena": None}  # DataLoader workers: the stream pickles, the buffer stays

    def drop_buffer(self) -> None:
        """Let go of the shuffle buffer's memory (rows still held keep their copies)."""
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
    ) -> Iterator[Row]:
        """The rows part ``part`` of ``parts`` reads in ``epoch``, in the order they come out.

        ``order_seed``: reorder the shards (datasets 5.x) and, with ``buffer > 0``, pass the
        rows through a shuffle buffer of ``buffer`` rows drawing from
        ``order_rng(order_seed, epoch, part)``. ``limit``: exactly this many rows; a part
        whose stream ends before reads it again from its start (as ``DistributedSampler``
        pads), and the rows after the first ``limit`` that come out of the buffer are not
        read in this epoch (other rows each epoch, as the shard order and the buffer change).
        """
        rng = arena = None
        if order_seed is not None and buffer > 0:
            if self._arena is None:
                self._arena = RowArena(self.num_classes)
            # this epoch's own reference: drop_buffer() (IrisLoader.close) from another thread lets
            # go of the arena for the next epochs, not under the passes of this one
            arena = self._arena
            rng = order_rng(order_seed, epoch, part)  # one stream for the epoch, through every pass

        def one_pass() -> Iterator[Row]:
            rows = self._part_rows(epoch, part, parts, order_seed)
            return rows if rng is None else shuffled(rows, buffer, rng, arena)

        return one_pass() if limit is None else self._exactly(limit, one_pass, part, parts)

    def _exactly(self, limit: int, one_pass: Callable[[], Iterator[Row]], part: int, parts: int) -> Iterator[Row]:
        produced = 0
        while produced < limit:
            before = produced
            read = one_pass()
            try:
                for row in read:
                    yield row
                    produced += 1
                    if produced == limit:
                        return
            finally:
                read.close()
            if produced == before:
                raise DatasetFormatError(
                    f"part {part} of {parts} of the stream of split {self.stream.split} has no rows; expected "
                    f"{limit} per part. Use fewer ranks or DataLoader workers, or a split with more rows"
                )

    def _part_rows(self, epoch: int, part: int, parts: int, order_seed: int | None) -> Iterator[Row]:
        stream = self.stream.with_format("arrow")  # a new stream at epoch 0: datasets 5.x reorders shards after
        by_shards = parts > 1 and stream.n_shards % parts == 0
        if by_shards:
            stream = split_dataset_by_node(stream, rank=part, world_size=parts)
        if order_seed is not None:
            # After the split, which starts a stream at epoch 0 again: every part then orders the
            # whole shard list alike and takes its share of that order, a disjoint share each epoch.
            stream.set_epoch(shard_order_key(order_seed, epoch))
        position, finished = 0, False
        tables = stream.iter(batch_size=STREAM_BATCH_ROWS)
        try:
            for table in tables:
                self._check_batch(table)
                reader = ArrowRows(table, self.num_classes)
                for i in range(table.num_rows):
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
                # finalization and abort the process (see close_open_streams).
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


class RowArena:
    """Copies of rows in memory reused from row to row: what a shuffle buffer holds.

    A copy's block returns for reuse once nothing refers to the copy's arrays (a
    ``weakref.finalize`` on the array they all view). Writing into fresh pages costs
    about 1.8 ms a row here against 0.2 ms into reused ones.
    """

    def __init__(self, channels: int) -> None:
        self._channels = channels
        self._free: list[np.ndarray] = []
        self._lock = threading.RLock()  # a finalizer may give a block back from any thread, this one included
        self.allocated = 0  #: blocks alive: free, or holding a row

    def copy(self, row: Row) -> Row:
        with self._lock:
            block = self._free.pop() if self._free else None
            if block is None:
                self.allocated += 1
        if block is None:
            block = np.empty(row_bytes(self._channels), np.uint8)
        # An array over the block whose base is not an array: every view of it keeps it alive.
        owner = np.frombuffer(memoryview(block), np.uint8)
        weakref.finalize(owner, self._give_back, block).atexit = False
        frame = HEIGHT * WIDTH
        image = owner[:frame].reshape(HEIGHT, WIDTH)
        label = owner[frame : 2 * frame].reshape(HEIGHT, WIDTH)
        weights = owner[2 * frame : 6 * frame].view(np.float32).reshape(HEIGHT, WIDTH)
        dist = owner[6 * frame :].view(np.float32).reshape(self._channels, HEIGHT, WIDTH)
        copies = Sample(image, label, weights, dist)
        for out, stored in zip(copies, row.sample):
            np.copyto(out, stored)
            out.setflags(write=False)
        return row._replace(sample=copies)

    def _give_back(self, block: np.ndarray) -> None:
        with self._lock:
            self._free.append(block)


def shuffled(rows: Iterator[Row], size: int, rng: np.random.Generator, arena: RowArena) -> Iterator[Row]:
    """``rows`` through a shuffle buffer of ``size`` copies: each new row takes the place of a
    random one, which comes out; at the end the rest come out in random order."""
    buffer: list[Row] = []
    try:
        for row in rows:
            row = arena.copy(row)
            if len(buffer) < size:
                buffer.append(row)
                continue
            i = int(rng.integers(size))
            row, buffer[i] = buffer[i], row
            yield row
        for i in rng.permutation(len(buffer)):
            yield buffer[i]
            buffer[i] = None  # let its block go
    finally:
        rows.close()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class RowReader:
    """Reads ``rows`` in a thread of its own, at most ``depth`` rows ahead of the threads that take them.

    :meth:`next` may be called from several threads. An error while reading reaches
    the caller of :meth:`next` as that exception. :meth:`close` stops the thread,
    which closes ``rows`` (and so the stream); readers still open when the
    interpreter exits are closed by an ``atexit`` hook.
    """

    def __init__(self, rows: Iterator[Row], depth: int = STREAM_BATCH_ROWS) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(rows,), name="IrisLoader-stream", daemon=True)
        keep_closed_at_exit(self)
        self._thread.start()

    def _run(self, rows: Iterator[Row]) -> None:
        try:
            for row in rows:
                if not self._put(row):
                    return
            self._put(None)
        except BaseException as error:  # noqa: BLE001 (handed to the thread that takes the rows)
            self._put(_Failed(error))
        finally:
            rows.close()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def next(self) -> Row | None:
        """The next row, or None at the end of the rows or once closed."""
        while not self._done:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return None
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("IrisLoader's stream thread ended without a row or an error") from None
                continue
            if isinstance(item, _Failed):
                self._done = True
                raise item.error
            if item is None:
                self._done = True
            return item
        return None

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock the thread if it waits to put a row
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            # A thread stuck in a stalled read is left to end by itself (it is a daemon, and it
            # closes the stream once the read returns), so that a loop's break never hangs.
            self._thread.join(timeout=10)


#: row readers and row iterators that may hold a stream open
_OPEN: weakref.WeakSet = weakref.WeakSet()


def keep_closed_at_exit(closable: RowReader | Iterator[Row]) -> None:
    """Have :func:`close_open_streams` close ``closable`` (a :class:`RowReader` or a generator) at exit."""
    _OPEN.add(closable)


@atexit.register
def close_open_streams() -> None:
    """Close the streams still open, before the interpreter finalizes.

    With pyarrow 26, an Arrow thread that finishes a read after its stream was left
    releases datasets' ``Array2D``/``Array3D`` extension types (Python objects). If the
    interpreter is finalizing by then, CPython ends that thread with ``pthread_exit``,
    whose unwinding through Arrow's C++ ends in ``std::terminate``: "terminate called
    without an active exception", exit code 134 (or a hang in Arrow's thread-pool
    shutdown). Closing the stream and collecting its garbage while the interpreter
    still runs avoids that.
    """
    for closable in list(_OPEN):
        try:
            closable.close()
        except ValueError:  # a generator running in another thread: its reader closes it
            pass
