"""Write v2 rows as typed, compact, deterministic parquet shards.

Encoding (measured in ``benchmarks/bench_parquet.py`` against ``push_to_hub``'s default
snappy parquet): zstd level 3; BYTE_STREAM_SPLIT for ``dist_map`` (float32 with
smooth values: splitting the bytes lets zstd find the repeated exponents);
dictionary encoding for ``image``, ``label`` and ``spatial_weights`` (few distinct
values, which the RLE/bit-packed indices then compress very well).

The ``huggingface`` schema metadata of :attr:`datasets.Features.arrow_schema` goes into
every file, so ``load_dataset`` restores the Array2D/Array3D features. A
``openeds`` metadata entry records what the shard was built from, so a re-run can
tell a finished shard from a stale one without reading its data. A separate
``openeds_provenance`` entry, written only for a shard of the synthetic sample, says so
(``openeds.provenance``); it plays no part in telling finished shards from stale ones. The
file's own size and sha256 cannot be in it: they are hashed as the bytes go out and recorded
beside the shard (:mod:`openeds.records`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from openeds import records

if TYPE_CHECKING:  # only named in annotations here; importing it costs push.py a second of start-up
    import datasets

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
#: rows per row group: about 57 MB of raw arrays (90 MB in `full`), bounded memory on write and read
ROW_GROUP_ROWS = 16
_META_KEY = b"openeds"
#: footer key of what the frames are (``{"synthetic": true}``), apart from the build record of ``_META_KEY``
_PROVENANCE_KEY = b"openeds_provenance"


def _leaf(name: str, depth: int) -> str:
    return name + ".list.element" * depth


def _writer_options(features: datasets.Features) -> dict[str, Any]:
    depth = {n: len(f.shape) for n, f in features.items() if hasattr(f, "shape")}
    return {
        "compression": COMPRESSION,
        "compression_level": COMPRESSION_LEVEL,
        "use_dictionary": [_leaf(n, depth[n]) for n in ("image", "label", "spatial_weights")],
        "column_encoding": {_leaf("dist_map", depth["dist_map"]): "BYTE_STREAM_SPLIT"},
        "write_statistics": ["filename", "preprocessed"],
    }


def arrow_schema(features: datasets.Features, extra_metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """``features.arrow_schema`` (Array2D/Array3D extension types, ``huggingface``
    metadata) plus ``extra_metadata``. ``Features.from_arrow_schema`` only restores
    the typed features when the file's fields carry the same extension types."""
    schema = features.arrow_schema
    metadata = dict(schema.metadata or {})
    for key, value in (extra_metadata or {}).items():
        metadata[key.encode()] = value.encode()
    return schema.with_metadata(metadata)


def _nested_list(batch: np.ndarray) -> pa.Array:
    """``(B, *shape)`` array -> B rows of nested lists, without copying through Python."""
    array = pa.array(np.ascontiguousarray(batch).reshape(-1))
    count = batch.size
    for size in reversed(batch.shape[1:]):
        count //= size
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * size)
        array = pa.ListArray.from_arrays(offsets, array)
    return array


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = []
    for field in schema:
        values = [row[field.name] for row in rows]
        if isinstance(field.type, pa.ExtensionType):
            storage = _nested_list(np.stack(values))
            columns.append(pa.ExtensionArray.from_storage(field.type, storage))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_shard(
    folder: Path,
    relpath: str,
    rows: Iterable[dict[str, Any]],
    features: datasets.Features,
    source: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
) -> int:
    """Stream ``rows`` into the shard ``relpath`` of ``folder`` in row groups of :data:`ROW_GROUP_ROWS`; return
    the row count.

    The file appears under its final name only once complete (written to a temporary name,
    fsynced, then renamed), so a killed run never leaves a shard that looks finished; its size and
    sha256, hashed as the bytes go out, are then recorded beside it (:func:`openeds.records.write_recorded`).
    ``source`` is stored in the footer (see :func:`read_source`), and so is ``provenance`` when given
    (see :func:`provenance_of`).
    """
    metadata = {_META_KEY.decode(): json.dumps(source, sort_keys=True)}
    if provenance:
        metadata[_PROVENANCE_KEY.decode()] = json.dumps(provenance, sort_keys=True)
    schema = arrow_schema(features, metadata)

    def write(sink: BinaryIO) -> int:
        count, buffer = 0, []
        with pq.ParquetWriter(sink, schema, **_writer_options(features)) as writer:
            for row in rows:
                buffer.append(row)
                if len(buffer) == ROW_GROUP_ROWS:
                    writer.write_table(rows_to_table(buffer, schema), row_group_size=ROW_GROUP_ROWS)
                    count, buffer = count + len(buffer), []
            if buffer:
                writer.write_table(rows_to_table(buffer, schema), row_group_size=ROW_GROUP_ROWS)
                count += len(buffer)
        return count

    return records.write_recorded(folder, relpath, write)


