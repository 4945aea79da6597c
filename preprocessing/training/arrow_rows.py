"""Zero-copy reads of OpenEDS v1 and v2 rows from Arrow data, and the checks of their columns.

Rows are read as NumPy views of the Arrow columns (uint8 stays uint8, float32 stays
float32), never through the default Python format, which turns every array into
nested lists. v1 (flat ``list<uint8>``/``list<float>`` columns) and v2 (typed
``Array2D``/``Array3D``) read alike.

:class:`ArrowRows` reads the rows of one Arrow table: a map-style split's whole table,
or one record batch of a stream. The row sources (:mod:`preprocessing.training.source`)
check a split's columns with the functions here and hand its tables in. No torch and no
``datasets`` here.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from preprocessing.augment import Sample
from preprocessing.shapes import DIST_CHANNELS, HEIGHT, WIDTH

#: The array columns and the Arrow type of their values, in v1 and v2 alike.
COLUMN_TYPES = {
    "image": pa.uint8(),
    "label": pa.uint8(),
    "spatial_weights": pa.float32(),
    "dist_map": pa.float32(),
}


class DatasetFormatError(ValueError):
    """The dataset does not fit :class:`IrisDataset`, or contradicts what was asked. One line."""


class Row(NamedTuple):
    """One stored row: its number (the key of its augmentation draws), its arrays, its filename.

    The arrays are read-only views of the Arrow data (or of a shuffle buffer's copy),
    not yet preprocessed or augmented.
    """

    index: int
    sample: Sample
    filename: str


def require_columns(column_names: Iterable[str]) -> None:
    """Raise a one-line :class:`DatasetFormatError` unless the OpenEDS v1/v2 columns are all there."""
    names = list(column_names)
    missing = [c for c in (*COLUMN_TYPES, "filename") if c not in names]
    if missing:
        raise DatasetFormatError(
            f"the dataset lacks column(s) {', '.join(missing)}; it has {', '.join(names)}. "
            "Expected OpenEDS v1 or v2 rows (image, label, spatial_weights, dist_map, filename)"
        )


def check_requested(requested: bool | None, found: bool, has_column: bool) -> bool:
    """``requested`` (None: take ``found``) checked against what the data says; raises if they disagree."""
    if requested is None or requested == found:
        return found
    flag = "yes" if requested else "no"
    if requested and not has_column:
        raise DatasetFormatError(
            f"preprocessed=True (--preprocessed {flag}), but the dataset has no 'preprocessed' "
            "column: it is v1 data with raw images. Use --preprocessed auto to apply gamma + CLAHE "
            "on the CPU, or load the v2 data"
        )
    state = "already have" if found else "do not have"
    raise DatasetFormatError(
        f"preprocessed={requested} (--preprocessed {flag}), but the dataset's 'preprocessed' column "
        f"is {found}: its images {state} gamma + CLAHE. Use --preprocessed auto"
    )


def _leaf_view(array: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The flat values under a (nested) list array, and each row's start and stop in them.

    Handles the storages ``datasets`` uses: ``Array2D``/``Array3D`` extension arrays
    over nested lists, plain ``list<...>`` (v1), and fixed-size lists. Nothing is
    copied: the values are the Arrow array the rows point into.
    """
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    starts = np.arange(len(array))
    stops = starts + 1
    while True:
        kind = array.type
        if pa.types.is_fixed_size_list(kind):
            # ``values`` ignores the array's own offset, so add it back.
            starts = (starts + array.offset) * kind.list_size
            stops = (stops + array.offset) * kind.list_size
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            # ``offsets`` follow the array's offset and index into the full ``values``.
            offsets = array.offsets.to_numpy()
            starts, stops = offsets[starts], offsets[stops]
        else:
            return array, starts, stops
        array = array.values


class _ArrayColumn:
    """Per-row zero-copy views of one array column, across the column's chunks.

    A chunk's views are built the first time one of its rows is read, then kept.
    """

    def __init__(self, column: pa.ChunkedArray, name: str, shape: tuple[int, ...]) -> None:
        self._name = name
        self._shape = shape
        self._size = math.prod(shape)
        self._chunks = column.chunks
        self._first_rows = np.cumsum([0] + [len(chunk) for chunk in self._chunks]).tolist()
        self._views: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, row: int) -> np.ndarray:
        k = bisect_right(self._first_rows, row) - 1
        if k not in self._views:
            self._views[k] = self._chunk_view(k)
        values, starts = self._views[k]
        start = starts[row - self._first_rows[k]]
        return values[start : start + self._size].reshape(self._shape)

    def _chunk_view(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        values, starts, stops = _leaf_view(self._chunks[k])
        expected = COLUMN_TYPES[self._name]
        if values.type != expected or values.null_count:
            found = f"{values.null_count} null values" if values.type == expected else f"{values.type} values"
            raise DatasetFormatError(
                f"column {self._name!r} holds {found}; expected non-null {expected} as in the v1/v2 schema. "
                "Fix the column (e.g. Dataset.cast_column) before wrapping it"
            )
        bad = np.flatnonzero(stops - starts != self._size)
        if bad.size:
            row = self._first_rows[k] + int(bad[0])
            raise DatasetFormatError(
                f"column {self._name!r}, row {row} has {int(stops[bad[0]] - starts[bad[0]])} values; "
                f"expected {self._size} (shape {self._shape})"
            )
        # A read-only view of the Arrow buffer (memory-mapped for on-disk datasets).
        return values.to_numpy(zero_copy_only=True), starts


def dist_channels(column: pa.ChunkedArray) -> int:
    """Distance-map channels from the first row: 2 (``pupil``) or 4 (``full``)."""
    for chunk in column.chunks:
        if len(chunk):
            _, starts, stops = _leaf_view(chunk.slice(0, 1))
            size = int(stops[0] - starts[0])
            break
    else:
        return DIST_CHANNELS["pupil"]  # an empty dataset has no rows to read
    channels, rest = divmod(size, HEIGHT * WIDTH)
    if rest or channels not in DIST_CHANNELS.values():
        raise DatasetFormatError(
            f"column 'dist_map' row 0 has {size} values; expected C x {HEIGHT} x {WIDTH} with C = "
            f"{' or '.join(map(str, DIST_CHANNELS.values()))} (configs {', '.join(DIST_CHANNELS)})"
        )
    return channels


class ArrowRows:
    """Zero-copy reads of whole rows of one Arrow table: a map-style split's (``index``: its
    ``select``/``shuffle`` index mapping, if any) or one record batch of a stream.

    ``read`` may be called from several threads at once: it only builds views.
    """

    def __init__(self, table: pa.Table, dist_channels: int, index: np.ndarray | None = None) -> None:
        shapes = {name: (HEIGHT, WIDTH) for name in COLUMN_TYPES}
        shapes["dist_map"] = (dist_channels, HEIGHT, WIDTH)
        self._columns = {name: _ArrayColumn(table.column(name), name, shape) for name, shape in shapes.items()}
        self._filenames = table.column("filename")
        self._index = index

    def read(self, index: int) -> tuple[Sample, str]:
        row = index if self._index is None else int(self._index[index])
        sample = Sample(*(self._columns[name][row] for name in Sample._fields))
        return sample, self._filenames[row].as_py()

    def row(self, index: int, number: int | None = None) -> Row:
        """Row ``index`` as a :class:`Row` numbered ``number`` (default: ``index``)."""
        return Row(index if number is None else number, *self.read(index))
