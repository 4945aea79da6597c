"""The records of the shards' bytes (`openeds.records`): written as a shard is written, and what a re-run does
with a shard whose bytes or record are not what was written."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from openeds import raw, records
from openeds.materialize import materialize, stale_reason
from openeds.synthetic import write_sample

pytestmark = pytest.mark.datasets_independent("the records of push.py's own bookkeeping: hashlib and our code")

TRAIN = [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
SHARDS = [*TRAIN, "data/validation-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"]


def _pairs(tree: Path) -> dict:
    dirs = raw.find_split_dirs(tree)
    return {("pupil", split): raw.list_pairs(dirs[split]).pairs for split in ("train", "validation", "test")}


def _build(tree: Path, out: Path, *, reread: bool = True) -> tuple[str, str]:
    """materialize every split of `tree` into `out`, a row a shard; its stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        materialize(_pairs(tree), out, max_shard_bytes=4_000_000, reread=reread)
    return stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("records-raw"), {"train": 3, "validation": 1, "test": 1})


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("records") / "out"
    _build(tree, out)
    return out


@pytest.fixture
def out(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "out"))  # bytes and modification times


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shards(folder: Path) -> dict[str, str]:
    return {shard: _sha256(folder / shard) for shard in SHARDS}


def test_each_shard_is_recorded_as_written(built):
    for shard in SHARDS:
        record = json.loads(records.record_path(built, shard).read_text())
        assert record == {"path": shard, "size": (built / shard).stat().st_size, "sha256": _sha256(built / shard)}


def test_a_write_that_fails_leaves_no_record_vouching_for_the_old_bytes(tmp_path):
    records.write_recorded(tmp_path, "data/x.parquet", lambda sink: sink.write(b"old bytes"))
    assert records.problem(tmp_path, "data/x.parquet") is None

    def fail(sink):
        sink.write(b"new by")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        records.write_recorded(tmp_path, "data/x.parquet", fail)
    assert (tmp_path / "data" / "x.parquet").read_bytes() == b"old bytes"  # the old file, no longer vouched for
    assert records.load(tmp_path, "data/x.parquet") is None
    assert sorted(p.name for p in tmp_path.rglob(".*.partial")) == []


def _keep_times(edit: Callable[[Path], object]) -> Callable[[Path], object]:
    """`edit` a file and give it back its access and modification times, to the nanosecond."""

    def edit_keeping_times(path: Path) -> None:
        times = path.stat()
        edit(path)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))

    return edit_keeping_times


def _flip_a_bit(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x10  # inside the data pages: the footer still reads, and matches
    path.write_bytes(bytes(content))


def _truncate_then_pad(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2].ljust(len(content), b"\0"))


def _swap_test_and_validation(out: Path) -> None:
    test, validation = out / SHARDS[4], out / SHARDS[3]
    a, b = test.read_bytes(), validation.read_bytes()
    test.write_bytes(b)
    validation.write_bytes(a)


def _rewrite_record(shard: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def rewrite(out: Path) -> None:
        path = records.record_path(out, shard)
        record = json.loads(path.read_text())
        changed = edit(record)
        path.write_text(changed if isinstance(changed, str) else json.dumps(record))

    return rewrite


def _record_of_another_shard(out: Path) -> None:
    shutil.copyfile(records.record_path(out, TRAIN[0]), records.record_path(out, TRAIN[1]))


#: damage -> the shards it touches, and whether a re-run says why it rebuilds them
DAMAGES = {
    "bit-flip-mtime-kept": (lambda out: _keep_times(_flip_a_bit)(out / TRAIN[1]), [TRAIN[1]], True),
    # the footer is gone, or names other inputs: rebuilt as any shard of other inputs, without a word
    "truncated-then-padded": (lambda out: _keep_times(_truncate_then_pad)(out / TRAIN[2]), [TRAIN[2]], False),
    "swapped-with-another-split": (_swap_test_and_validation, SHARDS[3:], False),
    "record-missing": (lambda out: records.record_path(out, TRAIN[0]).unlink(), [TRAIN[0]], True),
    "record-not-json": (_rewrite_record(TRAIN[0], lambda r: '{"path": '), [TRAIN[0]], True),
    "record-of-another-size": (_rewrite_record(TRAIN[0], lambda r: r.update(size=r["size"] + 1)), [TRAIN[0]], True),
    "record-of-other-bytes": (_rewrite_record(TRAIN[0], lambda r: r.update(sha256="0" * 64)), [TRAIN[0]], True),
    "record-of-another-shard": (_record_of_another_shard, [TRAIN[1]], True),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_rerun_rebuilds_a_shard_it_cannot_vouch_for(tree, built, out, damage):
    arrange, touched, said = DAMAGES[damage]
    arrange(out)
    stdout, stderr = _build(tree, out)
    assert stdout.count("already complete") == len(SHARDS) - len(touched), stdout
    for shard in touched:
        assert (f"Rebuilding {out / shard}: " in stderr) == said, stderr
    assert _shards(out) == _shards(built), "a rebuilt shard differs from the first build"
    assert all(records.problem(out, shard) is None for shard in SHARDS)


def test_without_reread_only_the_record_and_the_size_are_checked(tree, built, out):
    """What `reread=False` leaves to its caller (push.py when it publishes: the upload's hashes, `openeds.hub.verify`):
    a bit flip goes unseen here; a shard of another size or without a record is rebuilt all the same."""
    _keep_times(_flip_a_bit)(out / TRAIN[1])
    records.record_path(out, TRAIN[2]).unlink()
    stdout, stderr = _build(tree, out, reread=False)
    assert stdout.count("already complete") == len(SHARDS) - 1 and f"Rebuilding {out / TRAIN[2]}: it has no" in stderr
    assert _sha256(out / TRAIN[1]) != _sha256(built / TRAIN[1])
    assert records.problem(out, TRAIN[1]) == (
        f"its bytes are not those written (sha256 {_sha256(out / TRAIN[1])[:12]}, "
        f"recorded {_sha256(built / TRAIN[1])[:12]})"
    )


def test_a_kept_split_is_checked_byte_for_byte_when_asked(tree, out):
    """A split the run does not rebuild: current by its build records, stale once its bytes are not those written."""
    pairs = _pairs(tree)[("pupil", "train")]
    _keep_times(_flip_a_bit)(out / TRAIN[2])
    assert stale_reason(out, "pupil", "train", pairs, {}) is None  # the footers alone cannot tell
    why = stale_reason(out, "pupil", "train", pairs, {}, reread=True)
    assert why is not None and why.startswith(f"its shard {TRAIN[2]} cannot be vouched for: its bytes are not those")
    records.record_path(out, TRAIN[0]).unlink()
    assert stale_reason(out, "pupil", "train", pairs, {}, reread=True).startswith(
        f"its shard {TRAIN[0]} cannot be vouched for: it has no record of the bytes written"
    )


def test_records_of_shards_gone_are_removed(tree, out):
    """Another shard count: the old shards go, and so do their records."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        materialize({("pupil", "train"): _pairs(tree)[("pupil", "train")]}, out)  # one shard of 3 rows
    left = sorted(p.relative_to(out / ".openeds" / "records").as_posix() for p in out.rglob("*.json"))
    assert left == [f"{shard}.json" for shard in sorted(["data/train-00000-of-00001.parquet", *SHARDS[3:]])]
