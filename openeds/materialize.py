"""Materialise v2 as parquet shards in a local folder: chunked, parallel and resumable.

Each split of each config becomes ``{dir}/{split}-{i:05d}-of-{n:05d}.parquet`` with
``dir`` ``data`` (config ``pupil``) or ``full`` (config ``full``). A shard holds a
fixed run of the split's frames in sorted stem order, so the layout depends only on the
input. Every shard records in its footer what it was built from: a hash of the contents
of its input files, the format version, the config, and what computed it (the
preprocessing's ``COMPUTE_VERSION`` and the OpenCV and SciPy versions). A re-run skips a
shard whose record matches and rebuilds anything else, so a corrected input file or a
change in what the code computes always rebuilds. Shards are written under a temporary
name and renamed when complete, so a killed run leaves nothing that looks finished.

The footer's record says what a shard was built from, not that its bytes are still those
written: each shard's size and sha256, hashed as it is written, are recorded beside it
(``openeds.records``, in the folder's ``.openeds/``). A shard whose footer matches is reused
only if its record is there and its size agrees; with ``reread`` (a run that does not publish)
its bytes are read and hashed against the record too, so a bit flip, even with the file's
size and modification time kept, is rebuilt rather than reused. A run that publishes checks
them by the hash the upload computes instead (``openeds.hub.verify``).

The same records tell whether a split the folder holds but this run does not rebuild
(another config, another split) is still current: :func:`stale_reason` compares its
records with what the raw data would give now, without building anything (hashing the
inputs costs about 0.3 % of a build, ``benchmarks/bench_rerun.py``). ``push.py`` removes
such a split and says so, so that a folder never describes data built from other inputs.
:func:`records_stale_reason` makes the same comparison from records read elsewhere: the
footers of the shards a Hub repo holds (``openeds.hub.kept``).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import pyarrow as pa
import scipy
import xxhash
from tqdm import tqdm

from openeds import disk, parquet, raw, records, schema
from openeds.card import SplitSize
from openeds.layout import CONFIG_DIRS, complete_shard_set, shard_path, split_prefix
from openeds.names import shown
from openeds.rows import make_row
from preprocessing import COMPUTE_VERSION

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_SHARD_BYTES = 500 * 1000**2
#: what the footer of a shard built from the synthetic sample says of its frames (``parquet.provenance_of``)
SYNTHETIC_PROVENANCE = {"synthetic": True}
#: parquet bytes per row measured on the synthetic sample (benchmarks/bench_parquet.py),
#: with headroom; only used to check the free disk space up front
_EXPECTED_ROW_BYTES = {"pupil": 1_000_000, "full": 1_300_000}


class MaterializeError(RuntimeError):
    """Materialisation cannot go on. The message is one line and says what to do."""


@dataclass(frozen=True)
class ShardTask:
    config: schema.ConfigName
    split: str
    index: int
    count: int
    pairs: tuple[raw.Pair, ...]

    @property
    def relpath(self) -> str:
        return shard_path(split_prefix(self.config, self.split), self.index, self.count)

    def source(self, input_digests: Mapping[raw.Pair, str]) -> dict:
        """What the shard is built from; a finished shard with another record is stale.

        ``input_digests`` holds :func:`digest_pair` of each pair, so the record changes
        whenever any input byte changes.
        """
        digest = xxhash.xxh3_128()
        for pair in self.pairs:
            digest.update(f"{pair.stem}:{input_digests[pair]}\n".encode())
        return {**self.frames(), "inputs_xxh3_128": digest.hexdigest()}

    def frames(self) -> dict:
        """The record without the input hash: what computes the shard, and which frames it holds."""
        return {
            **versions(),
            "config": self.config,
            "split": self.split,
            "rows": len(self.pairs),
            "first": self.pairs[0].stem,
            "last": self.pairs[-1].stem,
        }


def versions() -> dict:
    """The part of a shard's record that names what computes it; another value means other numbers."""
    return {
        "format_version": schema.FORMAT_VERSION,
        "compute_version": COMPUTE_VERSION,
        "opencv": cv2.__version__,
        "scipy": scipy.__version__,
    }


