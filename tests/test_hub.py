"""Publishing to the Hub: `openeds.hub` and the test Hub, driven by the real huggingface_hub and datasets clients."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, HfFileSystem
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from openeds import raw, records, schema
from openeds.card import SplitSize, card_origin, sign
from openeds.hub import (
    PublishError,
    PublishResult,
    RetryPolicy,
    check_commit,
    check_kept,
    check_tag_at_head,
    check_tag_free,
    collect_local_files,
    connect,
    foreign_files,
    git_blob_id,
    has_v1_revision,
    inspect_remote,
    kept_sizes,
    next_publication_tag,
    plan_operations,
    publish,
    read_footer,
    read_footers,
    tag_problem,
)
from openeds.layout import shard_glob
from openeds.materialize import hash_inputs, plan_shards
from openeds.parquet import source_of
from openeds.records import write_recorded
from openeds.timeouts import use_hub_timeouts
from tests.hub_server import HubServer
from tests.v1data import V1Layout, tiny_v1_table, upload_v1

pytestmark = pytest.mark.datasets_independent("the publishing protocol against the test Hub: our code decides it")
#: the tests that read the publication back with datasets (load_dataset, the card's metadata): both lines
READS_BACK = pytest.mark.datasets_line

WRITE = "hf_alice_write"  # alice, may write to alice/* and openeds-org/*
BOB = "hf_bob_write"  # bob, may write to bob/* only
READ_ONLY = "hf_carol_read"
FAST_RETRY = RetryPolicy(first_delay=0.01, max_delay=0.05, total=0.5)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))  # a stand-in preview: only its bytes travel
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub(hub: HubServer) -> HubServer:
    hub.add_token(WRITE, "alice", write={"alice", "openeds-org"})
    hub.add_token(BOB, "bob")
    hub.add_token(READ_ONLY, "carol", write=())
    return hub


@pytest.fixture
def repo_id() -> str:
    return f"alice/openeds-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api() -> HfApi:
    return HfApi(token=WRITE)


# --- building small folders -------------------------------------------------------------------


def rows(split: str, count: int, *, offset: int = 0) -> dict[str, list]:
    return {
        "filename": [f"{split}_{i:04d}" for i in range(offset, offset + count)],
        "pixel_sum": [1000 * len(split) + i for i in range(offset, offset + count)],
        "preprocessed": [True] * count,
    }


def card(
    configs: Mapping[str, Sequence[str]], features: Sequence[str] = ("filename", "pixel_sum", "preprocessed")
) -> str:
    """A card naming `configs` (Hub config name -> splits) and the features (v2 unless told otherwise).

    `pupil` is marked the default, as push.py writes it; `default` is the name earlier cards gave it.
    """
    dtypes = {
        "filename": "string",
        "pixel_sum": "int64",
        "preprocessed": "bool",
        "image": {"sequence": "int64"},
        "label": {"sequence": "int64"},
        "spatial_weights": {"sequence": "float32"},
        "dist_map": {"sequence": "float32"},
    }  # v1's flat list columns, as datasets 2.x/3.x wrote them
    folders = {"pupil": "data", "default": "data", "full": "full"}
    metadata = {
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": s, "path": shard_glob(f"{folders[name]}/{s}-")} for s in splits],
                **({"default": True} if name == "pupil" else {}),
            }
            for name, splits in configs.items()
        ],
        "dataset_info": [
            {"config_name": name, "features": [{"name": f, "dtype": dtypes[f]} for f in features]} for name in configs
        ],
    }
    return f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n# OpenEDS precomputed (test)\n"


def build(
    folder: Path, shards: Mapping[str, Mapping[str, int]], configs: Mapping[str, Sequence[str]] | None = None
) -> Path:
    """Write a folder to publish: `shards` maps `data`/`full` -> split -> number of shards (2 rows each).

    Each shard is written with the record of its bytes beside it, and its card is signed, as push.py writes
    them (`openeds.records.write_recorded`, `openeds.card.sign`).
    """
    for subdir, splits in shards.items():
        for split, count in splits.items():
            for i in range(count):
                write_shard(folder, f"{subdir}/{split}-{i:05d}-of-{count:05d}.parquet", rows(split, 2, offset=2 * i))
    default = {"pupil": sorted(shards.get("data", {})), "full": sorted(shards.get("full", {}))}
    (folder / "README.md").write_text(sign(card(configs or {k: v for k, v in default.items() if v})))
    (folder / "images").mkdir(exist_ok=True)
    (folder / "images" / "preview.png").write_bytes(PNG)
    if "full" in shards:
        (folder / "images" / "preview-full.png").write_bytes(PNG[::-1])
    return folder


def write_shard(folder: Path, relpath: str, columns: Mapping[str, list]) -> None:
    """A shard of `columns` and the record of its bytes, as push.py writes them."""
    write_recorded(folder, relpath, lambda sink: pq.write_table(pa.table(columns), sink))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def remote_blobs(api: HfApi, repo_id: str, revision: str = "main") -> dict[str, str]:
    return {
        f.path: f.blob_id
        for f in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, revision=revision)
        if hasattr(f, "blob_id")
    }


def publish_train(tmp_path: Path, repo_id: str, api: HfApi, **options) -> PublishResult:
    """Publish a folder holding one shard of `train` (config `pupil`)."""
    return publish(
        build(tmp_path, {"data": {"train": 1}}), repo_id, splits_by_config={"pupil": ["train"]}, api=api, **options
    )


def publication_commits(hub: HubServer, repo_id: str) -> int:
    return sum(1 for r in hub.requests if r.method == "POST" and r.path == f"/api/datasets/{repo_id}/commit/main")


# --- plan_operations --------------------------------------------------------------------------


LOCAL = {
    p: Path("/out") / p
    for p in [
        "README.md",
        "images/preview.png",
        "data/train-00000-of-00001.parquet",
        "data/test-00000-of-00002.parquet",
        "data/test-00001-of-00002.parquet",
    ]
}


def test_plan_first_push_adds_everything_and_deletes_nothing():
    plan = plan_operations(LOCAL, {".gitattributes"}, ["data/train-", "data/test-", "images/preview.png"])
    assert sorted(plan.additions) == sorted(LOCAL)
    assert plan.additions["data/train-00000-of-00001.parquet"] == Path("/out/data/train-00000-of-00001.parquet")
    assert plan.deletions == []


def test_plan_replaces_only_the_pushed_split():
    remote = {
        ".gitattributes",
        "README.md",
        "images/preview.png",
        "data/train-00000-of-00001.parquet",
        "data/test-00000-of-00003.parquet",
        "data/test-00001-of-00003.parquet",
        "data/test-00002-of-00003.parquet",
        "data/test_hard-00000-of-00001.parquet",
        "full/test-00000-of-00001.parquet",
    }
    plan = plan_operations(LOCAL, remote, ["data/test-", "images/preview.png"])
    assert sorted(plan.additions) == [
        "README.md",
        "data/test-00000-of-00002.parquet",
        "data/test-00001-of-00002.parquet",
        "images/preview.png",
    ]
    # The old 3-shard test split goes; train, the `test_hard` split and the `full` config stay.
    assert plan.deletions == [
        "data/test-00000-of-00003.parquet",
        "data/test-00001-of-00003.parquet",
        "data/test-00002-of-00003.parquet",
    ]


def test_plan_adds_the_previews_of_the_pushed_configs_only():
    """A stale preview of a config this run did not build stays local; the remote one is kept."""
    local = {**LOCAL, "images/preview-full.png": Path("/out/images/preview-full.png")}
    remote = {"images/preview.png", "images/preview-full.png", "full/test-00000-of-00001.parquet"}
    plan = plan_operations(local, remote, ["data/test-", "images/preview.png"])
    assert "images/preview-full.png" not in plan.additions and "images/preview.png" in plan.additions
    assert plan.deletions == []


def test_plan_keeps_a_remote_file_that_is_overwritten():
    remote = {"data/test-00000-of-00002.parquet", "data/test-00001-of-00002.parquet"}
    plan = plan_operations(LOCAL, remote, ["data/test-"])
    assert plan.deletions == []
    assert "data/test-00001-of-00002.parquet" in plan.additions


def test_plan_deletes_files_named_by_their_full_path():
    plan = plan_operations(
        LOCAL,
        {"data/train-00000-of-00001-4f2a.parquet", "notes.txt"},
        ["data/train-"],
        ["data/train-00000-of-00001-4f2a.parquet"],
    )
    assert plan.deletions == ["data/train-00000-of-00001-4f2a.parquet"]


# --- the local folder -------------------------------------------------------------------------


def test_collect_local_files_lists_the_folder(tmp_path):
    folder = build(tmp_path, {"data": {"train": 2}, "full": {"train": 1}})
    (folder / ".openeds" / "lock").touch()  # the folder's bookkeeping (lock, records) is not published
    (folder / ".openeds" / "lock.owner").write_text("{}")
    assert (folder / ".openeds" / "records" / "data" / "train-00000-of-00002.parquet.json").is_file()
    files = collect_local_files(folder, {"pupil": ["train"], "full": ["train"]})
    assert sorted(files) == [
        "README.md",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "full/train-00000-of-00001.parquet",
        "images/preview-full.png",
        "images/preview.png",
    ]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "images" / "preview.png").unlink(), "preview.png is missing"),
        (lambda f: (f / "images" / "preview-full.png").unlink(), "preview-full.png is missing"),
        (lambda f: (f / "data" / "train-00001-of-00002.parquet").unlink(), "expected the 2 shards"),
        (lambda f: (f / "data" / "notes.txt").write_text("x"), "notes.txt is not a file to publish"),
        # only the one bookkeeping folder is left out: an earlier version's lock file, another dot-file, are not
        (lambda f: (f / ".lock").touch(), r"out/\.lock is not a file to publish"),
        (lambda f: (f / "data" / ".openeds").write_text("x"), r"data/\.openeds is not a file to publish"),
        (lambda f: None, "no shard"),  # the `test` split is asked for but was never built
    ],
)
def test_collect_local_files_refuses_a_bad_folder(tmp_path, damage, expected):
    folder = build(tmp_path / "out", {"data": {"train": 2}, "full": {"train": 1}})
    damage(folder)
    splits = {"pupil": ["train", "test"]} if expected == "no shard" else {"pupil": ["train"], "full": ["train"]}
    with pytest.raises(PublishError, match=expected):
        collect_local_files(folder, splits)


# --- the test Hub with the real clients -------------------------------------------------------


def test_hub_server_serves_the_client_calls(hub, api, repo_id):
    api.create_repo(repo_id, repo_type="dataset")
    content = bytes(range(256)) * 40
    operations = [CommitOperationAdd("blob.bin", content), CommitOperationAdd("notes.md", b"hello\n")]
    first = api.create_commit(repo_id, operations, commit_message="add", repo_type="dataset")
    with HfFileSystem().open(f"datasets/{repo_id}/blob.bin", "rb", block_size=1000) as file:
        file.seek(5000)
        assert file.read(300) == content[5000:5300]  # Range requests
    assert Path(api.hf_hub_download(repo_id, "notes.md", repo_type="dataset")).read_bytes() == b"hello\n"

    infos = api.get_paths_info(repo_id, ["blob.bin", "nothing"], expand=True, repo_type="dataset")
    assert [(f.path, f.size, f.lfs.sha256, f.last_commit.oid) for f in infos] == [
        ("blob.bin", len(content), hashlib.sha256(content).hexdigest(), first.oid)
    ]
    api.create_tag(repo_id, tag="first", repo_type="dataset")
    api.delete_file("notes.md", repo_id, repo_type="dataset")
    old = api.hf_hub_download(repo_id, "notes.md", repo_type="dataset", revision="first", force_download=True)
    assert Path(old).read_bytes() == b"hello\n"  # the tag still resolves to the old snapshot
    api.delete_tag(repo_id, tag="first", repo_type="dataset")
    assert api.list_repo_refs(repo_id, repo_type="dataset").tags == []
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("alice/nothing-here", repo_type="dataset")


@READS_BACK
def test_publish_then_load_dataset(hub, api, repo_id, tmp_path):
    folder = build(tmp_path, {"data": {"train": 2, "test": 1}, "full": {"train": 1, "test": 1}})
    result = publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"], "full": ["train", "test"]}, api=api)

    assert result.tags == ("v2",) and result.deletions == ()
    assert publication_commits(hub, repo_id) == 1
    assert api.list_repo_refs(repo_id, repo_type="dataset").tags[0].target_commit == result.commit
    pupil = datasets.load_dataset(repo_id)
    assert pupil["train"].to_dict() == rows("train", 4)  # two shards of two rows, in order
    assert pupil["test"].to_dict() == rows("test", 2)
    assert datasets.load_dataset(repo_id, "full", split="test").to_dict() == rows("test", 2)
    assert DatasetCard(inspect_remote(api, repo_id).card).data.configs[1]["config_name"] == "full"


def test_only_a_v1_tag_or_v1_data_make_a_v1_revision(hub, api, repo_id, tmp_path):
    assert not has_v1_revision(inspect_remote(api, repo_id))  # no repo
    publish_train(tmp_path, repo_id, api)
    assert not has_v1_revision(inspect_remote(api, repo_id))  # v2 data, tags v2 only
    api.create_tag(repo_id, tag="v1", repo_type="dataset")
    assert has_v1_revision(inspect_remote(api, repo_id))


def test_next_publication_tag():
    assert next_publication_tag([]) == "v2"
    assert next_publication_tag(["v1"]) == "v2"
    assert next_publication_tag(["v1", "v2"]) == "v2.1"
    assert next_publication_tag(["v2", "v2.1", "v2.7", "v2.x"]) == "v2.8"


def test_publish_needs_no_change_to_repeat(hub, api, repo_id, tmp_path):
    first = publish_train(tmp_path, repo_id, api)
    hub.reset_faults_and_log()
    again = publish_train(tmp_path, repo_id, api)
    assert hub.lfs_uploads(repo_id) == [] and publication_commits(hub, repo_id) == 0
    assert again.commit == first.commit and again.tags == ()


def test_a_run_that_died_before_tagging_is_tagged_by_the_rerun(hub, api, repo_id, tmp_path):
    hub.fail("POST", f"/api/datasets/{repo_id}/tag/", status=503, times=1000)
    with pytest.raises(PublishError, match="could not tag"):
        publish_train(tmp_path, repo_id, api, retry=FAST_RETRY)
    head = api.dataset_info(repo_id).sha
    assert api.list_repo_refs(repo_id, repo_type="dataset").tags == []
    hub.reset_faults_and_log()
    again = publish_train(tmp_path, repo_id, api)
    assert publication_commits(hub, repo_id) == 0 and again.commit == head and again.tags == ("v2",)
    assert api.list_repo_refs(repo_id, repo_type="dataset").tags[0].target_commit == head


@pytest.fixture
def lfs(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The LFS path (what `HF_HUB_DISABLE_XET=1` selects): in this process, and the environment for a child."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # read at each upload
    return {"HF_HUB_DISABLE_XET": "1"}  # read when a child imports huggingface_hub


@READS_BACK
def test_killed_upload_resumes_with_the_missing_files_only(hub, repo_id, tmp_path, lfs):
    folder = build(tmp_path, {"data": {"train": 2, "test": 1}, "full": {"train": 1}})
    lfs_files = sorted(p for p in folder.rglob("*") if p.suffix in (".parquet", ".png"))
    victim = sha256(folder / "data" / "test-00000-of-00001.parquet")
    others = {sha256(p) for p in lfs_files} - {victim}
    hub.fail("PUT", victim, drop=True, times=1000)  # every attempt at this file is cut halfway
    script = (
        "import sys; from pathlib import Path; from openeds.hub import publish; "
        "publish(Path(sys.argv[1]), sys.argv[2], splits_by_config={'pupil': ['train', 'test'], 'full': ['train']})"
    )
    env = {**os.environ, "HF_TOKEN": WRITE, "PYTHONPATH": str(REPO_ROOT), **lfs}
    process = subprocess.Popen([sys.executable, "-c", script, str(folder), repo_id], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (set(hub.lfs_uploads(repo_id)) >= others and any(r.lfs_oid == victim for r in hub.requests)):
            assert process.poll() is None and time.monotonic() < deadline, "the upload ended before it could be killed"
            time.sleep(0.02)
    finally:
        process.kill()  # killed mid-upload: the other files are on the Hub, the victim is not, nothing is committed
        process.wait()
    assert publication_commits(hub, repo_id) == 0

    hub.reset_faults_and_log()
    publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"], "full": ["train"]}, api=HfApi(token=WRITE))
    assert hub.lfs_uploads(repo_id) == [victim]
    assert datasets.load_dataset(repo_id, split="test").to_dict() == rows("test", 2)


def test_a_dropped_upload_is_retried_by_the_client(hub, api, repo_id, tmp_path, lfs):
    folder = build(tmp_path, {"data": {"train": 1}})
    victim = sha256(folder / "data" / "train-00000-of-00001.parquet")
    hub.fail("PUT", victim, drop=True)
    publish(folder, repo_id, splits_by_config={"pupil": ["train"]}, api=api)
    assert [r.status for r in hub.requests if r.lfs_oid == victim] == [None, 200]


@READS_BACK
def test_adding_a_split_keeps_the_other_splits_byte_identical(hub, api, repo_id, tmp_path):
    publish(
        build(tmp_path / "v2", {"data": {"train": 2, "test": 3}, "full": {"train": 1}}),
        repo_id,
        splits_by_config={"pupil": ["train", "test"], "full": ["train"]},
        api=api,
    )
    before = remote_blobs(api, repo_id)

    # Later: add `validation`, and rebuild `test` with fewer shards; the card names every split.
    configs = {"pupil": ["train", "validation", "test"], "full": ["train"]}
    folder = build(tmp_path / "more", {"data": {"validation": 1, "test": 1}}, configs=configs)
    result = publish(folder, repo_id, splits_by_config={"pupil": ["validation", "test"]}, api=api, tag="v2.1")

    after = remote_blobs(api, repo_id)
    kept = [p for p in before if p.startswith(("data/train-", "full/", ".gitattributes"))]
    assert {p: after[p] for p in kept} == {p: before[p] for p in kept}
    assert sorted(result.deletions) == [f"data/test-0000{i}-of-00003.parquet" for i in range(3)]
    assert "data/validation-00000-of-00001.parquet" in after and result.tags == ("v2.1",)
    loaded = datasets.load_dataset(repo_id)
    assert {split: ds.num_rows for split, ds in loaded.items()} == {"train": 4, "validation": 2, "test": 2}


V1_FEATURES = ("image", "label", "spatial_weights", "dist_map", "filename")
#: a card added by hand to the script's v1 repo (it wrote none): no `configs`, so the folders give the splits
V1_NOTES = "# OpenEDS precomputed\n\nPupil masks, weights and distance maps of OpenEDS, as flat lists.\n"


def push_v1(api: HfApi, repo_id: str, *, layout: V1Layout = "script", with_card: bool = False) -> dict[str, bytes]:
    """A v1 repo (v1's columns, a few values a row; `tests.v1data.upload_v1`), its files path -> bytes.

    `script`, as the old precompute script left the real repo: `data/train/shard_00000.parquet` and
    `shard_00001.parquet`, the same for `validation`, uploaded with `upload_folder`; no card, unless
    `with_card` (one added by hand). `push_to_hub`: `data/train-00000-of-00002.parquet`, ... and
    push_to_hub's card (`configs`, and `dataset_info` without `preprocessed`), unless not `with_card`.
    """
    tables = {split: tiny_v1_table(split) for split in ("train", "validation")}
    text = None
    if with_card:
        hub_card = card({"default": ["train", "validation"]}, features=V1_FEATURES)
        text = V1_NOTES if layout == "script" else hub_card
    return upload_v1(api, repo_id, tables, layout=layout, card=text)


@READS_BACK
@pytest.mark.parametrize(("layout", "with_card"), [("script", False), ("script", True), ("push_to_hub", True)])
def test_v1_repo_is_tagged_then_converted(hub, api, repo_id, tmp_path, layout, with_card):
    v1_files = push_v1(api, repo_id, layout=layout, with_card=with_card)
    data = sorted(path for path in v1_files if path.endswith(".parquet"))
    v1_head = api.repo_info(repo_id, repo_type="dataset").sha
    remote = inspect_remote(api, repo_id)
    assert has_v1_revision(remote)  # not tagged yet: the publication will tag it
    assert dict(remote.v1_files) == {path: path.split("/")[1].split("-")[0] for path in data}  # split: datasets'
    hub.reset_faults_and_log()
    folder = build(tmp_path, {"data": {"train": 1, "validation": 1, "test": 1}})
    result = publish(folder, repo_id, splits_by_config={"pupil": ["train", "validation", "test"]}, api=api)

    assert result.tags == ("v1", "v2") and result.v1_removed == tuple(data)
    assert "the 4 v1 files left main and stay at revision 'v1'" in result.line()
    assert has_v1_revision(inspect_remote(api, repo_id))  # now by its tag
    tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type="dataset").tags}
    assert tags == {"v1": v1_head, "v2": result.commit}
    assert publication_commits(hub, repo_id) == 1
    assert remote_blobs(api, repo_id, "v1").keys() == {*v1_files, ".gitattributes"}
    for path in v1_files:
        assert (
            Path(api.hf_hub_download(repo_id, path, repo_type="dataset", revision="v1")).read_bytes() == v1_files[path]
        )
    built = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
    assert sorted(p for p in remote_blobs(api, repo_id) if p.endswith(".parquet")) == built  # main: v2 only
    assert datasets.load_dataset(repo_id, split="validation").to_dict() == rows("validation", 2)
    # Revision v1 loads as v1 did (its only config named `default`, with its card or without one).
    old = datasets.load_dataset(repo_id, revision="v1")
    assert {split: old[split].to_dict() for split in old} == {
        split: tiny_v1_table(split).to_pydict() for split in ("train", "validation")
    }
    assert datasets.load_dataset(repo_id, "default", revision="v1", split="validation").num_rows == 2


def test_a_push_that_would_mix_v1_and_v2_is_refused(hub, api, repo_id, tmp_path):
    push_v1(api, repo_id)  # no card: the parquet schema tells v1 from v2
    head = api.repo_info(repo_id, repo_type="dataset").sha
    folder = build(tmp_path, {"data": {"test": 1}})
    with pytest.raises(PublishError, match=r"\['train', 'validation'\] would be gone from main .* without --splits"):
        publish(folder, repo_id, splits_by_config={"pupil": ["test"]}, api=api)
    assert api.repo_info(repo_id, repo_type="dataset").sha == head
    assert api.list_repo_refs(repo_id, repo_type="dataset").tags == []
    assert any(r.method == "GET" and "/resolve/" in r.path and r.path.endswith(".parquet") for r in hub.requests)


# --- errors -----------------------------------------------------------------------------------


def test_bad_repo_id(tmp_path):
    with pytest.raises(PublishError, match="'openeds' is not of the form namespace/name"):
        publish_train(tmp_path, "openeds", HfApi(token=WRITE))


def test_no_token(hub, repo_id, tmp_path):
    with pytest.raises(PublishError, match="no Hugging Face token found"):
        publish_train(tmp_path, repo_id, HfApi())


def test_the_listing_decides_whether_there_is_a_card(hub, api, repo_id):
    assert inspect_remote(api, "alice/no-such-repo").exists is False
    api.create_repo(repo_id, repo_type="dataset")
    empty = inspect_remote(api, repo_id)
    assert empty.exists and empty.card is None and list(empty.files) == [".gitattributes"]
    with pytest.raises(PublishError, match=r"was rejected .*401"):
        connect(HfApi(token="hf_not_a_token"), repo_id, token="hf_not_a_token")


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 404}, {"drop": True}], ids=["500", "404", "dropped"])
def test_a_card_that_cannot_be_read_is_an_error_never_absent(hub, api, repo_id, tmp_path, fault):
    publish_train(tmp_path, repo_id, api)
    hub.fail("GET", f"/datasets/{repo_id}/resolve/.*/README.md", times=1000, **fault)
    with pytest.raises(PublishError) as error:
        inspect_remote(api, repo_id, retry=FAST_RETRY)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"could not download the card README.md of {repo_id}@")
    assert "which its file listing names" in message and "nothing was published" in message
    if fault.get("status") == 404:
        assert "the Hub answered HTTP 404" in message  # the listing has it: a 404 is not "no card" either
    else:
        assert "(after " in message  # retried first


@pytest.mark.parametrize(("token", "expected"), [("hf_not_a_token", r"was rejected .*401"), (READ_ONLY, "read-only")])
def test_bad_token(hub, repo_id, tmp_path, token, expected):
    with pytest.raises(PublishError, match=expected) as error:
        publish_train(tmp_path, repo_id, HfApi(token=token))
    assert token not in str(error.value)


@pytest.mark.parametrize("existing", [False, True])
def test_forbidden_namespace(hub, api, tmp_path, existing):
    repo_id = f"openeds-org/openeds-{uuid.uuid4().hex[:8]}"
    if existing:  # the write check (auth-check/write) refuses it, before any upload
        api.create_repo(repo_id, repo_type="dataset")
    why = r" \(403.*namespace 'openeds-org'" if existing else r": the repo does not exist, and creating it needs write"
    with pytest.raises(PublishError, match=rf"user 'bob' may not write to {repo_id}{why}"):
        publish_train(tmp_path, repo_id, HfApi(token=BOB))
    sent = [r.path for r in hub.requests if r.method in ("POST", "PUT")]
    assert sent == (["/api/repos/create"] if existing else []), sent  # alice's own create_repo only


def test_network_failure_gives_up_after_the_retry_budget(hub, api, repo_id, tmp_path):
    hub.fail("GET", "/api/whoami-v2", status=503, times=1000)
    started = time.monotonic()
    with pytest.raises(PublishError, match=r"could not check the Hugging Face token: .*503.* \(after \d+ attempts"):
        publish_train(tmp_path, repo_id, api, retry=FAST_RETRY)
    assert time.monotonic() - started < 2
    assert sum(r.path == "/api/whoami-v2" for r in hub.requests) > 2


def test_transient_failures_are_retried(hub, api, repo_id, tmp_path):
    hub.fail("POST", "/api/repos/create", drop=True)
    hub.fail("POST", f"/api/datasets/{repo_id}/commit/main", status=503, times=2)
    result = publish_train(tmp_path, repo_id, api, retry=FAST_RETRY)
    assert [r.status for r in hub.requests if r.path == "/api/repos/create"] == [None, 200]
    assert [r.status for r in hub.requests if r.path.endswith("/commit/main")] == [503, 503, 200]
    assert api.repo_info(repo_id, repo_type="dataset").sha == result.commit


def test_a_commit_whose_answer_was_lost_is_not_made_twice(hub, api, repo_id, tmp_path):
    hub.fail("POST", f"/api/datasets/{repo_id}/commit/main", lose_response=True)
    result = publish_train(tmp_path, repo_id, api, retry=FAST_RETRY)
    commits = api.list_repo_commits(repo_id, repo_type="dataset")
    assert [c.title for c in commits] == ["Publish OpenEDS precomputed v2", "initial commit"]
    assert result.commit == commits[0].commit_id


# --- one line for every Hub failure --------------------------------------------------------------


def _state(api: HfApi, repo_id: str) -> tuple[str, list[str], dict[str, str]]:
    """What the Hub shows of `repo_id`: head, files, tags."""
    info = api.dataset_info(repo_id)
    tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type="dataset").tags}
    return info.sha, sorted(s.rfilename for s in info.siblings), tags


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (400, "re-running will not help: the Hub found the request malformed"),
        (413, "re-running will not help: the request is too large for the Hub; publish fewer splits"),
        (422, "re-running will not help until what the Hub's message names is fixed"),
    ],
)
def test_a_refused_commit_is_one_line_and_publishes_nothing(hub, api, repo_id, tmp_path, status, advice):
    publish_train(tmp_path / "first", repo_id, api)
    before = _state(api, repo_id)
    hub.reset_faults_and_log()
    hub.fail("POST", f"/api/datasets/{repo_id}/commit/main", status=status)
    folder = build(tmp_path / "second", {"data": {"train": 1, "test": 1}})
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api, retry=FAST_RETRY)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"could not commit to {repo_id}: the Hub answered HTTP {status}: injected fault")
    assert "nothing was published (the commit is atomic;" in message and advice in message
    assert publication_commits(hub, repo_id) == 1  # not retried
    assert _state(api, repo_id) == before


def test_a_commit_failing_with_5xx_gives_up_after_the_retries(hub, api, repo_id, tmp_path):
    publish_train(tmp_path / "first", repo_id, api)
    before = _state(api, repo_id)
    hub.reset_faults_and_log()
    hub.fail("POST", f"/api/datasets/{repo_id}/commit/main", status=500, times=1000)
    folder = build(tmp_path / "second", {"data": {"train": 1, "test": 1}})
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api, retry=FAST_RETRY)
    assert re.match(
        rf"could not commit to {repo_id}: HTTP 500: injected fault.* \(after \d+ attempts in .* the retry budget "
        r"is 0.5 s\); .*nothing was published \(the commit is atomic; .*\); re-run later",
        str(error.value),
    ), str(error.value)
    assert publication_commits(hub, repo_id) > 2
    assert _state(api, repo_id) == before


def test_a_failed_check_of_a_lost_commit_is_one_line(hub, api, repo_id, tmp_path):
    hub.fail("POST", f"/api/datasets/{repo_id}/commit/main", lose_response=True)
    hub.fail("GET", f"/api/datasets/{repo_id}/commits/", status=400)
    with pytest.raises(PublishError) as error:
        publish_train(tmp_path, repo_id, api, retry=FAST_RETRY)
    message = str(error.value)
    assert message.startswith(
        f"could not check whether the commit to {repo_id} landed after its answer was lost: the Hub answered HTTP 400"
    )
    assert "the commit may have landed; re-run the same command: it finds a landed commit and only tags it" in message
    landed = api.dataset_info(repo_id).sha  # it had
    hub.reset_faults_and_log()
    again = publish_train(tmp_path, repo_id, api)
    assert (again.changed, again.commit, again.tags) == (False, landed, ("v2",))
    assert publication_commits(hub, repo_id) == 0


@pytest.mark.parametrize("failure", ["refused", "dns"])
def test_an_unreachable_endpoint_gives_up_on_the_network_budget(repo_id, tmp_path, failure):
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        endpoint = f"http://127.0.0.1:{port}" if failure == "refused" else "http://hub.openeds.invalid"
        started = time.monotonic()
        with pytest.raises(PublishError) as error:
            publish_train(
                tmp_path,
                repo_id,
                HfApi(endpoint=endpoint, token=WRITE),
                retry=RetryPolicy(first_delay=0.05, total=30, network_total=0.5),
            )
    assert time.monotonic() - started < 3  # the network budget (0.5 s), not the retry budget (30 s)
    message = str(error.value)
    assert message.startswith(
        f"could not check the Hugging Face token: the network or the Hub endpoint {endpoint} is unreachable ("
    )
    assert ("Connection refused" if failure == "refused" else "Name or service not known") in message
    assert "the network budget is 0.5 s" in message and "HF_ENDPOINT" in message and "nothing was published" in message


def test_retry_after_zero_still_waits_the_floor(hub, api, repo_id, tmp_path):
    hub.fail("GET", "/api/whoami-v2", status=429, times=3, headers={"Retry-After": "0"})
    publish_train(tmp_path, repo_id, api, retry=RetryPolicy(first_delay=0.2, total=10))
    times = [r.time for r in hub.requests if r.path == "/api/whoami-v2"]
    assert len(times) == 4 and min(b - a for a, b in itertools.pairwise(times)) >= 0.1


# --- what the remote holds: kept splits, unchanged data ---------------------------------------------


@pytest.mark.parametrize("claim", ["999999", "4", "many rows", "[1, 2]"])
def test_kept_splits_are_sized_from_the_repo_never_from_the_old_card(hub, api, repo_id, tmp_path, claim):
    """The card claims a row count for train (edited, or text); the new card's rows come from the footers, its
    bytes from the listing, and a split the card does not list (test) is sized alike."""
    folder = build(tmp_path, {"data": {"train": 1, "test": 2}}, configs={"pupil": ["train"]})
    text = (folder / "README.md").read_text()
    info = f"  splits:\n  - name: train\n    num_examples: {claim}\n"
    (folder / "README.md").write_text(text.replace("    dtype: bool\n", "    dtype: bool\n" + info, 1))
    publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api)
    remote = inspect_remote(api, repo_id)
    listed = {path: remote.files[path].size for path in remote.files if path.endswith(".parquet")}

    sizes = kept_sizes(api, repo_id, remote, rebuilt={"pupil": ["validation"]})
    test_bytes = listed["data/test-00000-of-00002.parquet"] + listed["data/test-00001-of-00002.parquet"]
    assert sizes == {
        "pupil": {
            "train": SplitSize(2, listed["data/train-00000-of-00001.parquet"]),  # the footer's 2, not the claim
            "test": SplitSize(4, test_bytes),  # not in the card: 2 + 2 rows from the footers, still listed
        }
    }
    assert kept_sizes(api, repo_id, remote, rebuilt={"pupil": ["train", "test"]}) == {}


def test_the_listing_hashes_match_the_local_files(hub, api, repo_id, tmp_path):
    folder = build(tmp_path, {"data": {"train": 1}})
    publish(folder, repo_id, splits_by_config={"pupil": ["train"]}, api=api)
    remote = inspect_remote(api, repo_id)
    shard = folder / "data" / "train-00000-of-00001.parquet"
    assert remote.files["data/train-00000-of-00001.parquet"].sha256 == sha256(shard)  # LFS: sha256 of the content
    card_file = remote.files["README.md"]
    assert card_file.sha256 is None and card_file.blob_id == git_blob_id((folder / "README.md").read_bytes())
    assert remote.card == (folder / "README.md").read_text()


def _with_provenance(folder: Path, command: str) -> None:
    card_path = folder / "README.md"
    block = f"<!-- provenance -->\n- Command: `{command}`\n<!-- /provenance -->\n"
    card_path.write_text(sign(card_path.read_text() + f"\n## Provenance\n\n{block}"))


@READS_BACK
def test_unchanged_data_is_not_published_again(hub, api, repo_id, tmp_path):
    first_folder = build(tmp_path / "a", {"data": {"train": 1, "test": 1}})
    _with_provenance(first_folder, f"python push.py --local-dir {tmp_path / 'a'}")
    first = publish(first_folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api)
    assert first.changed and first.tags == ("v2",)

    # The same data from another folder: only the provenance block of the card differs.
    hub.reset_faults_and_log()
    other = build(tmp_path / "b", {"data": {"train": 1, "test": 1}})
    _with_provenance(other, f"python push.py --local-dir {tmp_path / 'b'}")
    again = publish(other, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api)
    assert not again.changed and again.tags == () and again.commit == first.commit and again.at == "v2"
    assert again.line() == f"nothing to publish: {repo_id} already holds this data at v2"
    assert publication_commits(hub, repo_id) == 0 and hub.lfs_uploads(repo_id) == []
    assert not any(r.path.startswith(f"/api/datasets/{repo_id}/tag/") for r in hub.requests)
    # A tag asked for on data already published and tagged: not created, and the line says so.
    tagged = publish(other, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api, tag="v2-final")
    assert not tagged.changed and tagged.tags == ()
    assert tagged.line() == (
        f"nothing to publish: {repo_id} already holds this data at v2; "
        "tag 'v2-final' not created: there is no new publication to name"
    )
    assert not any(r.path.startswith(f"/api/datasets/{repo_id}/tag/") for r in hub.requests)

    # A changed card text outside the provenance block is a change.
    edited = build(tmp_path / "c", {"data": {"train": 1, "test": 1}})
    (edited / "README.md").write_text(sign((edited / "README.md").read_text().replace("(test)", "(test, edited)")))
    assert publish(edited, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api).tags == ("v2.1",)

    # So is one changed split.
    changed = build(tmp_path / "d", {"data": {"train": 1, "test": 1}})
    write_shard(changed, "data/test-00000-of-00001.parquet", rows("test", 3))
    result = publish(changed, repo_id, splits_by_config={"pupil": ["test"]}, api=api)
    assert result.changed and result.tags == ("v2.2",)
    assert datasets.load_dataset(repo_id, split="test").num_rows == 3


def test_a_repo_without_a_card_is_not_taken_as_unchanged(hub, api, repo_id, tmp_path):
    folder = build(tmp_path, {"data": {"train": 1}})
    publish(folder, repo_id, splits_by_config={"pupil": ["train"]}, api=api)
    api.delete_file("README.md", repo_id, repo_type="dataset")
    result = publish(folder, repo_id, splits_by_config={"pupil": ["train"]}, api=api)
    assert result.changed and "README.md" in [s.rfilename for s in api.dataset_info(repo_id).siblings]


@pytest.mark.parametrize("header", ["- a list", "dataset_info: 7"])
def test_a_card_with_a_header_of_another_shape_is_not_used(hub, api, repo_id, tmp_path, header):
    publish(
        build(tmp_path / "a", {"data": {"train": 1, "test": 1}}),
        repo_id,
        splits_by_config={"pupil": ["train", "test"]},
        api=api,
    )
    api.create_commit(
        repo_id,
        [CommitOperationAdd("README.md", f"---\n{header}\n---\n".encode())],
        commit_message="a card of another shape",
        repo_type="dataset",
    )
    remote = inspect_remote(api, repo_id)
    assert remote.v1_files == {}  # told from the parquet schema instead
    assert kept_sizes(api, repo_id, remote, rebuilt={"pupil": ["test"]})["pupil"]["train"].rows == 2  # from the footer


# --- what belongs to the owner: their files, their card ----------------------------------------------


USER_FILES = {
    "data/train-notes.txt": b"my notes on train\n",  # under a split prefix, not a shard
    "data/train-extra.parquet": b"not ours",  # a parquet file of another name
    "data/train-00000-of-00001-ab12.parquet": b"shard-like, not ours",  # push_to_hub's name, in a v2 repo
    "full/README.txt": b"about full\n",
    "images/logo.png": PNG,
    "docs/paper.md": b"# Please cite our paper\n",
}


def test_plan_deletes_only_this_tools_shards_and_names_the_rest():
    remote = {
        ".gitattributes",
        "README.md",
        "images/preview.png",
        "data/test-00000-of-00003.parquet",
        "data/test-00001-of-00003.parquet",
        "full/test-00000-of-00001.parquet",
        *USER_FILES,
    }
    local = {p: Path("/out") / p for p in ("README.md", "images/preview.png", "data/train-00000-of-00001.parquet")}
    plan = plan_operations(local, remote, ["data/train-", "data/test-"], ["images/preview.png"])
    assert plan.deletions == ["data/test-00000-of-00003.parquet", "data/test-00001-of-00003.parquet"]
    assert foreign_files(remote, plan) == sorted(USER_FILES)


@READS_BACK
def test_files_the_tool_did_not_write_stay_are_named_and_are_not_read_as_data(hub, api, repo_id, tmp_path, caplog):
    publish(
        build(tmp_path / "a", {"data": {"train": 1, "test": 1}}),
        repo_id,
        splits_by_config={"pupil": ["train", "test"]},
        api=api,
    )
    api.create_commit(
        repo_id, [CommitOperationAdd(p, c) for p, c in USER_FILES.items()], commit_message="mine", repo_type="dataset"
    )
    result = publish(
        build(tmp_path / "b", {"data": {"train": 2, "test": 1}}),
        repo_id,
        splits_by_config={"pupil": ["train"]},
        api=api,
    )
    assert result.deletions == ("data/train-00000-of-00001.parquet",)
    after = remote_blobs(api, repo_id)
    for path, content in USER_FILES.items():
        assert after[path] == git_blob_id(content) or path.endswith((".parquet", ".png")), path
        assert Path(api.hf_hub_download(repo_id, path, repo_type="dataset")).read_bytes() == content, path
    [warning] = [r.getMessage() for r in caplog.records if "files this tool did not write" in r.getMessage()]
    assert f"{repo_id} holds 6 files this tool did not write; they stay as they are" in warning
    assert "'data/train-notes.txt'" in warning and "\n" not in warning
    # The card's patterns match this tool's shard names only: the other files are not read as data.
    assert datasets.load_dataset(repo_id, split="train").to_dict() == rows("train", 4)


def test_a_card_knows_whether_it_was_edited():
    text = sign(card({"pupil": ["train"]}))
    assert card_origin(text) == "generated"
    assert card_origin(text.replace("\n", "\r\n")) == "generated"
    assert card_origin(text.replace("config_name: pupil", "config_name: default")) == "generated"  # a data key
    assert card_origin(text.replace("(test)", "(test, mine)")) == "edited"  # inside what the tool wrote
    assert card_origin(text + "\n# MY NOTES\n\nPlease cite our paper.\n") == "edited"  # text added
    assert card_origin(text.replace("---\n\n", "---\nlanguage: en\n---\n\n", 1)) == "edited"  # a YAML key of its own
    assert card_origin("# MY NOTES\n\nPlease cite our paper.\n") == "unsigned"
    assert card_origin(card({"pupil": ["train"]})) == "unsigned"  # written before cards were signed
    assert sign(text) == text


MY_NOTES = "# MY NOTES\n\nPlease cite our paper.\n"


def _hand_card(api: HfApi, repo_id: str, text: str) -> str:
    """The owner's card committed over the published one; returns the head it makes."""
    api.create_commit(
        repo_id, [CommitOperationAdd("README.md", text.encode())], commit_message="my card", repo_type="dataset"
    )
    return api.dataset_info(repo_id).sha


@pytest.mark.parametrize("kind", ["custom", "added", "edited-inside"])
def test_a_card_written_by_hand_is_never_replaced_without_being_asked(hub, api, repo_id, tmp_path, kind, caplog):
    publish_train(tmp_path / "a", repo_id, api)
    published = (tmp_path / "a" / "README.md").read_text()
    text = {"custom": MY_NOTES, "added": published + MY_NOTES, "edited-inside": published.replace("(test)", "(mine)")}
    head = _hand_card(api, repo_id, text[kind])
    before = _state(api, repo_id)
    hub.reset_faults_and_log()
    folder = build(tmp_path / "b", {"data": {"train": 1, "test": 1}})
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config={"pupil": ["test"]}, api=api)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"the card README.md of {repo_id} was written or edited by hand")
    assert "re-run with --replace-card" in message and f"stays readable at revision {head[:12]}" in message
    assert _state(api, repo_id) == before and hub.lfs_uploads(repo_id) == []

    result = publish(folder, repo_id, splits_by_config={"pupil": ["test"]}, api=api, replace_card=True)
    assert result.changed and result.tags == ("v2.1",)
    now = Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", force_download=True)).read_text()
    assert now == folder.joinpath("README.md").read_text() and card_origin(now) == "generated"
    old = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=head, force_download=True)
    assert Path(old).read_text() == text[kind]  # the owner's text stays readable where the warning says
    [warning] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Replacing the card")]
    assert f"/datasets/{repo_id}/blob/{head}/README.md" in warning


