"""push.py without the Hub: materialisation, the card, resumability, errors."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi

import preprocessing
from openeds import card, disk, layout, preview, raw, records, schema
from openeds.hub import PublishError, PublishResult
from openeds.synthetic import MARKER, write_sample
from push import DEFAULT_REPO_ID, TORCH_CPU_INSTALL, Summary, push
from tests import push_runner, reference, zygote
from tests.v1data import upload_v1, v1_table

pytestmark = pytest.mark.datasets_line
#: the tests here that push.py's own flags, checks and bookkeeping decide (tests/conftest.py)
OURS = pytest.mark.datasets_independent("push.py's own flags, checks and bookkeeping")

REPO = Path(__file__).resolve().parents[1]


def run_push(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python push.py *args`` in a process of its own (forked from a zygote: tests/push_runner.py)."""
    return push_runner.run_push(list(args), env={**os.environ, **(env or {})}, cwd=cwd)


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    """A sample of 2, 1 and 1 frames (not to modify)."""
    return write_sample(tmp_path_factory.mktemp("small"), {"train": 2, "validation": 1, "test": 1})


@pytest.fixture
def small_sample(small_raw, tmp_path) -> Path:
    """A copy of ``small_raw`` of the test's own."""
    return Path(shutil.copytree(small_raw, tmp_path / "raw"))