def digest_pair(pair: raw.Pair) -> str:
    """xxh3-128 of the full contents of a frame's image and label files."""
    digest = xxhash.xxh3_128()
    for role, path in (("image", pair.image), ("label", pair.label)):
        try:
            content = path.read_bytes()
        except OSError as e:
            raise raw.RawDataError(f"{role} {shown(path)} cannot be read: {e.strerror or e}") from None
        digest.update(f"{role}:{len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()


def hash_inputs(pairs: Iterable[raw.Pair], digests: dict[raw.Pair, str]) -> dict[raw.Pair, str]:
    """Fill ``digests`` with :func:`digest_pair` of each of ``pairs`` it lacks (each frame is hashed once)."""
    todo = sorted({pair for pair in pairs if pair not in digests}, key=lambda p: (str(p.image), p.stem))
    for pair in tqdm(todo, unit="frame", desc="Hashing inputs", disable=not todo):
        digests[pair] = digest_pair(pair)
    return digests


def plan_shards(
    pairs: Sequence[raw.Pair], config: schema.ConfigName, split: str, max_shard_bytes: int
) -> list[ShardTask]:
    """Cut a split into shards of at most ``max_shard_bytes`` (bounded by the raw row size)."""
    per_shard = max_shard_bytes // schema.raw_row_bytes(config)
    if per_shard < 1:
        raise MaterializeError(
            f"--max-shard-size {max_shard_bytes} bytes is smaller than one {config} row "
            f"({schema.raw_row_bytes(config)} bytes); expected at least that"
        )
    return _cut(pairs, config, split, per_shard)


def _cut(pairs: Sequence[raw.Pair], config: schema.ConfigName, split: str, per_shard: int) -> list[ShardTask]:
    count = -(-len(pairs) // per_shard)  # integers: a --max-shard-size of any size never rounds to 0 shards
    return [ShardTask(config, split, i, count, tuple(pairs[i * per_shard : (i + 1) * per_shard])) for i in range(count)]


def _build(
    task: ShardTask,
    source: dict,
    out_dir: Path,
    provenance: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    def rows():
        for pair in task.pairs:
            yield make_row(pair, task.config)
            if progress:
                progress(1)

    features = schema.features_for(task.config)
    return parquet.write_shard(out_dir, task.relpath, rows(), features, source, provenance)


def _build_in_worker(args: tuple[ShardTask, dict, Path, dict | None]) -> ShardTask:
    _build(*args)
    return args[0]


def _reuse(
    task: ShardTask, source: dict, out_dir: Path, provenance: dict | None, *, reread: bool
) -> tuple[bool, str | None]:
    """Whether the shard of `task` in `out_dir` can be reused as it is, and if not, why (None: nothing to say,
    the shard is absent or was built from other inputs).

    A shard of a marked raw split (``provenance``) whose footer does not say so (built from a copy that had lost
    its markers, or before they existed) is rebuilt, once, to say it; one that says so keeps saying it, marked
    split or not, since its record pins the very frames of the sample.
    """
    path = out_dir / task.relpath
    if not path.is_file() or parquet.read_source(path) != source:
        return False, None
    if provenance is not None and parquet.read_provenance(path) != provenance:
        return False, None
    why = records.problem(out_dir, task.relpath, read=reread)
    return why is None, why


def _reusable(
    tasks: Sequence[ShardTask],
    sources: Mapping[str, dict],
    out_dir: Path,
    synthetic: Collection[str],
    *,
    reread: bool,
    threads: int,
) -> list[tuple[ShardTask, bool, str | None]]:
    """`_reuse` of every task, a few at once (reading and hashing a shard's bytes releases the GIL)."""

    def reuse(task: ShardTask) -> tuple[bool, str | None]:
        return _reuse(task, sources[task.relpath], out_dir, _provenance(task, synthetic), reread=reread)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(tasks) or 1))) as pool:
        return [(task, *verdict) for task, verdict in zip(tasks, pool.map(reuse, tasks), strict=True)]