def test_the_card_of_v1_data_is_replaced_but_not_once_v1_is_tagged_elsewhere(hub, api, repo_id, tmp_path):
    push_v1(api, repo_id, with_card=True)
    api.create_tag(repo_id, tag="v1", repo_type="dataset")
    _hand_card(api, repo_id, MY_NOTES)  # after the tag: this card is not at revision v1
    folder = build(tmp_path, {"data": {"train": 1, "validation": 1, "test": 1}})
    with pytest.raises(PublishError, match="written or edited by hand"):
        publish(folder, repo_id, splits_by_config={"pupil": ["train", "validation", "test"]}, api=api)


# --- tags and repo ids the Hub refuses, found before anything is sent -----------------------------------


TAG_NAMES = [
    "v2-final",
    "release/2026-12",
    "é",
    "@",
    "",
    "a b",
    "a..b",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[1]",
    "a\\b",
    "a@{1}",
    "x.",
    "/a",
    "a/",
    "a//b",
    ".a",
    "a/.b",
    "x.lock",
    "x.lock/y",
    "-x",
    "a\nb",
    "a\tb",
    "a\x7fb",
    "v2.1.lock",
]


@pytest.mark.parametrize("name", TAG_NAMES, ids=[repr(n) for n in TAG_NAMES])
def test_tag_names_follow_git_and_the_test_hub_agrees(name):
    from tests.hub_server import tag_name_problem

    ours = tag_problem(name)
    assert (ours is None) == (tag_name_problem(name) is None), (ours, tag_name_problem(name))
    git = shutil.which("git")
    if git is None or "\n" in name:
        return
    by_git = subprocess.run([git, "check-ref-format", f"refs/tags/{name}"], capture_output=True).returncode == 0
    assert (ours is None) == (by_git and not name.startswith("-")), (name, ours)


