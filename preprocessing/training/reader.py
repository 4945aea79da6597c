"""The reader thread of a streamed split, and the closing of streams left open at exit.

:class:`RowReader` reads a stream's rows in a thread of its own, a few rows ahead of the
gather threads of :class:`~preprocessing.training.loader.IrisLoader`.
:func:`close_open_streams` closes, before the interpreter finalizes, every reader and row
iterator registered with :func:`keep_closed_at_exit`.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Iterator

from preprocessing.training.arrow_rows import Row


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

    def __init__(self, rows: Iterator[Row], depth: int) -> None:
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