def _remove_stale(out_dir: Path, tasks: Sequence[ShardTask]) -> None:
    """Delete old shards of the rebuilt splits that the plan no longer has (e.g. another shard count)."""
    keep = {task.relpath for task in tasks}
    for config, split in {(t.config, t.split) for t in tasks}:
        prefix = split_prefix(config, split)
        folder, name = prefix.rsplit("/", 1)
        for old in [*out_dir.glob(f"{prefix}*.parquet"), *(out_dir / folder).glob(f".{name}*.partial")]:
            relpath = old.relative_to(out_dir).as_posix()
            if relpath not in keep:
                logger.info("Removing stale %s", old)
                records.forget(out_dir, relpath)
                old.unlink()


def _provenance(task: ShardTask, synthetic: Collection[str]) -> dict | None:
    return dict(SYNTHETIC_PROVENANCE) if task.split in synthetic else None


def folder_splits(out_dir: Path) -> dict[tuple[schema.ConfigName, str], list[str]]:
    """``{(config, split): shard paths}`` of every split of which ``out_dir`` holds a shard, complete or not."""
    held: dict[tuple[schema.ConfigName, str], list[str]] = {}
    for config in CONFIG_DIRS:
        for split in schema.SPLITS:
            paths = _shard_paths(out_dir, config, split)
            if paths:
                held[(config, split)] = paths  # type: ignore[index]
    return held


def is_complete(config: str, split: str, paths: Sequence[str]) -> bool:
    """Whether ``paths`` (sorted) are every shard ``i`` of ``n`` of the split."""
    return bool(paths) and list(paths) == complete_shard_set(split_prefix(config, split), paths)


def stale_reason(
    out_dir: Path,
    config: schema.ConfigName,
    split: str,
    pairs: Sequence[raw.Pair] | None,
    digests: dict[raw.Pair, str],
    *,
    reread: bool = False,
) -> str | None:
    """Why the complete split ``config``/``split`` of ``out_dir`` is not what ``pairs`` would build now; None if it is.

    ``pairs`` is the raw split as it pairs up now (None: the raw data has no such split any
    more). The shards' build records are compared by :func:`records_stale_reason`. A shard that
    cannot be read, or has no build record of push.py's, is a :class:`MaterializeError`: it is not
    this tool's to remove. With ``reread``, a split that is current by its build records is also
    checked byte for byte against the records of what was written (``openeds.records``): a shard
    without such a record, or whose bytes differ, makes it stale too.
    """
    paths = _shard_paths(out_dir, config, split)
    footers = [_record(out_dir, path, config, split) for path in paths]
    why = records_stale_reason(dict(enumerate(footers)), len(footers), config, split, pairs, digests)
    if why is None and reread:
        for path in paths:
            if problem := records.problem(out_dir, path):
                return f"its shard {path} cannot be vouched for: {problem}"
    return why


def records_stale_reason(
    footers: Mapping[int, Mapping],
    count: int,
    config: schema.ConfigName,
    split: str,
    pairs: Sequence[raw.Pair] | None,
    digests: dict[raw.Pair, str],
) -> str | None:
    """Why shards with these build records (in their footers) are not what ``pairs`` would build now; None if they are.

    ``footers`` maps a shard's index to the build record in its footer, of ``count`` shards in all (a
    local folder's complete split, or the shards a Hub repo holds of one, some maybe missing).
    The build records are compared with what a rebuild would record, shard by shard, with the shard size
    they were built with (so an earlier ``--max-shard-size`` is no reason). The inputs are hashed
    (into ``digests``) only when the versions and frames agree.
    """
    if pairs is None:
        return f"the raw data has no {split} split any more, so what it was built from cannot be checked"
    now = versions()
    first = footers[min(footers)]
    changed = [f"{key} {first.get(key)} -> {now[key]}" for key in now if first.get(key) != now[key]]
    if changed:
        return f"it was built by other versions ({', '.join(changed)}), which compute other numbers"
    per_shard = _rows_per_shard(footers, count, len(pairs))
    tasks = _cut(pairs, config, split, per_shard) if per_shard else []
    held = sum(rows for record in footers.values() if isinstance(rows := record.get("rows"), int))
    if len(tasks) != count or any(
        {key: record.get(key) for key in tasks[i].frames()} != tasks[i].frames() for i, record in footers.items()
    ):
        return f"it was built from other frames ({held} rows) than the raw split pairs up now ({len(pairs)} frames)"
    hash_inputs(pairs, digests)
    if any(tasks[i].source(digests) != record for i, record in footers.items()):
        return "it was built from image or label files whose contents have changed since"
    return None