@pytest.mark.parametrize("tag", ["v1", "V1", "v1.0", "main", "HEAD", "0" * 40, "refs/pr/1", "a b", "a\nb"])
def test_a_bad_or_reserved_tag_is_refused_before_anything_is_sent(hub, api, repo_id, tmp_path, tag):
    with pytest.raises(PublishError) as error:
        publish_train(tmp_path, repo_id, api, tag=tag)
    assert "\n" not in str(error.value) and f"tag {tag!r} is " in str(error.value) and "--tag" in str(error.value)
    assert hub.requests == []


def test_the_test_hub_refuses_a_tag_git_refuses(hub, api, repo_id, tmp_path):
    publish_train(tmp_path, repo_id, api)
    with pytest.raises(HfHubHTTPError, match="Invalid tag name 'a..b'"):
        api.create_tag(repo_id, tag="a..b", repo_type="dataset")


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        ("alice/" + "x" * 97, "maximum length is 96"),
        ("alice/a..b", "Cannot have -- or .. in repo_id"),
        ("alice/a--b", "Cannot have -- or .. in repo_id"),
        ("alice/name.git", "cannot end by '.git'"),
        ("alice/-name", "cannot start or end with '-' or '.'"),
        ("alice/näme", "is not of the form namespace/name"),
        ("alice/a\nb", "is not of the form namespace/name"),
        ("a/b/c", "is not of the form namespace/name"),
    ],
)
def test_a_repo_id_the_hub_refuses_is_one_line(hub, tmp_path, repo, expected):
    with pytest.raises(PublishError) as error:
        publish_train(tmp_path, repo, HfApi(token=WRITE))
    assert expected in str(error.value) and repr(repo) in str(error.value) and "\n" not in str(error.value)
    assert hub.requests == []


