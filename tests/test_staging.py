"""The staging folder tells the truth: stale splits, the raw data kept apart, and the sizes and paths the CLI takes."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import preprocessing
from openeds import raw
from openeds.materialize import MaterializeError, folder_splits, is_complete, materialize, stale_reason
from openeds.synthetic import write_sample
from push import _raw_area, _refuse_overlap, byte_size, folder_path

pytestmark = pytest.mark.datasets_independent("shard records, size flags and folder overlap: pyarrow and our code")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("staging-raw"), {"train": 3, "validation": 1, "test": 1})


@pytest.fixture(scope="module")
def built(small_raw, tmp_path_factory) -> Path:
    """The `full` test split built once; each test works on a copy of the raw tree and of this folder."""
    out = tmp_path_factory.mktemp("staging") / "out"
    materialize({("full", "test"): _pairs(small_raw, "test")}, out)
    return out


@pytest.fixture
def world(small_raw, built, tmp_path) -> tuple[Path, Path]:
    return Path(shutil.copytree(small_raw, tmp_path / "raw")), Path(shutil.copytree(built, tmp_path / "out"))


def _pairs(tree: Path, split: str) -> list[raw.Pair]:
    return raw.list_pairs(raw.find_split_dirs(tree)[split]).pairs


def test_a_split_built_from_the_raw_data_as_it_is_is_current(world):
    tree, out = world
    digests: dict = {}
    assert stale_reason(out, "full", "test", _pairs(tree, "test"), digests) is None
    assert len(digests) == 1, "the inputs were not hashed"


def test_a_changed_label_makes_the_split_stale(world):
    tree, out = world
    [pair] = _pairs(tree, "test")
    label = np.load(pair.label)
    label[label == 3] = 2
    np.save(pair.label, label)
    why = stale_reason(out, "full", "test", _pairs(tree, "test"), {})
    assert why == "it was built from image or label files whose contents have changed since"


def test_other_frames_make_the_split_stale_without_hashing(world):
    tree, out = world
    pairs = _pairs(tree, "test")
    extra = raw.Pair("000000200001", pairs[0].image, pairs[0].label)
    digests: dict = {}
    why = stale_reason(out, "full", "test", [*pairs, extra], digests)
    assert why == "it was built from other frames (1 rows) than the raw split pairs up now (2 frames)"
    assert digests == {}, "the inputs were hashed although the frames differ"


def test_another_compute_version_makes_the_split_stale(world):
    tree, out = world
    shard = out / "full" / "test-00000-of-00001.parquet"
    table = pq.read_table(shard)
    metadata = dict(table.schema.metadata)
    record = json.loads(metadata[b"openeds"])
    record["compute_version"] -= 1
    metadata[b"openeds"] = json.dumps(record).encode()
    pq.write_table(table.replace_schema_metadata(metadata), shard)
    why = stale_reason(out, "full", "test", _pairs(tree, "test"), {})
    now = preprocessing.COMPUTE_VERSION
    assert why == f"it was built by other versions (compute_version {now - 1} -> {now}), which compute other numbers"


def test_a_split_gone_from_the_raw_data_is_stale(world):
    _, out = world
    assert stale_reason(out, "full", "test", None, {}).startswith("the raw data has no test split any more")


def test_the_shard_size_of_the_earlier_build_is_no_reason(small_raw, tmp_path):
    out = tmp_path / "out"
    pairs = _pairs(small_raw, "train")
    materialize({("pupil", "train"): pairs}, out, max_shard_bytes=4_000_000)  # one row a shard
    assert folder_splits(out) == {("pupil", "train"): [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]}
    assert is_complete("pupil", "train", folder_splits(out)[("pupil", "train")])
    assert stale_reason(out, "pupil", "train", pairs, {}) is None
    (out / "data" / "train-00001-of-00003.parquet").unlink()
    assert not is_complete("pupil", "train", folder_splits(out)[("pupil", "train")])


def test_a_shard_without_a_record_or_unreadable_is_an_error_not_stale(world):
    tree, out = world
    shard = out / "full" / "test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard).replace_schema_metadata({}), shard)
    with pytest.raises(MaterializeError, match=r"test-00000-of-00001\.parquet has no build record of push\.py"):
        stale_reason(out, "full", "test", _pairs(tree, "test"), {})
    shard.write_bytes(b"not parquet")
    with pytest.raises(MaterializeError, match=r"cannot be read \(.*\); expected a parquet shard written by push\.py"):
        stale_reason(out, "full", "test", _pairs(tree, "test"), {})


# --- the staging folder and the raw data apart ---------------------------------------------------


def test_a_local_dir_inside_or_around_the_raw_data_is_refused(small_raw, tmp_path):
    base = small_raw / "openEDS" / "openEDS"
    areas = _raw_area(small_raw, None, None)
    assert [folder for folder, _ in areas] == [base, base / "train", base / "validation", base / "test"]
    for inside in (base, base / "test", base / "test" / "images" / "out"):
        with pytest.raises(MaterializeError, match=r"is inside the raw data "):
            _refuse_overlap(inside, areas)
    for around in (small_raw, small_raw / "openEDS"):
        with pytest.raises(MaterializeError, match=r"^the raw data .* is inside --local-dir "):
            _refuse_overlap(around, areas)
    _refuse_overlap(small_raw / "out", areas)  # beside the split folders, under the --data-dir: fine
    _refuse_overlap(tmp_path / "out", areas)
    (tmp_path / "link").symlink_to(base / "validation")
    with pytest.raises(MaterializeError, match=r"link/x \(which resolves to .*/validation/x\) is inside the raw data"):
        _refuse_overlap(tmp_path / "link" / "x", areas)


def test_the_kaggle_cache_of_the_raw_data_and_the_local_dir_are_kept_apart(tmp_path):
    areas = _raw_area(None, "owner/name", tmp_path / "cache")
    assert areas == [(tmp_path / "cache" / "owner--name", "the Kaggle download cache (--cache-dir) of the raw data")]
    with pytest.raises(MaterializeError, match="is inside the Kaggle download cache"):
        _refuse_overlap(tmp_path / "cache" / "owner--name" / "data", areas)
    with pytest.raises(MaterializeError, match="is inside --local-dir"):
        _refuse_overlap(tmp_path / "cache", areas)
    _refuse_overlap(tmp_path / "cache" / "staging" / "me--repo", areas)  # the default staging folder


def test_names_in_the_overlap_message_stay_one_line(small_raw, tmp_path):
    odd = tmp_path / "ra\nw"
    shutil.copytree(small_raw, odd)
    with pytest.raises(MaterializeError) as info:
        _refuse_overlap(odd / "openEDS" / "openEDS" / "test", _raw_area(odd, None, None))
    assert str(info.value).isprintable()


# --- sizes and paths on the command line ---------------------------------------------------------


@pytest.mark.parametrize(
    "text,size",
    [
        ("500MB", 500_000_000),
        ("1.5GB", 1_500_000_000),
        ("750kb", 750_000),
        ("2GiB", 2 * 1024**3),
        ("4MiB", 4 * 1024**2),
        ("100000000", 100_000_000),
        (" 12 MB ", 12_000_000),
        ("1TB", 10**12),
        ("7B", 7),
        (".5KB", 500),
    ],
)
def test_byte_size_reads_sizes(text, size):
    assert byte_size(text) == size


@pytest.mark.parametrize(
    "text,why",
    [
        ("infGB", "is not a size"),
        ("nan", "is not a size"),
        ("-5MB", "is below 1 byte"),
        ("0", "is below 1 byte"),
        ("0.4", "is below 1 byte"),
        ("lots", "is not a size"),
        ("1e9", "is not a size"),
        ("", "is not a size"),
        ("500Mbit", "is not a size"),
        ("5 M B", "is not a size"),
        ("1,000", "is not a size"),
        ("1_000", "is not a size"),
    ],
)
def test_byte_size_refuses_what_is_not_a_size(text, why):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        byte_size(text)
    assert str(info.value).startswith(f"{text!r} {why}; expected a size of 1 byte or more")


def test_byte_size_of_400_digits_is_exact():
    assert byte_size("1" + "0" * 400) == 10**400


def test_folder_path_refuses_an_empty_path():
    assert folder_path("out") == Path("out")
    with pytest.raises(argparse.ArgumentTypeError, match="'' is empty; expected a folder path"):
        folder_path("")


def test_the_example_refuses_counts_out_of_range(capsys):
    spec = importlib.util.spec_from_file_location("train_tiny", REPO / "examples" / "train_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bad = [
        ("--batch-size", "0", "'0' is below 1"),
        ("--max-steps", "-3", "'-3' is below 1"),
        ("--num-workers", "-1", "'-1' is below 0"),
        ("--num-threads", "0", "'0' is below 1"),
        ("--seed", "-1", "'-1' is below 0"),
        ("--batch-size", "two", "'two' is not an integer"),
    ]
    for flag, value, message in bad:
        with pytest.raises(SystemExit) as info:
            module.main(["nowhere", flag, value])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"error: argument {flag}: {message}" in err and "Traceback" not in err, err
