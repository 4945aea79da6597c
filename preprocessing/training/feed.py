"""The gathering machinery of :class:`~preprocessing.training.loader.IrisLoader`: one pass over batches of rows.

A coordinator thread (:class:`Feed`) gathers each batch into a pool slot with the
loader's threads, one batch ahead of the training loop. A batch is anything whose
``take()`` gives the next ``(position in the batch, Row)``:

* :class:`MapBatch`: a map-style batch, whose rows are known; each thread takes the
  next free position and reads that row (zero-copy views, from the row source);
* :class:`StreamBatch`: a batch of a stream; each thread takes the next row a
  :class:`~preprocessing.training.reader.RowReader` has read, in the order read.

The feed knows nothing of where the batches come from: the loader plans an epoch's
batches, and the feed gathers whichever it is given.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np

from preprocessing.training.arrow_rows import Row
from preprocessing.training.buffers import Pool, Slot
from preprocessing.training.reader import RowReader

#: What a loop over an IrisLoader raises once :meth:`Feed.close` has ended it: the loader's
#: ``close()``, or a newer loop over the same loader (from this thread or another one).
ENDED = "this loop over the IrisLoader was ended by close() or by a newer loop over it; start a new loop"


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


#: Put by :meth:`Feed.close` behind everything else, so that a caller waiting in :meth:`Feed.next`
#: wakes at once and is told that its loop was ended.
_CLOSED = object()


class MapBatch:
    """A map-style batch: its rows are known, and each thread takes the next free position.

    ``read(i)`` gives row ``i`` of the split (:meth:`~preprocessing.training.source.MapRows.row`).
    """

    def __init__(self, rows: np.ndarray, read: Callable[[int], Row]) -> None:
        self._rows, self._read = rows, read
        self._positions: queue.SimpleQueue = queue.SimpleQueue()
        for j in range(len(rows)):
            self._positions.put(j)

    def take(self) -> tuple[int, Row] | None:
        try:
            j = self._positions.get_nowait()
        except queue.Empty:
            return None
        return j, self._read(int(self._rows[j]))


class StreamBatch:
    """A batch of up to ``size`` streamed rows: threads take them in the order the reader reads them."""

    def __init__(self, reader: RowReader, size: int) -> None:
        self._reader, self._size = reader, size
        self._taken = 0
        self._lock = threading.Lock()
        self.ended = False  #: the rows ended before the batch was full

    def take(self) -> tuple[int, Row] | None:
        with self._lock:
            if self._taken == self._size or self.ended:
                return None
            row = self._reader.next()
            if row is None:
                self.ended = True
                return None
            self._taken += 1
            return self._taken - 1, row


def stream_batches(reader: RowReader, batch_size: int, rows: int | None) -> Iterator[StreamBatch]:
    """Batches of the reader's rows: ``rows`` of them in all, or all it reads when ``rows`` is None."""
    while rows is None or rows > 0:
        batch = StreamBatch(reader, batch_size if rows is None else min(batch_size, rows))
        yield batch
        if batch.ended:
            return
        if rows is not None:
            rows -= batch_size


class Feed:
    """One pass over batches of rows: a coordinator thread gathers each batch with the
    executor's threads into a pool slot, at most one batch ahead of the caller.

    A batch is anything whose ``take()`` gives the next ``(position, Row)`` or None.
    A batch that comes out empty ends the pass, and so does a short one with ``drop_last``.
    """

    def __init__(
        self,
        batches: Iterable[MapBatch] | Iterable[StreamBatch],
        gather_row: Callable[[Slot, int, Row], str],
        pool: Pool,
        executor: ThreadPoolExecutor,
        num_threads: int,
        drop_short: int = 0,
        reader: RowReader | None = None,
    ) -> None:
        self._batches, self._gather_row, self._pool = batches, gather_row, pool
        self._executor, self._num_threads = executor, num_threads
        self._drop_short, self._reader = drop_short, reader
        self._ready: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(1)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="IrisLoader-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self._batches:
                while not self._room.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                slot = self._pool.take()
                try:
                    names = self._gather_batch(slot, batch)
                except BaseException:
                    self._pool.give_back(slot)
                    raise
                if self._stop.is_set() or not names or len(names) < self._drop_short:  # closed, or the end
                    self._pool.give_back(slot)
                    if self._stop.is_set():
                        return
                    break
                self._ready.put((slot, len(names), names))
            self._ready.put(None)
        except BaseException as error:  # noqa: BLE001 (handed to the caller's thread)
            self._ready.put(_Failed(error))

    def _gather_batch(self, slot: Slot, batch: MapBatch | StreamBatch) -> list[str]:
        names: dict[int, str] = {}
        tasks = [self._executor.submit(self._gather, slot, batch, names) for _ in range(self._num_threads)]
        done, running = wait(tasks, return_when=FIRST_EXCEPTION)
        errors = [task.exception() for task in done if task.exception() is not None]
        if errors:
            self._stop.set()  # the other threads stop after their current row,
            if self._reader is not None:
                self._reader.close()  # (or as soon as they wait for one)
            wait(running)  # and are done with the slot before it goes back
            raise errors[0]
        return [names[j] for j in range(len(names))]

    def _gather(self, slot: Slot, batch: MapBatch | StreamBatch, names: dict[int, str]) -> None:
        # Each thread takes the next row until none is left, so a slow row (a flip, a
        # blur) holds up only its own thread.
        while not self._stop.is_set():
            taken = batch.take()
            if taken is None:
                return
            j, row = taken
            names[j] = self._gather_row(slot, j, row)

    def next(self) -> tuple[Slot, int, list[str]] | None:
        """The next gathered batch, or None at the end. Re-raises a gather error as it is.

        Once the feed is closed, from this thread or another, it raises :data:`ENDED`, also
        to a caller already waiting here: a batch taken before the close is still handed
        out (it left the queue, so the close did not put its slot back), and the call after
        it raises.
        """
        if self._closed:
            raise RuntimeError(ENDED)
        while True:
            try:
                item = self._ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._ready.empty():
                    if self._closed:  # set before the thread is stopped: a close under way
                        raise RuntimeError(ENDED) from None
                    raise RuntimeError("IrisLoader's feed thread ended without a batch or an error") from None
        if item is _CLOSED:
            raise RuntimeError(ENDED)
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        self._room.release()
        return item

    def close(self) -> None:
        """Stop gathering, put back the slots of batches gathered but not handed out, and wake
        a caller waiting in :meth:`next` (it raises :data:`ENDED`). Safe from any thread, twice too."""
        self._closed = True
        self._stop.set()
        if self._reader is not None:
            self._reader.close()  # stops the stream; a thread waiting for a row gets None
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=60)
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                self._pool.give_back(item[0])
        self._ready.put(_CLOSED)