@pytest.mark.parametrize("token", ["hf_tökén", "hf_a b", "hf_a\x01b"], ids=["accented", "space", "control"])
def test_a_token_that_is_not_printable_ascii_is_refused_before_any_request(hub, repo_id, tmp_path, token):
    with pytest.raises(PublishError) as error:
        publish_train(tmp_path, repo_id, HfApi(token=token))
    assert "is not printable ASCII" in str(error.value) and token not in str(error.value)
    assert hub.requests == []


# --- a remote that is not what it claims -----------------------------------------------------------------


HTML = b"<!DOCTYPE html><html><body><h1>Welcome to the hotel Wi-Fi</h1></body></html>"


@pytest.mark.parametrize(
    ("method", "path", "what"),
    [
        ("GET", "/api/whoami-v2", "check the Hugging Face token"),
        ("GET", "/api/datasets/{repo}$", "read the repo {repo}"),
        ("GET", "/api/datasets/{repo}/tree/", "list the files of {repo}"),
        ("GET", "/api/datasets/{repo}/refs", "list the tags of {repo}"),
        ("GET", "/datasets/{repo}/resolve/.*/README.md", "download the card README.md of {repo}@"),
        ("POST", "/api/datasets/{repo}/preupload/", "upload the files to {repo}"),
        ("POST", "/api/datasets/{repo}/commit/", "commit to {repo}"),
    ],
)
def test_an_html_page_instead_of_the_hub_is_one_line(hub, api, repo_id, tmp_path, method, path, what):
    publish_train(tmp_path / "a", repo_id, api)
    before = _state(api, repo_id)
    hub.fail(method, path.format(repo=re.escape(repo_id)), status=200, body=HTML, times=1000)
    folder = build(tmp_path / "b", {"data": {"train": 1, "test": 1}})
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api, retry=FAST_RETRY)
    message = str(error.value)
    assert message.startswith(f"could not {what.format(repo=repo_id)}") and "\n" not in message
    assert f"{api.endpoint} answered with " in message and "expected the Hub's API at" in message
    if method == "POST" and "commit" in path:
        assert "the commit may have landed" in message  # the answer is unknown: re-running finds out
    hub.reset_faults_and_log()
    assert _state(api, repo_id) == before


