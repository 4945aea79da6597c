"""What push.py wrote into a local folder, recorded as it was written: each shard's size and sha256.

A file cannot hold its own hash, so a shard's record sits beside it, in the folder's one
bookkeeping folder (``openeds.layout.BOOKKEEPING_DIR``, never published)::

    .openeds/records/data/train-00000-of-00003.parquet.json   {"path": ..., "size": ..., "sha256": ...}

:func:`write_recorded` writes a file and its record. The bytes are hashed on their way out, by
:class:`HashingSink` between the writer (the parquet writer) and the file, so the record costs no
read. The order makes sure that a record never vouches for bytes it did not see, whatever point a
run is killed at, with one process or several (each writes the records of its own shards):

1. the file's old record, if any, is removed;
2. the file is written under a temporary name through the sink, fsynced, and renamed;
3. its record is written (under a temporary name, fsynced, renamed).

So a file has either the record of the very bytes that were written under its name, or none. No
record (a run killed between 2 and 3, a folder from a version before the records, a record that
is not valid JSON or names another file) means the bytes cannot be checked: push.py rebuilds the
shard. A record is checked by :func:`problem`: the size first (no read), then the sha256 of the
file's bytes (a read); size and modification time alone are no check, a bit flip keeps both.
push.py checks a shard it finds already complete by a read when it does not publish, and by the
hash the upload computes anyway when it publishes (``openeds.hub.verify``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

from openeds.disk import write_atomically
from openeds.layout import RECORDS_DIR

logger = logging.getLogger(__name__)

T = TypeVar("T")
_SUFFIX = ".json"


class Record(NamedTuple):
    """The size and sha256 (hex) of a file as it was written."""

    size: int
    sha256: str

    def short(self) -> str:
        return f"{self.size:,} bytes, sha256 {self.sha256[:12]}"


class HashingSink(io.RawIOBase):
    """A binary file object that passes every write on to ``file`` and hashes it on the way (sha256, size)."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file
        self._hash = hashlib.sha256()
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        written = self._file.write(view)
        if written is None or written != len(view):  # a raw file may write less; the sink must see what went out
            raise OSError(f"short write: {written} of {len(view)} bytes")
        self._hash.update(view)
        self._size += len(view)
        return written

    def flush(self) -> None:
        self._file.flush()

    @property
    def record(self) -> Record:
        return Record(self._size, self._hash.hexdigest())


def record_path(folder: Path, relpath: str) -> Path:
    """Where the record of the file ``relpath`` of ``folder`` lives."""
    return folder / RECORDS_DIR / f"{relpath}{_SUFFIX}"


def write_recorded(folder: Path, relpath: str, produce: Callable[[BinaryIO], T]) -> T:
    """Write the file ``relpath`` of ``folder`` with ``produce(sink)``, then its record; return what it returns.

    In the order of the module docstring: a killed run leaves the file either with the record of its
    bytes or without a record, never with a record of other bytes.
    """
    path = folder / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    forget(folder, relpath)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as file:
            sink = HashingSink(file)
            result = produce(sink)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    store(folder, relpath, sink.record)
    return result


def store(folder: Path, relpath: str, record: Record) -> None:
    """Write the record of ``relpath`` atomically (under a temporary name, fsynced, renamed)."""
    text = json.dumps({"path": relpath, "size": record.size, "sha256": record.sha256}, sort_keys=True)
    write_atomically(record_path(folder, relpath), (text + "\n").encode())


def load(folder: Path, relpath: str) -> Record | None:
    """The record of ``relpath``, or None: none written, unreadable, not of this form, or naming another file."""
    try:
        data = json.loads(record_path(folder, relpath).read_bytes())
    except (OSError, ValueError):  # UnicodeDecodeError included
        return None
    if not isinstance(data, dict) or data.get("path") != relpath:
        return None
    size, sha256 = data.get("size"), data.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        return None
    return Record(size, sha256)


def forget(folder: Path, relpath: str) -> None:
    """Remove the record of ``relpath`` (the file is being replaced or removed, or its bytes were found changed)."""
    record_path(folder, relpath).unlink(missing_ok=True)


def prune(folder: Path, keep: Iterable[str] | None = None) -> None:
    """Remove the records whose file is gone (or, given ``keep``, that name no file of it)."""
    root = folder / RECORDS_DIR
    kept = None if keep is None else set(keep)
    for path in root.rglob(f"*{_SUFFIX}") if root.is_dir() else ():
        if path.name.startswith("."):
            continue  # a record being written
        relpath = path.relative_to(root).as_posix().removesuffix(_SUFFIX)
        if (kept is not None and relpath not in kept) or not (folder / relpath).is_file():
            path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of the file's bytes, by a read."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def problem(folder: Path, relpath: str, *, read: bool = True) -> str | None:
    """Why the bytes of the file ``relpath`` are not vouched for by its record, or None if they are.

    The size is compared first; then, with ``read``, the sha256 of the file's bytes (a read of the whole file).
    """
    record = load(folder, relpath)
    if record is None:
        return f"it has no record of the bytes written ({RECORDS_DIR}/{relpath}{_SUFFIX} is missing or unreadable)"
    try:
        size = (folder / relpath).stat().st_size
        digest = file_sha256(folder / relpath) if read and size == record.size else None
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    if size != record.size:
        return f"it holds {size:,} bytes, not the {record.size:,} written"
    if digest is not None and digest != record.sha256:
        return f"its bytes are not those written (sha256 {digest[:12]}, recorded {record.sha256[:12]})"
    return None