@pytest.fixture(scope="module")
def out_all(sample_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("push") / "out"
    result = run_push("--data-dir", str(sample_dir), "--local-dir", str(out), "--no-upload", "--config", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done:" in result.stdout and "MB/row" in result.stdout
    # the run ends with what to do next, each command as it runs from where push.py ran
    steps = next_steps(result.stdout)
    assert steps["load it"] == f"datasets.load_dataset({str(out)!r})"
    assert_runs(shlex.split(steps["train on it"]), EXAMPLE, [str(out)])  # torch is installed here
    publish = shlex.split(steps["publish it"].removesuffix(YOURS))
    assert_runs(publish, PUSH, publish[2:])
    assert publish[publish.index("--repo-id") + 1] == "YOU/NAME" and "--no-upload" not in publish
    assert publish[publish.index("--local-dir") + 1] == str(out) and "--config all" in steps["publish it"]
    return out


EXAMPLE, PUSH = REPO / "examples" / "train_tiny.py", REPO / "push.py"
YOURS = " (YOU/NAME: a dataset repo of your own)"


def next_steps(stdout: str) -> dict[str, str]:
    """The run's `next: WHAT: COMMAND` lines, which end its output: {WHAT: COMMAND}."""
    lines = stdout.splitlines()
    assert lines[-1].startswith("next: "), lines[-1]
    return dict(line.removeprefix("next: ").split(": ", 1) for line in lines if line.startswith("next: "))


def assert_runs(words: list[str], script: Path, args: list[str], cwd: Path | None = None) -> None:
    """`words` runs `script` with `args` by this interpreter, as typed in `cwd` (default: the test's folder)."""
    cwd = cwd or Path.cwd()
    python, path = (Path(w) if Path(w).is_absolute() else cwd / w for w in words[:2])
    assert words[0] == "python" or python.resolve() == Path(sys.executable).resolve(), words
    assert path.resolve() == script and words[2:] == args, words


def test_folder_holds_exactly_what_goes_to_the_hub(out_all):
    """Plus one bookkeeping folder, `.openeds/`: the lock file the run held (its owner record is gone) and the
    record of each shard's bytes, written as it was written: its size and sha256, read back here."""
    files = digests(out_all)
    shards = [f"{d}/{s}-00000-of-00001.parquet" for d in ("data", "full") for s in ("test", "train", "validation")]
    assert sorted(p for p in files if not p.startswith(".openeds/")) == [
        "README.md",
        *shards[:3],
        *shards[3:],
        "images/preview-full.png",
        "images/preview.png",
    ]
    assert sorted(p for p in files if p.startswith(".openeds/")) == [
        ".openeds/lock",
        *[f".openeds/records/{shard}.json" for shard in shards],
    ]
    for shard in shards:
        record = json.loads((out_all / ".openeds" / "records" / f"{shard}.json").read_text())
        assert record == {"path": shard, "size": (out_all / shard).stat().st_size, "sha256": files[shard]}, shard


@pytest.mark.parametrize("config", schema.CONFIG_NAMES)
def test_load_dataset_reads_the_folder_typed_and_equal_to_the_builder(out_all, v2, tmp_path, config):
    """``v2``: the builder's build of the same sample (`sample_dir`), shared by the session."""
    loaded = datasets.load_dataset(str(out_all), config, cache_dir=str(tmp_path / "c"))
    expected = v2[config]
    assert list(loaded) == ["train", "validation", "test"]
    for split in loaded:
        assert loaded[split].features == schema.features_for(config)
        got = loaded[split].with_format("numpy", dtype=None)
        want = expected[split].with_format("numpy", dtype=None)
        assert got.num_rows == want.num_rows
        for i in range(got.num_rows):
            for column in ("image", "label", "spatial_weights", "dist_map", "filename", "preprocessed"):
                np.testing.assert_array_equal(got[i][column], want[i][column], err_msg=f"{split}[{i}].{column}")


def test_the_folder_loads_pupil_by_default(out_all, tmp_path):
    """`load_dataset(folder)` is `pupil` (the card marks it `default: true`), as `load_dataset(repo)` is."""
    loaded = datasets.load_dataset(str(out_all), split="test", cache_dir=str(tmp_path / "c"))
    assert loaded.features == schema.features_for("pupil")
    with pytest.raises(ValueError, match="BuilderConfig 'default' not found"):
        datasets.load_dataset(str(out_all), "default", cache_dir=str(tmp_path / "c"))


def test_card_names_configs_sizes_and_provenance(out_all):
    text = (out_all / "README.md").read_text()
    header = DatasetCard(text).data
    # datasets writes the configs sorted by name; `default: true` is what makes `pupil` the default.
    assert {c["config_name"]: c.get("default", False) for c in header.configs} == {"pupil": True, "full": False}
    assert sorted(info["config_name"] for info in header.dataset_info) == ["full", "pupil"]
    for needle in (
        "config_name: pupil",
        "path: data/train-?????-of-?????.parquet",
        "config_name: full",
        "path: full/test-?????-of-?????.parquet",
        "num_examples: 8",
        "license: other",
        "license_name: openeds-dataset-license",
        "image-segmentation",
        "arXiv:1905.03702",
        "This build holds no OpenEDS images or labels",
        "images/preview.png",
        "(3, 3)",
        'with_format("numpy", dtype=None)',
        "python push.py --data-dir",
        # the sample given with --data-dir is still the sample: its split folders say so (openeds.provenance)
        "- Source: the synthetic sample of `openeds.synthetic` (a folder given with `--data-dir`), not real OpenEDS",
        "**Synthetic sample, not real OpenEDS data.**",
    ):
        assert needle in text, needle
    # Only what is known of this build: no Kaggle slug (a --data-dir copy may come from anywhere), no
    # revision v1 (a folder has no revisions), no link that is not the licence's, no claim of OpenEDS frames.
    for absent in ("soumicksarker", 'revision="v1"', "license_link", "come from OpenEDS", "a local copy of OpenEDS"):
        assert absent not in text, absent
    for config, path in (("pupil", "images/preview.png"), ("full", "images/preview-full.png")):
        assert f"![preview of `{config}`" in text and f"]({path})" in text, path
        assert (out_all / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("config", "folder", "traits"),
    [
        ("pupil", "data", {"no pupil", "pupil at the border"}),
        ("full", "full", {"no sclera, iris, pupil", "pupil at the border", "no background", "no pupil"}),
    ],
)
def test_the_previews_fit_the_hub_and_show_the_edge_cases(out_all, config, folder, traits):
    """At most 900 px wide and 300 KB; among their rows, every kind of edge case the split's first shard holds (the
    sample's train split: a closed eye, a pupil at the border, an eye covering the frame, a pupil under the lid)."""
    path = out_all / layout.PREVIEW_PATHS[config]
    picture = cv2.imread(str(path))
    assert picture.shape[1] <= preview.MAX_WIDTH and path.stat().st_size <= preview.MAX_BYTES
    rows = preview.preview_rows(out_all / folder / "train-00000-of-00001.parquet", config)
    assert len(rows) == preview.ROWS and set().union(*(row["traits"] for row in rows)) == traits
    assert any(not row["traits"] for row in rows)  # and an ordinary eye


LOCAL_COPY = card.Source("local")
KAGGLE = card.Source("kaggle", "soumicksarker/openeds-dataset")


def test_cards_of_the_same_data_differ_only_in_the_provenance_block():
    sizes = {"pupil": {"train": card.SplitSize(8, 9_000_000), "test": card.SplitSize(3, 3_000_000)}}
    one = str(
        card.render_card(sizes, repo_id="a/b", source=LOCAL_COPY, synthetic=(), command="push.py --local-dir /x/1")
    )
    two = str(card.render_card(sizes, repo_id="a/b", source=KAGGLE, synthetic=(), command="push.py --local-dir /x/2"))
    assert one != two and card.without_provenance(one) == card.without_provenance(two)
    assert "/x/1" in one and "/x/1" not in card.without_provenance(one)
    # The source is named twice (provenance and licence), each inside its own provenance block.
    assert two.count("soumicksarker/openeds-dataset`](https://www.kaggle.com/datasets/soumicksarker/") == 2
    assert "soumicksarker" not in card.without_provenance(two)
    other = {"pupil": {"train": card.SplitSize(8, 9_000_001), "test": card.SplitSize(3, 3_000_000)}}
    changed = str(card.render_card(other, repo_id="a/b", source=LOCAL_COPY, synthetic=(), command="push.py"))
    assert card.without_provenance(changed) != card.without_provenance(one)  # the YAML sizes count


@OURS
def test_without_provenance_drops_every_block_and_keeps_an_unclosed_one():
    text = "a<!-- provenance -->x<!-- /provenance -->b<!-- provenance -->y<!-- /provenance -->c<!-- provenance -->z"
    assert card.without_provenance(text) == (
        "a<!-- provenance --><!-- /provenance -->b<!-- provenance --><!-- /provenance -->c<!-- provenance -->z"
    )
    assert card.without_provenance("no markers") == "no markers"


def test_a_sample_card_says_synthetic_and_nothing_of_kaggle():
    sizes = {"pupil": {"train": card.SplitSize(8, 9_000_000)}}
    text = str(
        card.render_card(
            sizes, repo_id="me/sample", source=card.Source("sample"), synthetic={("pupil", "train")}, command="push.py"
        )
    )
    assert "**Synthetic sample, not real OpenEDS data.**" in text and "holds no OpenEDS images or labels" in text
    assert "pretty_name: OpenEDS precomputed (v2), synthetic sample" in text
    for absent in ("Kaggle dataset", "soumicksarker", "Built from", "come from OpenEDS"):
        assert absent not in text, absent


@pytest.mark.parametrize("v1_revision", [False, True])
def test_the_card_names_revision_v1_only_when_the_repo_has_it(v1_revision):
    sizes = {"pupil": {"train": card.SplitSize(8, 9_000_000)}}
    text = str(
        card.render_card(sizes, repo_id="a/b", source=KAGGLE, synthetic=(), command="push.py", v1_revision=v1_revision)
    )
    assert ('load_dataset("a/b", revision="v1")' in text) is v1_revision
    assert ("Revision `v1` (the v1 data, see below) is the repo as v1 left it" in text) is v1_revision
    assert (
        "removed every v1 file\nfrom `main`, whatever its name or folder, so `main` holds v2 only" in text
    ) is v1_revision
    assert 'load_dataset("a/b", "default")` fails with `BuilderConfig \'default\' not found`' in text


@OURS
@pytest.mark.parametrize(("kind", "slug"), [("kaggle", None), ("local", "a/b"), ("mirror", None)])
def test_a_source_that_says_too_little_or_too_much_is_refused(kind, slug):
    with pytest.raises(ValueError, match="source"):
        card.Source(kind, slug)


@OURS
def test_rerun_skips_finished_shards_and_is_byte_identical(out_all):
    before = digests(out_all)
    argv = ("--data-dir", str(_sample_of(out_all)), "--local-dir", str(out_all), "--no-upload", "--config", "all")
    result = run_push(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already complete") == 6
    assert digests(out_all) == before


def _sample_of(out: Path) -> Path:
    command = next(line for line in (out / "README.md").read_text().splitlines() if line.startswith("- Command:"))
    return Path(command.split("--data-dir ")[1].split()[0])


def _sharded_argv(sample_dir: Path) -> tuple[str, ...]:
    """The sample in shards of 3 rows (train: 3 shards), into ``out`` of the run's folder (so the card's command
    is the same whatever the folder)."""
    return ("--data-dir", str(sample_dir), "--local-dir", "out", "--no-upload", "--max-shard-size", "12MB")


@pytest.fixture(scope="module")
def sharded(sample_dir, tmp_path_factory) -> Path:
    """``_sharded_argv`` run once (one process, ``--num-proc 1``) in a folder of its own; its ``out``, not to modify."""
    folder = tmp_path_factory.mktemp("sharded")
    result = run_push(*_sharded_argv(sample_dir), cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "out"


@OURS
def test_interrupted_materialisation_rebuilds_only_what_is_missing(sample_dir, sharded, tmp_path):
    out = Path(shutil.copytree(sharded, tmp_path / "out"))  # bytes and modification times
    argv = _sharded_argv(sample_dir)
    shards = sorted((out / "data").glob("train-*.parquet"))
    assert [p.name for p in shards] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    kept = {p: p.stat().st_mtime_ns for p in shards[:2]}
    before = digests(out)
    # A run killed mid-shard: the last shard is gone, a partial file lies next to it.
    shards[2].rename(out / "data" / f".{shards[2].name}.partial")
    result = run_push(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already complete") == 4
    assert {p: p.stat().st_mtime_ns for p in shards[:2]} == kept
    assert digests(out) == before


def test_local_folder_built_split_by_split_lists_every_split(small_raw, tmp_path):
    out = tmp_path / "out"
    for split in ("train", "test"):
        result = run_push("--data-dir", str(small_raw), "--local-dir", str(out), "--no-upload", "--splits", split)
        assert result.returncode == 0, result.stderr[-2000:]
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "c"))
    assert {s: loaded[s].num_rows for s in loaded} == {"train": 2, "test": 1}


def test_corrected_label_of_the_same_size_is_rebuilt(small_sample, tmp_path):
    """A fix inside a label (same shape and dtype, so the same file size) rebuilds its shard."""
    tree = small_sample
    out = tmp_path / "out"
    argv = ("--data-dir", str(tree), "--local-dir", str(out), "--no-upload", "--splits", "test")
    assert run_push(*argv).returncode == 0
    label_path = sorted((tree / "openEDS/openEDS/test/labels").iterdir())[0]
    label = np.load(label_path)
    assert (label == 3).any(), "the test needs a label with a pupil"
    size = label_path.stat().st_size
    label[label == 3] = 2
    np.save(label_path, label)
    assert label_path.stat().st_size == size
    result = run_push(*argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already complete" not in result.stdout
    loaded = datasets.load_dataset(str(out), split="test", cache_dir=str(tmp_path / "c")).with_format(
        "numpy", dtype=None
    )
    row = loaded[[p.stem for p in sorted((tree / "openEDS/openEDS/test/images").iterdir())].index(label_path.stem)]
    assert row["filename"] == label_path.stem
    np.testing.assert_array_equal(row["label"], np.zeros_like(label), err_msg="the shard still holds the old pupil")


@OURS
def test_shard_of_another_compute_version_is_rebuilt(small_raw, tmp_path):
    """A shard whose record names another COMPUTE_VERSION (what the code computes) is stale."""
    out = tmp_path / "out"
    argv = ("--data-dir", str(small_raw), "--local-dir", str(out), "--no-upload", "--splits", "test")
    assert run_push(*argv).returncode == 0
    shard = out / "data/test-00000-of-00001.parquet"
    table = pq.read_table(shard)
    metadata = dict(table.schema.metadata)
    record = json.loads(metadata[b"openeds"])
    assert record["compute_version"] == preprocessing.COMPUTE_VERSION
    record["compute_version"] -= 1
    metadata[b"openeds"] = json.dumps(record).encode()
    pq.write_table(table.replace_schema_metadata(metadata), shard)
    result = run_push(*argv)
    assert result.returncode == 0 and "already complete" not in result.stdout


def _shards_and_records(out: Path) -> dict[str, str]:
    return {k: v for k, v in digests(out).items() if k.endswith((".parquet", ".parquet.json"))}


@OURS
def test_num_proc_2_writes_the_same_bytes_and_records(sample_dir, sharded, tmp_path):
    """Two worker processes build the five shards of ``sharded`` (built by one) byte for byte, each recorded by
    the process that wrote it. A re-run on two processes rebuilds a shard whose bytes changed (its modification
    time kept) and one whose record is gone, and nothing else."""
    result = run_push(*_sharded_argv(sample_dir), "--num-proc", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert _shards_and_records(out) == _shards_and_records(sharded) and len(_shards_and_records(sharded)) == 10
    flipped, unrecorded = out / "data/train-00001-of-00003.parquet", "data/test-00000-of-00001.parquet"
    times = flipped.stat()
    content = bytearray(flipped.read_bytes())
    content[len(content) // 2] ^= 1
    flipped.write_bytes(bytes(content))
    os.utime(flipped, ns=(times.st_atime_ns, times.st_mtime_ns))
    (out / ".openeds" / "records" / f"{unrecorded}.json").unlink()
    result = run_push(*_sharded_argv(sample_dir), "--num-proc", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("already complete") == 3, result.stdout
    assert f"Rebuilding out/{flipped.relative_to(out)}: its bytes are not those written" in result.stderr
    assert f"Rebuilding out/{unrecorded}: it has no record of the bytes written" in result.stderr
    assert _shards_and_records(out) == _shards_and_records(sharded)


@OURS
def test_a_build_killed_mid_way_leaves_no_record_of_other_bytes(sample_dir, sharded, tmp_path):
    """SIGKILL to a build on two processes once it has recorded a first shard: every record left vouches for the
    bytes under its name; the re-run finishes the build byte for byte."""
    argv = [*_sharded_argv(sample_dir), "--num-proc", "2"]
    env = dict(os.environ)
    run = zygote.start(
        [sys.executable, str(push_runner.PUSH), *argv], env=env, preload=push_runner.PRELOADED, cwd=tmp_path
    )
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".openeds/records/*/*.json")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        mid_way = run.poll() is None
    finally:
        run.kill_group()
        run.wait()
    written = [p.relative_to(out / ".openeds" / "records").as_posix() for p in out.glob(".openeds/records/*/*.json")]
    assert mid_way and 0 < len(written) < 5, f"the kill did not land mid-build ({len(written)} shards recorded)"
    for record in written:
        shard = record.removesuffix(".json")
        assert records.problem(out, shard) is None, f"the record of {shard} vouches for other bytes"
    result = run_push(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _shards_and_records(out) == _shards_and_records(sharded)


@OURS
@pytest.mark.parametrize(
    "args,message",
    [
        (["--sample", "--data-dir", "x"], "--sample conflicts with --data-dir"),
        (["--sample", "--kaggle-dataset", "a/b"], "--kaggle-dataset conflicts with --sample/--data-dir"),
        (["--sample", "--no-upload", "--repo-id", "a/b"], "--repo-id conflicts with --no-upload"),
        (["--sample", "--no-upload", "--tag", "v9"], "--tag conflicts with --no-upload"),
        (["--sample", "--no-upload", "--num-proc", "0"], "--num-proc 0: expected 1 or more"),
        (["--sample", "--no-upload", "--config", "iris"], "invalid choice: 'iris'"),
        (["--sample", "--tag", "v9"], "--tag conflicts with --sample without --repo-id, which does not publish"),
        (["--sample", "--retry-timeout", "-1"], "argument --retry-timeout: '-1' is not a number of seconds"),
    ],
)
def test_conflicting_or_bad_flags_are_refused(args, message):
    result = run_push(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@OURS
@pytest.mark.parametrize("num_proc", ["1", "2"])
def test_bad_raw_input_is_one_line_without_traceback(sample_dir, tmp_path, num_proc):
    tree = Path(shutil.copytree(sample_dir, tmp_path / "raw"))
    bad = sorted((tree / "openEDS/openEDS/train/images").iterdir())[2]
    bad.write_bytes(b"broken")
    result = run_push(
        "--data-dir",
        str(tree),
        "--local-dir",
        str(tmp_path / "out"),
        "--no-upload",
        "--num-proc",
        num_proc,
        "--max-shard-size",
        "10MB",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and f"{bad.name} is not a decodable PNG" in error_lines[0]


@OURS
def test_missing_split_is_named(sample_dir, tmp_path):
    tree = Path(shutil.copytree(sample_dir, tmp_path / "raw"))
    shutil.rmtree(tree / "openEDS/openEDS/validation")
    result = run_push(
        "--data-dir", str(tree), "--local-dir", str(tmp_path / "o"), "--no-upload", "--splits", "validation"
    )
    assert result.returncode == 1
    assert "--splits validation not found" in result.stderr and "the data has train, test" in result.stderr


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@OURS
def test_full_disk_is_a_clear_error(sample_dir, tiny_disk):
    result = run_push("--data-dir", str(sample_dir), "--local-dir", str(tiny_disk / "out"), "--no-upload")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not enough free disk space in" in result.stderr and "pass --local-dir on a larger disk" in result.stderr


# --- publishing through the local Hub server (tests/hub_server.py) -----------------------------

TOKEN = "hf_push_test_write_token"
REPO_ID = "Conner/openeds-precomputed"


def _shard_paths(hub, oids: list[str], staging: Path) -> set[str]:
    by_oid = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.relative_to(staging).as_posix()
        for p in staging.rglob("*")
        if p.is_file()
    }
    return {by_oid.get(oid, oid) for oid in oids}


def test_push_publishes_then_adds_a_split_incrementally(hub, sample_dir, v2, tmp_path):
    hub.add_token(TOKEN, "conner", write={"Conner"})
    env = {"HF_TOKEN": TOKEN}
    # the sample stands for the real data: without its markers (push.py refuses the sample to this repo)
    real = shutil.copytree(sample_dir, tmp_path / "real", ignore=shutil.ignore_patterns(MARKER))
    first = tmp_path / "staging1"
    result = run_push("--data-dir", str(real), "--local-dir", str(first), "--splits", "train", "validation", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "published:" in result.stdout and "(tags: v2)" in result.stdout
    steps = next_steps(result.stdout)
    assert steps["load it"] == f"datasets.load_dataset({REPO_ID!r})" and "publish it" not in steps
    assert_runs(shlex.split(steps["train on it"]), EXAMPLE, [REPO_ID])
    assert TOKEN not in result.stdout + result.stderr

    loaded = datasets.load_dataset(REPO_ID, cache_dir=str(tmp_path / "c1"))
    assert list(loaded) == ["train", "validation"]
    assert loaded["train"].features == schema.features_for("pupil")
    got = loaded["train"].with_format("numpy", dtype=None)
    want = v2["pupil"]["train"].with_format("numpy", dtype=None)  # the builder's, of the same sample
    for i in range(want.num_rows):
        for column in ("image", "label", "spatial_weights", "dist_map", "filename"):
            np.testing.assert_array_equal(got[i][column], want[i][column], err_msg=f"train[{i}].{column}")

    # A new machine adds the test split: nothing else is rebuilt or re-uploaded, the card keeps the rest.
    hub.reset_faults_and_log()
    second = tmp_path / "staging2"
    result = run_push("--data-dir", str(real), "--local-dir", str(second), "--splits", "test", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(tags: v2.1)" in result.stdout
    assert sorted(p.name for p in (second / "data").iterdir()) == ["test-00000-of-00001.parquet"]
    uploaded = _shard_paths(hub, hub.uploads(REPO_ID), second)
    assert uploaded <= {"data/test-00000-of-00001.parquet", "images/preview.png"}
    assert "data/test-00000-of-00001.parquet" in uploaded
    loaded = datasets.load_dataset(REPO_ID, cache_dir=str(tmp_path / "c2"))
    assert {s: loaded[s].num_rows for s in loaded} == {"train": 8, "validation": 3, "test": 3}
    card_text = (second / "README.md").read_text()
    assert "name: train" in card_text and "num_examples: 8" in card_text
    # The kept splits' bytes are their files' sizes in the repo listing, not estimates.
    info = HfApi().dataset_info(REPO_ID, files_metadata=True)
    listed = sum(s.size for s in info.siblings if s.rfilename.startswith("data/"))
    assert DatasetCard(card_text).data["dataset_info"]["download_size"] == listed


@OURS
def test_push_with_a_bad_token_is_one_line(hub, tmp_path):
    result = run_push(
        "--sample",
        "--local-dir",
        str(tmp_path / "s"),
        "--repo-id",
        "someone/sample",
        env={"HF_TOKEN": "hf_not_a_token"},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hf_not_a_token" not in result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "token" in error_lines[0]
    assert not (tmp_path / "s").exists()  # the Hub is asked before anything is built


@pytest.fixture
def publisher(hub):
    hub.add_token(TOKEN, "pusher", write={"pusher"})
    return {"HF_TOKEN": TOKEN}


def _tags(repo_id: str) -> dict[str, str]:
    return {t.name: t.target_commit for t in HfApi().list_repo_refs(repo_id, repo_type="dataset").tags}


def test_the_same_data_from_another_folder_is_not_published_again(hub, publisher, small_sample, tmp_path):
    repo_id = "pusher/openeds-unchanged"
    publish = ("--data-dir", str(small_sample), "--repo-id", repo_id)
    first = run_push(*publish, "--local-dir", str(tmp_path / "one"), env=publisher)
    assert first.returncode == 0, first.stderr[-3000:]
    head = HfApi().dataset_info(repo_id).sha

    hub.reset_faults_and_log()
    again = run_push(*publish, "--local-dir", str(tmp_path / "two"), env=publisher)  # the card's command differs
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"published: nothing to publish: {repo_id} already holds this data at v2" in again.stdout
    assert HfApi().dataset_info(repo_id).sha == head and _tags(repo_id) == {"v2": head}
    assert not [r for r in hub.requests if r.method == "POST" and "/commit/" in r.path]

    # One changed test image: only the test split is rebuilt, and it is a new publication.
    image = sorted((small_sample / "openEDS/openEDS/test/images").iterdir())[0]
    frame = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(image), 255 - frame)
    changed = run_push(*publish, "--local-dir", str(tmp_path / "two"), "--splits", "test", env=publisher)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "(tags: v2.1)" in changed.stdout
    tags = _tags(repo_id)
    assert tags["v2"] == head and tags["v2.1"] == HfApi().dataset_info(repo_id).sha != head
    loaded = datasets.load_dataset(repo_id, cache_dir=str(tmp_path / "c"))
    assert {s: loaded[s].num_rows for s in loaded} == {"train": 2, "validation": 1, "test": 1}


def test_a_split_push_lists_every_split_the_repo_holds(hub, publisher, small_sample, tmp_path):
    repo_id = "pusher/openeds-hidden"
    first = run_push(
        "--data-dir",
        str(small_sample),
        "--repo-id",
        repo_id,
        "--local-dir",
        str(tmp_path / "one"),
        "--splits",
        "train",
        "validation",
        env=publisher,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # Someone's card lists train only: validation's shards are there but hidden.
    api = HfApi(token=TOKEN)
    hiding = DatasetCard((tmp_path / "one" / "README.md").read_text())
    hiding.data.configs[0]["data_files"] = [f for f in hiding.data.configs[0]["data_files"] if f["split"] == "train"]
    hiding.data.dataset_info["splits"] = [s for s in hiding.data.dataset_info["splits"] if s["name"] == "train"]
    api.create_commit(
        repo_id, [CommitOperationAdd("README.md", str(hiding).encode())], commit_message="hide", repo_type="dataset"
    )
    assert list(datasets.load_dataset(repo_id, cache_dir=str(tmp_path / "hidden"))) == ["train"]

    result = run_push(
        "--data-dir",
        str(small_sample),
        "--repo-id",
        repo_id,
        "--local-dir",
        str(tmp_path / "two"),
        "--splits",
        "test",
        env=publisher,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = datasets.load_dataset(repo_id, cache_dir=str(tmp_path / "c"))
    assert {s: loaded[s].num_rows for s in loaded} == {"train": 2, "validation": 1, "test": 1}


@OURS
def test_a_missing_token_is_reported_at_once_before_anything_is_built(hub, sample_dir, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(PublishError, match="no Hugging Face token found") as error:
        push(data_dir=sample_dir, local_dir=out, repo_id="someone/openeds", api=HfApi())
    assert time.monotonic() - started < 0.5
    assert "\n" not in str(error.value) and "--no-upload" in str(error.value)
    assert not out.exists() and hub.requests == []


@OURS
def test_push_refuses_to_publish_the_sample_to_the_default_repo(hub, tmp_path):
    with pytest.raises(PublishError, match=f"refusing to publish the synthetic sample to {DEFAULT_REPO_ID}"):
        push(sample=True, local_dir=tmp_path / "out", api=HfApi(token=TOKEN))
    assert not (tmp_path / "out").exists() and hub.requests == []


def _lfs_files(repo_id: str) -> dict[str, str]:
    """The LFS files of the repo's head (shards and previews) by path, with their sha256."""
    info = HfApi().dataset_info(repo_id, files_metadata=True)
    return {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}


def _publication_commits(hub, repo_id: str) -> int:
    return sum(1 for r in hub.requests if r.method == "POST" and r.path == f"/api/datasets/{repo_id}/commit/main")


def test_a_card_naming_default_is_migrated_to_pupil_in_the_same_commit(hub, publisher, small_sample, tmp_path):
    """A v2 repo whose card names `pupil` `default` (as earlier versions wrote it), pushed `--splits test`."""
    repo_id = "pusher/openeds-renamed"
    api = HfApi(token=TOKEN)
    push(data_dir=small_sample, local_dir=tmp_path / "one", repo_id=repo_id, config="all", api=api)
    old = DatasetCard((tmp_path / "one" / "README.md").read_text())
    for entry in [*old.data.configs, *old.data.dataset_info]:
        entry["config_name"] = "default" if entry["config_name"] == "pupil" else entry["config_name"]
    api.create_commit(
        repo_id, [CommitOperationAdd("README.md", str(old).encode())], commit_message="old names", repo_type="dataset"
    )
    files = _lfs_files(repo_id)
    assert sorted(p for p in files if p.startswith("images/")) == ["images/preview-full.png", "images/preview.png"]
    hub.reset_faults_and_log()

    summary = push(data_dir=small_sample, local_dir=tmp_path / "two", repo_id=repo_id, splits=["test"], api=api)

    assert summary.published.changed and summary.published.tags == ("v2.1",)
    assert _publication_commits(hub, repo_id) == 1  # the rename and the test split: one atomic commit
    text = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    header = DatasetCard(text).data
    every_split = ["train", "validation", "test"]
    assert {
        c["config_name"]: (c.get("default", False), [f["split"] for f in c["data_files"]]) for c in header.configs
    } == {"pupil": (True, every_split), "full": (False, every_split)}
    now = _lfs_files(repo_id)
    now.pop("images/preview.png")  # redrawn from the test split, which this push built
    assert now == {p: sha for p, sha in files.items() if p != "images/preview.png"}  # the data stays where it was
    assert "](images/preview.png)" in text and "](images/preview-full.png)" in text  # full's is kept, and shown
    assert 'revision="v1"' not in text  # this repo has no revision v1
    # Each kept shard's footer was read once (its build record checked against the raw data), and no other shard's.
    reads = sorted(
        r.path.split("/", 6)[6] for r in hub.requests if "/resolve/" in r.path and r.path.endswith(".parquet")
    )
    assert reads == sorted(p for p in files if p.endswith(".parquet") and p != "data/test-00000-of-00001.parquet")
    cache = str(tmp_path / "c")
    counts = {"train": 2, "validation": 1, "test": 1}
    for name in (None, "pupil", "full"):
        loaded = datasets.load_dataset(repo_id, name, cache_dir=cache)
        assert {s: loaded[s].num_rows for s in loaded} == counts, name
        assert loaded["test"].features == schema.features_for(name or "pupil"), name
    with pytest.raises(ValueError, match="BuilderConfig 'default' not found"):
        datasets.load_dataset(repo_id, "default", cache_dir=cache)


def test_the_real_v1_repo_is_converted_and_both_revisions_load(hub, publisher, tmp_path):
    """The repo as VisionAssist's precompute script left Conner/openeds-precomputed (FACTS.md section 9):
    v1 rows (from `tests.reference`) in shards written with `pq.write_table` (500 rows there, 1 here),
    uploaded with `upload_folder` to data/train and data/validation; no test split, no card."""
    raw_dir = write_sample(tmp_path / "raw", {"train": 2, "validation": 2, "test": 1})
    pairs = {split: raw.list_pairs(folder).pairs for split, folder in raw.find_split_dirs(raw_dir).items()}
    repo_id = "pusher/openeds-precomputed"
    api = HfApi(token=TOKEN)
    v1_files = sorted(upload_v1(api, repo_id, {s: v1_table(pairs[s]) for s in ("train", "validation")}))
    assert v1_files == [f"data/{s}/shard_0000{i}.parquet" for s in ("train", "validation") for i in (0, 1)]
    v1_head = HfApi().dataset_info(repo_id).sha

    result = run_push(
        "--data-dir", str(raw_dir), "--local-dir", str(tmp_path / "out"), "--repo-id", repo_id, env=publisher
    )

    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stderr
    assert f"This run converts it: it tags the head {v1_head[:12]} 'v1' before anything changes" in said
    assert f"v1 train (2 files): {v1_files[0]}, {v1_files[1]}\n" in said
    assert f"v1 validation (2 files): {v1_files[2]}, {v1_files[3]}\n" in said
    assert "The repo has no card (README.md); the v2 card is added." in said
    assert f"{repo_id}: v1 has no test split: this publication adds it to main" in said
    assert "(tags: v1, v2; the 4 v1 files left main and stay at revision 'v1')" in result.stdout
    tags = _tags(repo_id)
    assert tags["v1"] == v1_head and tags.keys() == {"v1", "v2"}
    main = sorted(f.path for f in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True) if "." in f.path)
    assert main == [
        ".gitattributes",
        "README.md",
        *[f"data/{s}-00000-of-00001.parquet" for s in ("test", "train", "validation")],
        "images/preview.png",
    ]  # v2 only: every v1 file left main
    text = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    assert f'load_dataset("{repo_id}", revision="v1")' in text and "removed every v1 file" in text

    # Revision v1 loads as the old code loaded it (the default Python format, reshaped), value for value
    # against the raw frames through the plain reference.
    cache = str(tmp_path / "c")
    old = datasets.load_dataset(repo_id, revision="v1", cache_dir=cache)
    assert list(old) == ["train", "validation"]
    new = datasets.load_dataset(repo_id, cache_dir=cache)
    assert list(new) == ["train", "validation", "test"]
    for split, rows in old.items():
        assert rows["filename"] == [pair.stem for pair in pairs[split]]
        v2 = new[split].with_format("numpy", dtype=None)
        for i, (row, pair) in enumerate(zip(rows, pairs[split], strict=True)):
            image = cv2.imread(str(pair.image), cv2.IMREAD_UNCHANGED)
            label, weights, dist = reference.targets(np.load(pair.label), "pupil")
            expected = {"image": image, "label": label, "spatial_weights": weights, "dist_map": dist.astype(np.float32)}
            for column, want in expected.items():
                got = np.asarray(row[column], dtype=want.dtype).reshape(want.shape)
                np.testing.assert_array_equal(got, want, err_msg=f"v1 {split}[{i}].{column}")
                if column != "image":  # v2 keeps every v1 column but the image bit for bit
                    np.testing.assert_array_equal(v2[i][column], want, err_msg=f"v2 {split}[{i}].{column}")
            np.testing.assert_array_equal(v2[i]["image"], reference.image(image), err_msg=f"v2 {split}[{i}].image")
            assert v2[i]["preprocessed"] and "preprocessed" not in row


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_a_published_repo_loads_every_config_by_name_and_its_card_code_runs(hub, publisher, small_sample, tmp_path):
    repo_id = "pusher/openeds-names"
    api = HfApi(token=TOKEN)
    push(data_dir=small_sample, local_dir=tmp_path / "out", repo_id=repo_id, config="all", api=api)

    cache = str(tmp_path / "c")
    counts = {"train": 2, "validation": 1, "test": 1}
    loaded = {name: datasets.load_dataset(repo_id, name, cache_dir=cache) for name in (None, "pupil", "full")}
    for name, splits in loaded.items():
        assert {s: splits[s].num_rows for s in splits} == counts, name
        assert splits["train"].features == schema.features_for(name or "pupil"), name
    assert loaded[None]["train"]["filename"] == loaded["full"]["train"]["filename"]
    with pytest.raises(ValueError, match="BuilderConfig 'default' not found"):
        datasets.load_dataset(repo_id, "default", cache_dir=cache)

    text = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text()
    for config in schema.CONFIG_NAMES:
        download = sum(
            s.size
            for s in api.dataset_info(repo_id, files_metadata=True).siblings
            if s.rfilename.startswith(f"{'data' if config == 'pupil' else 'full'}/")
        )
        arrow = disk.human_bytes(4 * schema.raw_row_bytes(config))
        assert f"| `{config}` | 4 | {disk.human_bytes(download)} | about {arrow} |" in text, config
    assert "about 3.58 MB a row for\n`pupil` and 5.63 MB for `full`" in text

    # Every snippet of the card runs as written, against this repo (map-style, then streaming).
    blocks = _python_blocks(text)
    assert len(blocks) == 2 and "streaming=True" in blocks[1]
    for i, code in enumerate(blocks):
        namespace: dict = {}
        exec(compile(code, f"<card python block {i}>", "exec"), namespace)
        if i == 0:
            row, batch = namespace["row"], namespace["batch"]
            assert row["image"].dtype == np.uint8 and row["image"].shape == (400, 640)
            assert batch["dist_map"].dtype == np.float32 and batch["dist_map"].shape == (2, 2, 400, 640)
        else:
            assert namespace["image"].dtype == np.uint8 and namespace["image"].shape == (2, 400, 640)
            assert namespace["dist_map"].dtype == np.float32 and namespace["dist_map"].shape == (2, 2, 400, 640)
            assert namespace["filenames"] == loaded["pupil"]["train"]["filename"]
        namespace.clear()
        gc.collect()  # no stream outlives the test (see the card: pyarrow aborts on one left at exit)


@OURS
@pytest.mark.parametrize(
    "args",
    [("--help",), ("--max-shard-size", "0"), ("--data-dir", "{raw}", "--local-dir", "out", "--no-upload")],
    ids=["help", "usage-error", "build"],
)
def test_the_zygote_runs_push_as_a_fresh_process_does(args, small_raw, tmp_path):
    """The runner's forked processes (tests/push_runner.py) and `python push.py` give the same exit code, the same
    output (but for the time it took) and the same files, byte for byte (a build of every split of the small
    sample: the same steps as any build)."""
    runs = {}
    for way in ("fresh", "forked"):
        folder = tmp_path / way
        folder.mkdir()
        argv = [a.format(raw=small_raw) for a in args]
        env = dict(os.environ)
        if way == "fresh":
            result = subprocess.run(
                [sys.executable, str(REPO / "push.py"), *argv], capture_output=True, text=True, env=env, cwd=folder
            )
        else:
            assert push_runner.PushRunner().forks(env)
            result = push_runner.run_push(argv, env=env, cwd=folder)
        shown = [line for line in result.stdout.splitlines() if not line.strip().startswith("time: ")]
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        runs[way] = (result.returncode, shown, errors, digests(folder))
    assert runs["forked"] == runs["fresh"]
    assert runs["fresh"][1] or runs["fresh"][2], "nothing to compare"


@OURS
def test_a_run_that_sets_an_import_time_variable_is_not_forked():
    runner = push_runner.PushRunner()
    run_time = {
        "HF_TOKEN": "x",
        "HOME": "/elsewhere",
        "KAGGLE_KEY": "k",
        "XDG_CONFIG_HOME": "/c",
        "HTTP_PROXY": "http://p",
    }
    assert runner.forks({**os.environ, **run_time})
    for variable in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HOME", "PYTHONHASHSEED", "OMP_NUM_THREADS"):
        assert not runner.forks({**os.environ, variable: "1"}), variable
    runner.close()


def test_the_publish_hint_after_the_sample_runs_as_printed(hub, tmp_path):
    """`--sample` without `--repo-id` (no --no-upload typed) names the command that publishes that very build."""
    hub.add_token(TOKEN, "alice", write={"alice"})
    result = run_push("--sample", "--local-dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    publish = shlex.split(next_steps(result.stdout)["publish it"].removesuffix(YOURS))
    assert_runs(publish, PUSH, publish[2:], cwd=tmp_path)
    assert "--no-upload" not in publish
    publish[publish.index("YOU/NAME")] = "alice/sample-hint"
    again = run_push(*publish[2:], env={"HF_TOKEN": TOKEN}, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already complete") == 3 and "published: " in again.stdout  # the build, reused


@pytest.mark.parametrize("published", [False, True])
def test_the_train_hint_says_to_install_torch_first_when_it_is_missing(published, tmp_path):
    result = PublishResult("me/x", "abc", "https://hub/commit/abc", (), (), ("v2",)) if published else None
    summary = Summary({}, tmp_path / "out", result, 1.0, None if published else "python push.py --repo-id YOU/NAME")
    where = "me/x" if published else str(tmp_path / "out")
    without = dict(line.split(": ", 2)[1:] for line in summary.next_steps(torch=False))
    assert without["train on it"].startswith("install torch first, its CPU build: ")
    assert f" -m {TORCH_CPU_INSTALL}; then: " in without["train on it"]
    assert without["train on it"].endswith(f"train_tiny.py {shlex.quote(where)}")
    with_torch = dict(line.split(": ", 2)[1:] for line in summary.next_steps(torch=True))
    assert "install" not in with_torch["train on it"] and with_torch["load it"] == f"datasets.load_dataset({where!r})"
    assert ("publish it" in with_torch) is not published
    assert summary.next_steps() == summary.next_steps(torch=True)  # torch is installed here (found, not imported)


@OURS
def test_the_hints_name_python_as_typed_here(tmp_path, monkeypatch):
    """`python` when that finds this interpreter (its environment activated); else its path, relative when here."""
    import push as module

    bin_dir = Path(os.path.abspath(sys.executable)).parent
    monkeypatch.setenv("PATH", str(bin_dir))
    assert (bin_dir / "python").exists() and module._python() == "python"
    monkeypatch.setenv("PATH", str(tmp_path))  # another python first, or none
    (tmp_path / "python").symlink_to(sys.executable)
    monkeypatch.chdir(bin_dir.parent)
    assert module._python() == f"{bin_dir.name}/{Path(sys.executable).name}"
    monkeypatch.chdir(tmp_path)
    assert module._python() == os.path.abspath(sys.executable)