def _rows_per_shard(footers: Mapping[int, Mapping], count: int, frames: int) -> int | None:
    """The rows per shard the shards of these build records were built with: those of any shard but the last,
    which may hold fewer; with the last one only, what the split's size implies. None if no positive whole
    number fits."""
    inner = [record.get("rows") for index, record in footers.items() if index < count - 1]
    if inner:
        rows = inner[0]
    elif count == 1:
        rows = footers[0].get("rows")
    else:
        last = footers[count - 1].get("rows")
        rows = (frames - last) // (count - 1) if isinstance(last, int) and (frames - last) % (count - 1) == 0 else None
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0 else None


def _record(out_dir: Path, path: str, config: str, split: str) -> dict:
    try:
        record = parquet.read_source(out_dir / path, strict=True)
    except (OSError, pa.ArrowException, ValueError) as e:
        raise MaterializeError(_unreadable(out_dir / path, config, split, e)) from None
    if not isinstance(record, dict):
        raise MaterializeError(
            f"shard {shown(out_dir / path)} has no build record of push.py; expected only shards push.py wrote in "
            f"its folder, so it is left alone. Fix: move it out of the folder, or pass another --local-dir"
        )
    return record


def _unreadable(shard: Path, config: str, split: str, e: BaseException) -> str:
    flags = f"--splits {split}" + (" --config full" if config == "full" else "")
    return (
        f"shard {shown(shard)} cannot be read ({' '.join(str(e).split())}); expected a parquet shard written by "
        f"push.py. Fix: delete it, or rebuild that split with {flags}"
    )


def _shard_paths(out_dir: Path, config: str, split: str) -> list[str]:
    prefix = split_prefix(config, split)
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.glob(f"{prefix}*-of-*.parquet"))


def read_shard(out_dir: Path, relpath: str, read: Callable[[Path], T]) -> T:
    """``read(path)`` of the shard ``relpath`` of ``out_dir`` (the preview picture's rows).

    A shard that cannot be read was reused (its footer and record matched) but its bytes changed since they
    were written, where the reread that a publishing run leaves to the upload did not look yet: one line, and
    its record is removed, so that the next run rebuilds it.
    """
    try:
        return read(out_dir / relpath)
    except (OSError, pa.ArrowException, ValueError) as e:
        records.forget(out_dir, relpath)
        raise MaterializeError(
            f"shard {shown(out_dir / relpath)} cannot be read ({' '.join(str(e).split())}); expected the shard as "
            f"it was written: its bytes changed since (a damaged disk, a copy or an edit); its record is removed, "
            f"so running the same command again rebuilds it"
        ) from None


def local_sizes(out_dir: Path, *, skip: Collection[tuple[str, str]] = ()) -> dict[str, dict[str, SplitSize]]:
    """Sizes of the splits ``out_dir`` already holds complete (every shard ``i`` of ``n``).

    ``(config, split)`` pairs in ``skip`` are not read. A shard that cannot be read raises
    :class:`MaterializeError` naming it.
    """
    sizes: dict[str, dict[str, SplitSize]] = {}
    for config in CONFIG_DIRS:
        for split in schema.SPLITS:
            if (config, split) in skip:
                continue
            size = _split_size(out_dir, config, split)
            if size is not None:
                sizes.setdefault(config, {})[split] = size
    return sizes