@pytest.mark.parametrize(
    ("path", "body", "what"),
    [
        ("/api/datasets/{repo}$", b"{}", "read the repo {repo}"),
        ("/api/datasets/{repo}$", b"[1, 2]", "read the repo {repo}"),
        ("/api/datasets/{repo}/tree/", b'{"files": []}', "list the files of {repo}"),
        ("/api/datasets/{repo}/tree/", b'[{"path": "data/x.parquet", "type": "file"}]', "list the files of {repo}"),
        ("/api/datasets/{repo}/refs", b'{"branches": []}', "list the tags of {repo}"),
    ],
)
def test_json_of_another_shape_is_one_line(hub, api, repo_id, tmp_path, path, body, what):
    publish_train(tmp_path, repo_id, api)
    hub.fail("GET", path.format(repo=re.escape(repo_id)), status=200, body=body, content_type="application/json")
    with pytest.raises(PublishError) as error:
        connect(api, repo_id, token=WRITE)
    message = str(error.value)
    assert (
        message.startswith(
            f"could not {what.format(repo=repo_id)}: {api.endpoint} answered with JSON of another shape ("
        )
        and "\n" not in message
    )


def test_a_card_that_is_not_utf8_is_one_line_naming_it(hub, api, repo_id, tmp_path):
    publish_train(tmp_path, repo_id, api)
    hub.write_files(repo_id, {"README.md": "# Notizen für später\n".encode("latin-1")})  # the client refuses it
    with pytest.raises(PublishError) as error:
        connect(api, repo_id, token=WRITE)
    assert str(error.value).startswith(f"the card README.md of {repo_id}@")
    assert "is not UTF-8 text (byte 0xfc at offset 11)" in str(error.value)


