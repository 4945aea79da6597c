"""The shuffle of a streamed split: a keyed-delay order, rebuilt at any row, over row copies in reused memory.

A stream has no random access, so its rows are shuffled as they pass: each is held a
while and comes out later than it came in. Today's order (:class:`KeyedOrder`) must
also be *rebuilt* at any output row without the rows before it, so that a stream
resumes mid-epoch exactly (:meth:`~preprocessing.training.source.StreamRows.rows`,
``start=``). The swap buffer it replaced (each new row takes the place of a random held
one, which comes out; :func:`swap_buffer_order`) cannot be: which rows it holds at
output ``h`` depends on every draw since the epoch began, and its oldest held row
entered ``S * ln(S)`` rows back on average (S = 256: about 1,500 rows, up to 2,600),
with no bound.

**Keyed delays.** Input row ``i`` (its position in the part's input, counted on across
the passes of a ``limit``) gets the key ``i + D_i``. The delay ``D_i`` is a pure
function of ``(seed, epoch, part, i)``: drawn for a chunk of :data:`CHUNK` positions at
a time from their own generator, so any position's delay is known without the others'.
With ``S`` the window (``shuffle_buffer``): ``D = min(U1, U2)`` (``U1``, ``U2`` uniform
integers in ``[0, 5S/4)``, a density falling linearly to 0) with probability 3/4, else
a uniform integer in ``[5S/2, 3S)``; so ``D < 3S`` always. Integer draws only, so the
delays are the same bits on every machine. Rows come out in key order: the held row
of smallest key as soon as every row that could come before it has been read (the
input frontier passed its key: unread rows have keys at least the frontier), or at
once when ``S`` rows are held (so memory never exceeds today's ``S`` rows). At the end
of the input the held rows come out in key order. What comes out when is a function
of the keys alone, so the held set at any output is rebuilt by replaying positions
(integers, a heap; no row read), and every held row entered less than ``3S`` rows
before the frontier: a resumed read re-reads at most ``3S`` rows (plus the rows before
them in their parquet row group), against the swap buffer's unbounded history.

**Why ``3S``, not one window.** If every held row is at most ``A`` rows old and ``M``
rows are held on average, a row's holding time ``H`` lies in ``[0, A]`` and has mean
``M`` (Little's law, one row in per row out). A row's output position minus its input
position is ``H`` minus the rows held when it leaves, so its spread is about the
spread of ``H``, and a variable on ``[0, A]`` with mean ``M`` has variance at most
``M (A - M)``. The swap buffer's spread is about ``S`` (its holding time is geometric,
mean ``S``); matching it with ``M <= S`` needs ``M (A - M) >= S^2``, so ``A >= 2S``:
no shuffle that holds at most ``S`` rows and resumes from one window back can spread
rows as far as today's buffer without random access. ``2S`` is reached only by a
two-point delay (``0`` or ``2S``), which leaves half the rows in input order; the
delays above were chosen by a search (``benchmarks/bench_streaming.py`` measures them)
as the smallest span whose spread and mean displacement stay at least the buffer's
with at most ``S`` rows held: at ``S = 256``, over 20,000 positions, displacement std
264 against 254, mean ``|d|`` 222 against 186, 5-95 % range -245..483 against
-242..503, at most 256 rows held (250 on average), at most 767 rows re-read to resume
(727 on average; the buffer's 1,520 on average, 2,337 at most). Weaker: neighbouring
input rows come out within 16 positions of each other for 8.2 % of pairs against
5.5 %, and a pass's first window moves less (mean ``|d|`` 68 against 122).

The held rows are copies (:class:`RowArena`): a view would keep its whole record
batch (16 rows) in memory, and ``S`` views would keep about ``3.4 * S`` rows
(simulated: rows leave at random, so most batches keep a row or two for long).
"""

from __future__ import annotations

import heapq
import threading
import weakref
from collections.abc import Callable, Iterator

import numpy as np

from preprocessing.augment import Sample
from preprocessing.shapes import HEIGHT, WIDTH
from preprocessing.training.arrow_rows import Row

#: Positions whose delays are drawn together, from one generator: any position's delay needs only its chunk.
CHUNK = 4096
#: SeedSequence spawn key of the delays: apart from the augmentation (none), the map-style order (1), shards (2).
_DELAY_STREAM = 3


def row_bytes(channels: int) -> int:
    """Bytes of one row's arrays: ``H * W * (1 + 1 + 4 + 4 * C)``."""
    return HEIGHT * WIDTH * (2 + 4 + 4 * channels)