def _split_size(out_dir: Path, config: str, split: str) -> SplitSize | None:
    """The size of a split whose shards are all present, else None."""
    paths = _shard_paths(out_dir, config, split)
    if not is_complete(config, split, paths):
        return None
    rows = 0
    for shard in (out_dir / p for p in paths):
        try:
            rows += parquet.num_rows(shard)
        except (OSError, pa.ArrowException) as e:
            raise MaterializeError(_unreadable(shard, config, split, e)) from None
    return SplitSize(rows, sum((out_dir / p).stat().st_size for p in paths))


def materialize(
    split_pairs: dict[tuple[schema.ConfigName, str], Sequence[raw.Pair]],
    out_dir: Path,
    *,
    num_proc: int = 1,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    digests: dict[raw.Pair, str] | None = None,
    reread: bool = True,
    synthetic: Collection[str] = (),
) -> dict[str, dict[str, SplitSize]]:
    """Build every ``(config, split)`` of ``split_pairs`` into ``out_dir``; return their sizes.

    ``digests``: input hashes already computed in this run (by :func:`stale_reason`), reused.
    A shard already built from the same inputs is reused if the record of its bytes is there and
    its size agrees, and, with ``reread``, if its bytes hash to the record (a read of the shard);
    else it is rebuilt, with a line saying why. Pass ``reread=False`` only when the caller checks
    the reused shards' bytes itself (push.py when it publishes: by the hash the upload computes).
    ``synthetic``: the raw splits whose frames are the synthetic sample; the footers of the shards built
    from them say so (``openeds.provenance``), and a shard of theirs that does not say so yet is rebuilt.
    """
    tasks = [
        task
        for (config, split), pairs in split_pairs.items()
        for task in plan_shards(pairs, config, split, max_shard_bytes)
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir, tasks)
    # Each frame is hashed once, even when two configs use it.
    frames = (pair for pairs in split_pairs.values() for pair in pairs)
    digests = hash_inputs(frames, {} if digests is None else digests)
    sources = {task.relpath: task.source(digests) for task in tasks}
    todo = []
    for task, reusable, why in _reusable(tasks, sources, out_dir, synthetic, reread=reread, threads=num_proc):
        if reusable:
            logger.info("Skipping %s: already complete", task.relpath)
            print(f"Skipping {task.relpath}: already complete")
            continue
        if why is not None:
            print(f"Rebuilding {shown(out_dir / task.relpath)}: {why}", file=sys.stderr)
        todo.append(task)
    disk.require_free_space(
        out_dir,
        sum(len(t.pairs) * _EXPECTED_ROW_BYTES[t.config] for t in todo),
        purpose=f"for {sum(len(t.pairs) for t in todo)} rows",
        fix="pass --local-dir on a larger disk",
        error=MaterializeError,
    )
    try:
        with tqdm(total=sum(len(t.pairs) for t in todo), unit="row", desc="Building shards") as bar:
            if num_proc <= 1 or len(todo) <= 1:
                for task in todo:
                    _build(task, sources[task.relpath], out_dir, _provenance(task, synthetic), bar.update)
            else:
                # spawn, not fork: OpenCV's thread pool does not survive a fork reliably.
                with multiprocessing.get_context("spawn").Pool(min(num_proc, len(todo))) as pool:
                    work = [(t, sources[t.relpath], out_dir, _provenance(t, synthetic)) for t in todo]
                    for task in pool.imap_unordered(_build_in_worker, work):
                        bar.update(len(task.pairs))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise MaterializeError(
                f"the disk holding {shown(out_dir)} is full ({shown(e.filename or 'while writing a shard')}); "
                "finished shards are kept; "
                "free some space or pass --local-dir on a larger disk, then run the same command again"
            ) from None
        raise
    records.prune(out_dir)  # the records of shards removed since (a stale split, another shard count)
    sizes: dict[str, dict[str, SplitSize]] = {}
    for config, split in split_pairs:
        # Only the splits built here: another split's shards are not this run's business.
        size = _split_size(out_dir, config, split)
        assert size is not None, f"{config}/{split}: shards missing right after building them"
        sizes.setdefault(config, {})[split] = size
    return sizes