@pytest.mark.parametrize("where", ["kept split", "v1 check"])
def test_a_remote_shard_that_is_not_parquet_is_one_line_naming_it(hub, api, repo_id, tmp_path, where):
    api.create_repo(repo_id, repo_type="dataset")
    operations = [CommitOperationAdd("data/train-00000-of-00001.parquet", b"this is not parquet" * 10)]
    if where == "kept split":  # a card without the split's rows: they come from its footer
        text = sign(card({"pupil": ["test"]}))
        operations.append(CommitOperationAdd("README.md", text.encode()))
    api.create_commit(repo_id, operations, commit_message="broken", repo_type="dataset")
    with pytest.raises(PublishError) as error:
        remote = connect(api, repo_id, token=WRITE)
        kept_sizes(api, repo_id, remote, rebuilt={"pupil": ["test"]}, token=WRITE)
    message = str(error.value)
    assert message.startswith(f"the remote file {repo_id}/data/train-00000-of-00001.parquet (at ")
    assert "is not a parquet file (ArrowInvalid: Parquet magic bytes not found" in message and "\n" not in message
    assert ("rebuild its split (--splits)" in message) is (where == "kept split")


# --- gated repos, tokens revoked, concurrent writers ----------------------------------------------------


def test_a_gated_repo_is_said_at_connect(hub, api, tmp_path):
    repo_id = f"alice/gated-{uuid.uuid4().hex[:8]}"
    publish_train(tmp_path / "a", repo_id, api)
    hub.gate(repo_id, granted={"carol"})
    assert connect(api, repo_id, token=WRITE).card is not None  # the owner passes the gate
    with pytest.raises(PublishError) as error:
        connect(HfApi(token=BOB), repo_id, token=BOB)
    message = str(error.value)
    assert message.startswith(f"{repo_id} is a gated dataset and user 'bob' has not been granted access to it (403")
    assert f"or publish to bob/{repo_id.split('/')[1]}" in message


def test_a_gated_answer_of_the_listing_is_not_a_missing_repo(hub, api, repo_id, tmp_path):
    hub.fail("GET", f"/api/datasets/{re.escape(repo_id)}$", status=403, headers={"X-Error-Code": "GatedRepo"})
    with pytest.raises(PublishError, match=f"{repo_id} is a gated dataset and user 'alice'"):
        connect(api, repo_id, token=WRITE)


def test_a_token_revoked_before_the_commit_is_said_so(hub, api, repo_id, tmp_path):
    publish_train(tmp_path / "a", repo_id, api)
    before = _state(api, repo_id)
    hub.fail(
        "POST",
        f"/api/datasets/{re.escape(repo_id)}/commit/",
        status=401,
        headers={"X-Error-Message": "Invalid credentials in Authorization header"},
    )
    folder = build(tmp_path / "b", {"data": {"train": 1, "test": 1}})
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api)
    message = str(error.value)
    assert message.startswith(
        f"the Hugging Face token was rejected by {api.endpoint} (401 Unauthorized) when trying to commit to {repo_id}"
    )
    assert "may have been revoked" in message and "nothing was published" in message and "may not write" not in message
    assert _state(api, repo_id) == before


def test_a_concurrent_commit_is_one_line(hub, api, repo_id, tmp_path):
    publish_train(tmp_path / "a", repo_id, api)
    before = _state(api, repo_id)
    hub.fail("POST", f"/api/datasets/{re.escape(repo_id)}/commit/", status=412)
    folder = build(tmp_path / "b", {"data": {"train": 1, "test": 1}})
    with pytest.raises(PublishError, match=rf"the head of {repo_id} moved from {before[0]} during the upload"):
        publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api)
    assert _state(api, repo_id) == before


# --- parquet footers: plain ranged GETs inside the project's own retries ----------------------------------------


def _commit_files(api: HfApi, repo_id: str, files: Mapping[str, bytes], message: str = "files") -> None:
    if not api.repo_exists(repo_id, repo_type="dataset"):
        api.create_repo(repo_id, repo_type="dataset")
    api.create_commit(
        repo_id, [CommitOperationAdd(p, c) for p, c in files.items()], commit_message=message, repo_type="dataset"
    )


def _parquet(table: pa.Table, record: Mapping | None = None, **metadata: str) -> bytes:
    """`table` as parquet bytes, with `record` as the build record push.py writes (key `openeds`) and `metadata`."""
    extra = {**metadata, **({"openeds": json.dumps(record, sort_keys=True)} if record is not None else {})}
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), buffer)
    return buffer.getvalue()


def test_a_footer_is_read_with_ranged_gets_of_the_file_s_end_only(hub, api, repo_id):
    # A footer longer than the first ranged read (64 KiB) takes a second one; the data itself is never read.
    content = _parquet(pa.table({"x": list(range(50_000))}), {"rows": 50_000}, padding="p" * 100_000)
    _commit_files(api, repo_id, {"data/train-00000-of-00001.parquet": content})
    remote = inspect_remote(api, repo_id, token=WRITE)
    assert list(remote.footers) == ["data/train-00000-of-00001.parquet"]  # read once already, to tell v1 from v2
    remote.footers.clear()
    hub.reset_faults_and_log()
    footer = read_footer(
        api,
        repo_id,
        remote.head,
        "data/train-00000-of-00001.parquet",
        token=WRITE,
        retry=FAST_RETRY,
        cache=remote.footers,
    )
    assert footer.num_rows == 50_000 and source_of(footer) == {"rows": 50_000}
    footer_size = int.from_bytes(content[-8:-4], "little") + 8
    assert len(content) > footer_size + 100_000  # the data is large enough that reading it would show
    reads = [r.range for r in hub.requests]
    assert reads == ["bytes=-65536", f"bytes=-{footer_size}"], reads
    read_footers(
        api,
        repo_id,
        remote.head,
        ["data/train-00000-of-00001.parquet"],
        token=WRITE,
        retry=FAST_RETRY,
        cache=remote.footers,
    )
    assert len(hub.requests) == 2  # read once: the cache answers


def test_a_stalled_footer_read_ends_within_the_retry_budget(hub, api, repo_id):
    _commit_files(api, repo_id, {"data/train-00000-of-00001.parquet": _parquet(pa.table({"x": [1, 2]}))})
    remote = inspect_remote(api, repo_id, token=WRITE)
    hub.fail("GET", r"/resolve/.*\.parquet", stall_after=4, times=1000)
    policy = RetryPolicy(first_delay=0.1, max_delay=0.2, total=1.0, timeout=0.5)
    use_hub_timeouts(policy.timeout)
    started = time.monotonic()
    try:
        with pytest.raises(PublishError) as error:
            read_footer(api, repo_id, remote.head, "data/train-00000-of-00001.parquet", token=WRITE, retry=policy)
    finally:
        use_hub_timeouts(RetryPolicy().timeout)
    elapsed = time.monotonic() - started
    assert elapsed < policy.total + policy.timeout + 1.5, elapsed  # HfFileSystem's own 6 tries took ~30 s
    message = str(error.value)
    assert message.startswith(f"could not read the parquet footer of {repo_id}/data/train-00000-of-00001.parquet: ")
    assert "got no data for 0.5 s (read timeout" in message and "the retry budget is 1 s" in message
    assert len([r for r in hub.requests if "/resolve/" in r.path]) >= 2  # retried by the project's loop