class RowArena:
    """Copies of rows in memory reused from row to row: what a shuffle holds.

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
        for out, stored in zip(copies, row.sample, strict=True):
            np.copyto(out, stored)
            out.setflags(write=False)
        return row._replace(sample=copies)

    def _give_back(self, block: np.ndarray) -> None:
        with self._lock:
            self._free.append(block)


def delays(size: int, seed: int, epoch: int, part: int, chunk: int) -> np.ndarray:
    """The delays of positions ``chunk * CHUNK`` to ``(chunk + 1) * CHUNK - 1`` (int64, each below ``3 * size``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, part, chunk], spawn_key=(_DELAY_STREAM,)))
    head = max(1, 5 * size // 4)
    near = np.minimum(rng.integers(0, head, CHUNK), rng.integers(0, head, CHUNK))
    far = rng.integers(5 * size // 2, 3 * size, CHUNK)
    return np.where(rng.integers(0, 4, CHUNK) == 0, far, near)


class KeyedOrder:
    """The order rows leave the shuffle of window ``size``, on positions alone (see the module docstring).

    :meth:`admit` the positions in input order, :meth:`end` at the end of the input,
    and take :meth:`pop` while :meth:`due`. :func:`replay` runs it on positions only
    to the state after a number of outputs.
    """

    def __init__(self, size: int, seed: int, epoch: int, part: int) -> None:
        if size < 1:
            raise ValueError(f"a shuffle window of {size} rows; expected at least 1")
        self.size = size
        #: the rows a held row can be behind the frontier, at most: every delay is below it
        self.span = 3 * size
        self._key = (seed, epoch, part)
        self._heap: list[tuple[int, int]] = []  # (key, position): keys may tie, positions never do
        self._chunk, self._delays = -1, []
        self.frontier = 0  #: positions admitted: the next one to admit
        self.ended = False  #: whether the input has ended (the held rows then all leave, in key order)

    def delay(self, position: int) -> int:
        chunk = position // CHUNK
        if chunk != self._chunk:
            self._chunk, self._delays = chunk, delays(self.size, *self._key, chunk).tolist()
        return self._delays[position - chunk * CHUNK]

    def admit(self, position: int) -> None:
        """Take in the row at ``position``, the frontier (positions come in order, one by one); after an
        :meth:`end` whose rows have all left, the first row of the next pass."""
        if position != self.frontier or (self.ended and self._heap):
            raise ValueError(f"position {position} admitted at frontier {self.frontier}; expected the frontier")
        self.ended = False
        heapq.heappush(self._heap, (position + self.delay(position), position))
        self.frontier += 1

    def end(self) -> None:
        """The input (or a pass of it) ends here: every held row leaves, in key order, before the next is admitted."""
        self.ended = True

    def due(self) -> bool:
        """Whether the held row of smallest key leaves now."""
        heap = self._heap
        return bool(heap) and (self.ended or heap[0][0] < self.frontier or len(heap) > self.size)

    def pop(self) -> int:
        """The position of the row that leaves (call only while :meth:`due`)."""
        return heapq.heappop(self._heap)[1]

    def __len__(self) -> int:
        """Rows held."""
        return len(self._heap)

    @property
    def held(self) -> list[int]:
        """The positions held, in no particular order."""
        return [position for _, position in self._heap]


def replay(order: KeyedOrder, outputs: int, exists: Callable[[int], bool], repeat: bool) -> int:
    """Run ``order`` on positions alone until ``outputs`` rows have left it, or its input has ended and it is empty.

    ``exists(row)``: whether a pass of the input has a row ``row`` (asked in order).
    ``repeat``: the passes follow one another without end (a ``limit``), each one's held
    rows leaving before the next begins. Returns the rows that left; ``order`` is then in
    the state :func:`shuffled` is in once it has handed out that many rows.
    """
    done, base = 0, 0  # base: the position of the pass's first row
    while done < outputs:
        if order.due():
            order.pop()
            done += 1
            continue
        if order.ended:
            if not repeat:
                break
            base = order.frontier  # the pass's rows have all left: the next pass begins
        if exists(order.frontier - base):
            order.admit(order.frontier)
        elif order.frontier == base:
            raise ValueError("a pass without rows; expected at least one row")
        else:
            order.end()
    return done


def shuffled(rows: Iterator[tuple[int, Row] | None], order: KeyedOrder, arena: RowArena) -> Iterator[Row]:
    """``(position, row)`` pairs through the shuffle ``order``, as copies from ``arena``; ``None`` ends a pass
    (its held rows leave before the next pass's first row comes in).

    ``order`` may be fresh (the first position is 0) or replayed (:func:`replay`): then
    ``rows`` starts at the oldest held position (or the frontier if none is held),
    and the rows below the frontier are read again only for the held ones, which come
    out as the uninterrupted shuffle would have handed them out.
    """
    held: dict[int, Row] = {}
    missing = set(order.held)  # held positions to read again, before anything leaves
    try:
        for item in rows:
            if item is not None:
                position, row = item
                if position < order.frontier:
                    if position in missing:
                        held[position] = arena.copy(row)
                        missing.discard(position)
                    if missing:
                        continue
                else:
                    held[position] = arena.copy(row)
                    order.admit(position)
            else:
                _check_read_again(missing)
                order.end()
            while order.due():
                yield held.pop(order.pop())
        _check_read_again(missing)
        order.end()
        while order.due():
            yield held.pop(order.pop())
    finally:
        rows.close()


def _check_read_again(missing: set[int]) -> None:
    if missing:
        raise RuntimeError(
            f"a pass ended before held row {min(missing)} of a resumed shuffle was read again; the stream's files "
            "changed since the epoch began"
        )


def swap_buffer_order(length: int, size: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """The swap buffer this module replaced, on positions alone, for measurements (``bench_streaming``, the tests).

    Each new position takes the place of a random held one, which comes out; at the end
    the rest come out in random order. Returns the positions in output order, and for
    each output while input remains, the rows a resume would re-read: the frontier
    minus the oldest held position.
    """
    buffer: list[int] = []
    out: list[int] = []
    reread: list[int] = []
    for position in range(length):
        if len(buffer) < size:
            buffer.append(position)
            continue
        i = int(rng.integers(size))
        out.append(buffer[i])
        buffer[i] = position
        reread.append(position + 1 - min(buffer))
    out += [buffer[i] for i in rng.permutation(len(buffer))]
    return out, reread