def read_source(path: Path, *, strict: bool = False) -> dict[str, Any] | None:
    """The ``source`` a finished shard was written with, or None if foreign (no record) or unreadable.

    ``strict``: an unreadable file or record raises (``OSError``, ``pyarrow.ArrowException``,
    ``ValueError``) instead of returning None, so that the caller can tell it from a foreign one.
    """
    try:
        metadata = pq.read_schema(path).metadata or {}
        raw = metadata.get(_META_KEY)
        return json.loads(raw) if raw else None
    except (OSError, pa.ArrowException, ValueError):
        if strict:
            raise
        return None


def source_of(metadata: pq.FileMetaData) -> dict[str, Any] | None:
    """The ``source`` record in a shard's footer (its key-value metadata), as :func:`write_shard` stored it;
    None if the footer has none, or one that is not a JSON object (a file push.py did not write)."""
    raw = (metadata.metadata or {}).get(_META_KEY)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:  # UnicodeDecodeError included
        return None
    return record if isinstance(record, dict) else None


def provenance_of(metadata: pq.FileMetaData) -> dict[str, Any]:
    """What a shard's footer says of its frames (``{"synthetic": True}`` for the synthetic sample); ``{}`` if
    nothing, or nothing readable."""
    raw = (metadata.metadata or {}).get(_PROVENANCE_KEY)
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:  # UnicodeDecodeError included
        return {}
    return record if isinstance(record, dict) else {}


def read_provenance(path: Path) -> dict[str, Any]:
    """:func:`provenance_of` a shard's footer, read from its file; ``{}`` if it cannot be read."""
    try:
        return provenance_of(pq.read_metadata(path))
    except (OSError, pa.ArrowException):
        return {}


def num_rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def read_rows(
    path: Path, limit: int | None = None, *, indices: Sequence[int] | None = None, columns: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Rows of a shard as NumPy arrays (for the preview picture): the first ``limit``, or those at ``indices``
    (in that order); ``columns`` (default: all). Only the row groups that hold them are read."""
    file = pq.ParquetFile(path)
    total = file.metadata.num_rows
    indices = list(range(min(total, total if limit is None else limit)) if indices is None else indices)
    if not indices:
        return []
    sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
    starts = np.cumsum([0, *sizes])
    group_of = {i: int(np.searchsorted(starts, i, side="right")) - 1 for i in indices}
    groups = sorted(set(group_of.values()))
    first = dict(zip(groups, np.cumsum([0, *(sizes[g] for g in groups)]), strict=False))  # each group's row in table
    table = file.read_row_groups(groups, columns=list(columns) if columns else None)
    table = table.take([int(first[group_of[i]] + i - starts[group_of[i]]) for i in indices])
    rows: list[dict[str, Any]] = [{} for _ in range(table.num_rows)]
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        # The arrays are Array2D/Array3D extension columns once `datasets` is imported (it registers
        # the types), and their nested-list storage before: the same values either way.
        storage = column.storage if isinstance(column.type, pa.ExtensionType) else column
        if pa.types.is_list(storage.type):
            shape = [table.num_rows]
            while pa.types.is_list(storage.type):
                storage = storage.flatten()
                shape.append(len(storage) // int(np.prod(shape)))
            values = storage.to_numpy(zero_copy_only=False).reshape(shape)
        else:
            values = column.to_pylist()
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return rows