@pytest.mark.parametrize(
    ("content", "seen"),
    [(b"", "Parquet file size is 0 bytes"), (b"x" * 70_000 + b"\xff\xff\xff\x7fPAR1", "smaller than the size")],
    ids=["empty", "footer-longer-than-the-file"],
)
def test_a_remote_file_that_only_looks_like_parquet_is_one_line(hub, api, repo_id, content, seen):
    _commit_files(api, repo_id, {"README.md": b"x"})
    hub.write_files(repo_id, {"data/train-00000-of-00001.parquet": content})
    with pytest.raises(PublishError) as error:  # its footer tells v1 from v2 (the repo's card has no features)
        inspect_remote(api, repo_id, token=WRITE)
    assert str(error.value).startswith(f"the remote file {repo_id}/data/train-00000-of-00001.parquet (at ")
    assert seen in str(error.value) and "\n" not in str(error.value)


# --- the remote splits a run keeps, checked against the raw data ------------------------------------------------


def _frames(folder: Path, count: int) -> list[raw.Pair]:
    """`count` frames whose files are only hashed here, never decoded."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(count):
        image, label = folder / f"{i:06d}.png", folder / f"{i:06d}.npy"
        image.write_bytes(b"image %d" % i)
        label.write_bytes(b"label %d" % i)
        pairs.append(raw.Pair(f"{i:06d}", image, label))
    return pairs


def _recorded_shards(
    config: str, split: str, pairs: list[raw.Pair], per_shard: int, edit: Callable[[dict], dict] = lambda r: r
) -> dict[str, bytes]:
    """The shards push.py would write for `pairs` (their build records as materialize makes them, `edit`-ed)."""
    digests = hash_inputs(pairs, {})
    tasks = plan_shards(pairs, config, split, per_shard * schema.raw_row_bytes(config))
    return {
        task.relpath: _parquet(
            pa.table({"filename": [p.stem for p in task.pairs], "preprocessed": [True] * len(task.pairs)}),
            edit(task.source(digests)),
        )
        for task in tasks
    }


def _rebuild(config: str, splits: Sequence[str] | None) -> str:
    return f"python push.py --config {config}" + (f" --splits {' '.join(splits)}" if splits else "")


def _check(
    api: HfApi,
    repo_id: str,
    rebuilt: Mapping[str, Sequence[str]],
    pairs: Mapping[str, list[raw.Pair]],
    raw_splits: Sequence[str] = ("train", "validation", "test"),
) -> list[str]:
    remote = connect(api, repo_id, token=WRITE, retry=FAST_RETRY)
    return check_kept(
        api,
        repo_id,
        remote,
        rebuilt=rebuilt,
        raw_splits=raw_splits,
        pairs=pairs,
        digests={},
        rebuild=_rebuild,
        token=WRITE,
        retry=FAST_RETRY,
    )


def test_kept_splits_built_from_the_raw_data_as_it_is_pass(hub, api, repo_id, tmp_path):
    train = _frames(tmp_path / "train", 5)
    _commit_files(api, repo_id, _recorded_shards("pupil", "train", train, per_shard=2))  # 3 shards: 2, 2, 1
    assert _check(api, repo_id, {"pupil": ["test"]}, {"train": train}) == []


@pytest.mark.parametrize("missing", [0, 2], ids=["first", "last"])
def test_a_kept_split_missing_a_shard_is_checked_by_the_shards_it_holds(hub, api, repo_id, tmp_path, missing):
    train = _frames(tmp_path / "train", 5)
    shards = _recorded_shards("pupil", "train", train, per_shard=2)
    del shards[f"data/train-0000{missing}-of-00003.parquet"]
    _commit_files(api, repo_id, shards)
    assert _check(api, repo_id, {"pupil": ["test"]}, {"train": train}) == []
    (tmp_path / "train" / "000004.png").write_bytes(b"fixed")  # in the last shard
    if missing == 2:
        assert _check(api, repo_id, {"pupil": ["test"]}, {"train": train}) == []  # that shard is not on the Hub
    else:
        with pytest.raises(PublishError, match="pupil/train: it was built from image or label files whose contents"):
            _check(api, repo_id, {"pupil": ["test"]}, {"train": train})


def test_stale_kept_splits_are_refused_in_one_line_naming_them_and_one_command(hub, api, repo_id, tmp_path):
    train, test = _frames(tmp_path / "train", 3), _frames(tmp_path / "test", 2)
    _commit_files(
        api,
        repo_id,
        {
            **_recorded_shards("pupil", "train", train, per_shard=4),
            **_recorded_shards("full", "test", test, per_shard=4, edit=lambda r: {**r, "opencv": "3.0.0"}),
            **_recorded_shards("full", "validation", test, per_shard=4),
        },
    )
    (tmp_path / "train" / "000001.npy").write_bytes(b"a corrected label")
    before = _state(api, repo_id)
    with pytest.raises(PublishError) as error:  # full/validation is current: not named
        _check(api, repo_id, {"pupil": ["validation"]}, {"train": train, "test": test, "validation": test})
    message = str(error.value)
    assert message.startswith(
        f"{repo_id} holds 2 split(s) that this run keeps but that were not built from the raw "
        "data as it is now (pupil/train: it was built from image or label files whose contents "
        "have changed since; full/test: it was built by other versions (opencv 3.0.0 -> "
    )
    assert "\n" not in message and "full/validation" not in message
    assert message.endswith("in one run: python push.py --config all")  # both configs, every split: no --splits
    assert _state(api, repo_id) == before


def test_kept_splits_that_cannot_be_checked_are_kept_and_named(hub, api, repo_id, tmp_path):
    train = _frames(tmp_path / "train", 2)
    _commit_files(
        api,
        repo_id,
        {
            "data/train-00000-of-00001.parquet": _parquet(pa.table(rows("train", 2))),  # no record
            **_recorded_shards("full", "test", train, per_shard=4),
        },
    )
    notes = _check(api, repo_id, {"pupil": ["validation"]}, {}, raw_splits=["validation"])
    assert notes == [
        f"{repo_id}: pupil/train is kept as the Hub holds it, unchecked: 1 of its 1 shard(s) carry no build record "
        "(published by a version of this tool before the records, or by another tool), so whether it was built from "
        "the raw data as it is now cannot be told, and the card lists it. If its images or labels changed since, "
        "rebuild it with: python push.py --config pupil --splits train",
        f"{repo_id}: full/test is kept as the Hub holds it, unchecked: the raw data of this run has no test split to "
        "compare it with, and the card lists it. To check or rebuild it, run from raw data that holds test: "
        "python push.py --config full --splits test",
    ]


def test_shards_of_two_sets_of_one_split_are_stale(hub, api, repo_id, tmp_path):
    train = _frames(tmp_path / "train", 4)
    _commit_files(
        api,
        repo_id,
        {
            **_recorded_shards("pupil", "train", train, per_shard=4),
            **_recorded_shards("pupil", "train", train, per_shard=2),
        },
    )
    with pytest.raises(
        PublishError,
        match=r"pupil/train: its shards are of more than one set \(-of-00001 and "
        r"-of-00002\).*--config pupil --splits train test$",
    ):
        _check(api, repo_id, {"pupil": ["test"]}, {"train": train})


def test_a_kept_footer_is_read_once_for_the_check_and_the_card(hub, api, repo_id, tmp_path):
    train = _frames(tmp_path / "train", 3)
    _commit_files(api, repo_id, _recorded_shards("pupil", "train", train, per_shard=2))
    hub.reset_faults_and_log()
    remote = connect(api, repo_id, token=WRITE, retry=FAST_RETRY)  # reads the first footer: v1 or v2?
    check_kept(
        api,
        repo_id,
        remote,
        rebuilt={"pupil": ["test"]},
        raw_splits=["train"],
        pairs={"train": train},
        digests={},
        rebuild=_rebuild,
        token=WRITE,
        retry=FAST_RETRY,
    )
    sizes = kept_sizes(api, repo_id, remote, rebuilt={"pupil": ["test"]}, token=WRITE, retry=FAST_RETRY)
    assert sizes["pupil"]["train"].rows == 3  # no card: the rows come from the footers
    assert sorted(r.path.rsplit("/", 1)[1] for r in hub.requests if "/resolve/" in r.path) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]  # each once, for all three


# --- access and tags, before anything is built ------------------------------------------------------------------


def test_a_gated_repo_the_user_may_read_but_not_write_is_said_at_connect(hub, api, tmp_path):
    repo_id = f"alice/gated-{uuid.uuid4().hex[:8]}"
    publish_train(tmp_path, repo_id, api)
    hub.gate(repo_id, granted={"bob"})
    with pytest.raises(PublishError) as error:
        connect(HfApi(token=BOB), repo_id, token=BOB)
    message = str(error.value)
    assert message.startswith(
        f"user 'bob' may read the gated dataset {repo_id} (access was granted) but not write to "
        f"it (403 from {api.endpoint}: You don't have the rights to write to the namespace"
    )
    assert message.endswith(f"or publish to bob/{repo_id.split('/')[1]}")


def test_a_whoami_without_organizations_leaves_the_namespace_to_the_hub(hub, api):
    body = json.dumps({"type": "user", "name": "alice", "auth": {"accessToken": {"role": "write"}}}).encode()
    hub.fail("GET", "/api/whoami-v2", status=200, body=body, content_type="application/json")
    remote = connect(api, "someone/new-repo", token=WRITE, retry=FAST_RETRY)  # not refused: the Hub will say
    assert not remote.exists


def test_a_tag_the_repo_has_on_another_commit_is_refused(hub, api, repo_id, tmp_path):
    publish_train(tmp_path / "a", repo_id, api)
    remote = inspect_remote(api, repo_id)
    check_tag_free(repo_id, remote, "v2")  # it names the head: a re-run's
    check_tag_free(repo_id, remote, "v3")
    hub.write_files(repo_id, {"NOTES.md": b"notes"})
    moved = inspect_remote(api, repo_id)
    with pytest.raises(
        PublishError,
        match=rf"tag 'v2' already exists on {repo_id} and names commit "
        rf"{remote.head[:12]}, not the head {moved.head[:12]}; .*\(v2\.1\)$",
    ):
        check_tag_free(repo_id, moved, "v2")
    with pytest.raises(PublishError, match="tag 'v2' already exists"):  # publish says so too, before uploading
        publish(
            build(tmp_path / "b", {"data": {"train": 1}}),
            repo_id,
            splits_by_config={"pupil": ["train"]},
            api=api,
            tag="v2",
        )


def test_a_tag_naming_the_head_is_refused_when_the_run_would_commit(hub, api, repo_id, tmp_path):
    train = _frames(tmp_path / "train", 2)
    _commit_files(api, repo_id, _recorded_shards("pupil", "train", train, per_shard=4))
    api.create_tag(repo_id, tag="v2", repo_type="dataset")
    remote = connect(api, repo_id, token=WRITE, retry=FAST_RETRY)

    def check(rebuilt: Mapping[str, Sequence[str]]) -> None:
        check_tag_at_head(
            api,
            repo_id,
            remote,
            "v2",
            rebuilt=rebuilt,
            pairs={"train": train, "test": train},
            digests={},
            token=WRITE,
            retry=FAST_RETRY,
        )

    check({"pupil": ["train"]})  # the Hub holds it, from these inputs: the run can only confirm it
    with pytest.raises(
        PublishError,
        match=r"tag 'v2' already names the head of .* \(pupil/test is not on the Hub "
        r"yet\); expected a new tag .*\(v2\.1\)$",
    ):
        check({"pupil": ["train", "test"]})
    (tmp_path / "train" / "000000.npy").write_bytes(b"fixed")
    with pytest.raises(PublishError, match="pupil/train on the Hub: it was built from image or label files whose"):
        check({"pupil": ["train"]})


def test_names_in_messages_about_the_local_folder_stay_one_line(tmp_path):
    folder = build(tmp_path / "out\nput", {"data": {"train": 1}})
    (folder / "data" / "x\ny.txt").write_text("x")
    with pytest.raises(PublishError) as error:
        collect_local_files(folder, {"pupil": ["train"]})
    assert "\n" not in str(error.value) and "x\\ny.txt" in str(error.value) and "out\\nput" in str(error.value)


# --- the bytes published are those written, the commit is what was planned, the listing is whole -------------


def _flip_a_bit(path: Path) -> None:
    """One bit of `path` flipped in its middle, its modification time given back: only its bytes tell."""
    times = path.stat()
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


@pytest.mark.parametrize("held", [False, True], ids=["uploaded", "already-on-the-hub"])
def test_a_shard_changed_since_it_was_written_is_never_published(hub, api, repo_id, tmp_path, held):
    """Checked by the hash the upload computes (here over LFS: the oid), or, when the Hub holds the shard already
    and nothing is uploaded, by a read: one line naming the shard, no commit, and its record removed (push.py then
    rebuilds it)."""
    splits = {"pupil": ["train", "test"]}
    if held:
        publish(build(tmp_path / "a", {"data": {"train": 1, "test": 1}}), repo_id, splits_by_config=splits, api=api)
    else:
        api.create_repo(repo_id, repo_type="dataset")
    before = _state(api, repo_id)
    folder = build(tmp_path / "b", {"data": {"train": 1, "test": 1}})
    shard, other = "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"
    _flip_a_bit(folder / shard)
    hub.reset_faults_and_log()
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config=splits, api=api)
    message = str(error.value)
    by = "a read hashed" if held else "the upload hashed"
    assert message.startswith(f"1 shard(s) of {folder} are not the bytes written ({shard}: {by} sha256 "), message
    assert "nothing was published;" in message and message.endswith("running the same command again rebuilds them")
    assert _state(api, repo_id) == before and publication_commits(hub, repo_id) == 0
    assert records.load(folder, shard) is None and records.load(folder, other) is not None


@pytest.mark.parametrize(
    ("rules", "ignored"),
    [
        (
            "*.parquet\n",
            [
                "data/test-00000-of-00001.parquet",
                "data/train-00000-of-00001.parquet",
                "full/train-00000-of-00001.parquet",
            ],
        ),
        ("# one config's folder\nfull/\n", ["full/train-00000-of-00001.parquet"]),
        ("images/\n", ["images/preview-full.png", "images/preview.png"]),
        ("/data/test-*\n!data/test-notes.txt\n", ["data/test-00000-of-00001.parquet"]),
        ("notes/\n*.txt\n/full\n!full/\n", []),
    ],
    ids=["parquet", "one-config", "images", "one-split", "nothing-of-ours"],
)
def test_a_gitignore_that_would_drop_files_from_the_commit_is_refused(hub, api, repo_id, tmp_path, rules, ignored):
    """huggingface_hub leaves the files the repo's .gitignore ignores (the Hub's `shouldIgnore`) out of the commit,
    silently: the card would name shards the repo lacks. Refused before the commit, naming them."""
    api.create_repo(repo_id, repo_type="dataset")
    hub.write_files(repo_id, {".gitignore": rules.encode()})
    before = _state(api, repo_id)
    folder = build(tmp_path, {"data": {"train": 1, "test": 1}, "full": {"train": 1}})
    splits = {"pupil": ["train", "test"], "full": ["train"]}
    if not ignored:
        result = publish(folder, repo_id, splits_by_config=splits, api=api)
        assert set(result.additions) <= set(inspect_remote(api, repo_id).files)
        return
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config=splits, api=api)
    assert str(error.value).startswith(
        f"the .gitignore of {repo_id} ignores {len(ignored)} file(s) this publication adds "
        f"({', '.join(map(repr, ignored))}); the commit would leave them out while the card names them;"
    )
    assert _state(api, repo_id) == before


def test_a_commit_that_differs_from_what_was_sent_is_said(hub, api, repo_id, tmp_path):
    folder = build(tmp_path / "a", {"data": {"train": 1}})
    result = publish(folder, repo_id, splits_by_config={"pupil": ["train"]}, api=api)
    sent = [CommitOperationAdd(p, folder / p) for p in ("README.md", "data/train-00000-of-00001.parquet")]
    check_commit(api, repo_id, result.commit, sent, [], token=WRITE)  # what the commit holds: no complaint
    other = build(tmp_path / "b", {"data": {"train": 1, "test": 1}})
    card = other / "README.md"
    card.write_text((folder / "README.md").read_text().replace("(test)", "(TEST)"))  # the same size, other bytes
    not_sent = [CommitOperationAdd(p, other / p) for p in ("README.md", "data/test-00000-of-00001.parquet")]
    with pytest.raises(PublishError) as error:
        check_commit(api, repo_id, result.commit, not_sent, ["data/train-00000-of-00001.parquet"], token=WRITE)
    assert str(error.value).startswith(
        f"the commit {result.commit[:12]} on {repo_id} differs from what it was sent (README.md has other content "
        "than the one sent; data/test-00000-of-00001.parquet is missing; data/train-00000-of-00001.parquet is still "
        "there); expected the Hub to commit every file as sent; the commit "
    )


def test_the_listing_is_whole_however_many_pages_and_however_cut_the_repo_info_is(hub, api, repo_id, monkeypatch):
    """The test Hub pages its tree listing by 4 here and cuts the repo info's `siblings` at 5 files, as a large
    repo's; the kept split sits on the last page, past the cut: it is listed and sized all the same."""
    monkeypatch.setattr(hub, "tree_page_size", 4)
    monkeypatch.setattr(hub, "siblings_limit", 5)
    files = {f"a/notes-{i:02d}.txt": b"mine" for i in range(10)}
    files["data/test-00000-of-00001.parquet"] = _parquet(pa.table(rows("test", 2)))
    files["full/train-00000-of-00001.parquet"] = _parquet(pa.table(rows("train", 3)))
    _commit_files(api, repo_id, files)
    cut = {s.rfilename for s in api.dataset_info(repo_id, files_metadata=True).siblings}
    assert "full/train-00000-of-00001.parquet" not in cut and len(cut) == 5
    hub.reset_faults_and_log()
    remote = inspect_remote(api, repo_id, token=WRITE)
    assert set(remote.files) == {".gitattributes", *files}
    pages = [r for r in hub.requests if r.path.startswith(f"/api/datasets/{repo_id}/tree/")]
    assert len(pages) == 4  # 13 files and 3 folders, 4 a page
    sizes = kept_sizes(api, repo_id, remote, rebuilt={"pupil": ["test"]}, token=WRITE)
    assert sizes == {"full": {"train": SplitSize(3, remote.files["full/train-00000-of-00001.parquet"].size)}}


def test_a_shard_without_the_record_of_its_bytes_is_refused_before_any_request(hub, api, repo_id, tmp_path):
    """No record (a build killed between the shard's rename and its record, a folder of an earlier version) or
    one of another size: its bytes cannot be checked, so it is not published; push.py rebuilds such a shard."""
    folder = build(tmp_path / "out", {"data": {"train": 2, "test": 1}})
    records.record_path(folder, "data/train-00001-of-00002.parquet").unlink()
    records.record_path(folder, "data/test-00000-of-00001.parquet").write_text('{"path": "data/test-00000-of-0')
    records.store(folder, "data/train-00000-of-00002.parquet", records.Record(1, "0" * 64))
    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config={"pupil": ["train", "test"]}, api=api)
    assert str(error.value).startswith(
        f"3 shard(s) of {folder} have no record of the bytes written, or another size than recorded "
        "('data/test-00000-of-00001.parquet', 'data/train-00000-of-00002.parquet', "
        "'data/train-00001-of-00002.parquet'); expected each shard with the record push.py writes beside it in "
        ".openeds/records, so that its bytes can be checked; nothing was published; run push.py"
    )
    assert hub.requests == []
