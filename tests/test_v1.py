"""v1 data recognised by its content wherever it sits (`openeds.hub.v1`), and the checks of its conversion
(`openeds.hub.conversion`), against the test Hub and `datasets` itself.

The end-to-end conversion of the real v1 layout by push.py is `tests/test_push.py`'s; the conversion by
`publish` of each layout is `tests/test_hub.py`'s; push.py's refusals are in the fault catalogue.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi

from openeds import schema
from openeds.hub import (
    PublishError,
    check_v1_head,
    inspect_remote,
    is_v1_schema,
    publish,
    refuse_mixing,
    resolve_splits,
    split_notes,
)
from tests.test_hub import WRITE, build, publish_train, push_v1, remote_blobs, rows
from tests.v1data import tiny_v1_table

# Which split a file is in is decided by the installed datasets (its data-files patterns), and checked
# here against what its load_dataset reads.
pytestmark = pytest.mark.datasets_line
#: the tests here whose outcome our code decides (schemas, requests, refusals), not datasets' patterns
OURS = pytest.mark.datasets_independent("the schema rule, the requests and the refusals are this tool's")


@pytest.fixture
def hub(hub):
    hub.add_token(WRITE, "alice", write={"alice"})
    return hub


@pytest.fixture
def api() -> HfApi:
    return HfApi(token=WRITE)


@pytest.fixture
def repo_id() -> str:
    return f"alice/v1-{uuid.uuid4().hex[:8]}"


def _v1(**changes: pa.DataType | None) -> pa.Schema:
    """v1's schema (`tiny_v1_table`), a column's type changed, or dropped (None)."""
    kinds = {f.name: changes.get(f.name, f.type) for f in tiny_v1_table("train").schema}
    return pa.schema([(name, kind) for name, kind in kinds.items() if kind is not None])


V2_SCHEMA = schema.features_for("pupil").arrow_schema


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        pytest.param(_v1(), True, id="v1"),
        pytest.param(_v1(image=pa.list_(pa.int64()), label=pa.list_(pa.int64())), True, id="datasets-2-int64-lists"),
        pytest.param(_v1(dist_map=pa.large_list(pa.float64()), filename=None), True, id="large-lists-no-filename"),
        pytest.param(_v1().append(pa.field("preprocessed", pa.bool_())), False, id="v1-arrays-with-preprocessed"),
        pytest.param(V2_SCHEMA.remove(V2_SCHEMA.get_field_index("preprocessed")), False, id="v2-typed-arrays"),
        pytest.param(_v1(dist_map=None), False, id="no-dist_map"),
        pytest.param(_v1(image=pa.list_(pa.string())), False, id="lists-of-strings"),
        pytest.param(_v1(label=pa.uint8()), False, id="a-scalar-label"),
        pytest.param(pa.schema({"filename": pa.string(), "pixel_sum": pa.int64()}), False, id="another-table"),
    ],
)
@OURS
def test_v1_is_told_by_its_schema(columns, expected):
    assert is_v1_schema(columns) is expected


# Trees of v1 files (each a `datasets` would read as data), beside files that are not data; the issue's
# shapes and others: the split is the one `load_dataset` gives each file, None where it reads none.
TREES = {
    "script": [
        "data/train/shard_00000.parquet",
        "data/train/shard_00001.parquet",
        "data/validation/shard_00000.parquet",
    ],
    "push_to_hub": [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "data/validation-00000-of-00001-ab12.parquet",
    ],
    "no-split-names": ["data/shard_00000.parquet", "data/shard_00001.parquet"],
    "datasets-cache": [
        "cache/openeds/default/0.0.0/3f2a/openeds-precomputed-train.arrow",
        "cache/openeds/default/0.0.0/3f2a/openeds-precomputed-validation.arrow",
    ],
    "save_to_disk": ["train/data-00000-of-00001.arrow", "validation/data-00000-of-00001.arrow"],
    "keywords": ["v1/training/part-0.parquet", "v1/dev/part-0.parquet", "v1/eval/part-0.parquet"],
    "a-folder-no-split-reads": ["data/train/shard_00000.parquet", "old/shard_00000.parquet"],
}
NOT_DATA = [".gitattributes", "dataset_dict.json", "data/dataset_info.json"]


def _write(folder: Path, path: str, table: pa.Table) -> None:
    target = folder / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.endswith(".arrow"):
        with pa.ipc.new_stream(target, table.schema) as writer:  # datasets' cache files are Arrow streams
            writer.write_table(table)
    else:
        pq.write_table(table, target)


def _loaded_by_datasets(folder: Path, cache: Path) -> dict[str, str | None]:
    """`{path: split}` as `load_dataset(folder)` reads the files (each holds one row naming its path)."""
    loaded = datasets.load_dataset(str(folder), cache_dir=str(cache))
    return {name: split for split, rows in loaded.items() for name in rows["filename"]}


@pytest.mark.parametrize("tree", TREES, ids=list(TREES))
def test_the_split_of_a_v1_file_is_the_one_load_dataset_reads_it_as(tree, tmp_path):
    paths = TREES[tree]
    folder = tmp_path / "repo"
    for path in paths:
        _write(folder, path, pa.table({"filename": [path]}))
    for path in NOT_DATA:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text("{}")
    expected = dict.fromkeys(paths) | _loaded_by_datasets(folder, tmp_path / "cache")
    assert resolve_splits([*paths, *NOT_DATA], paths) == expected
    assert any(split is not None for split in expected.values())


def test_the_split_follows_the_card_s_configs_when_it_has_them(tmp_path):
    folder = tmp_path / "repo"
    paths = ["old/a.parquet", "old/b.parquet", "train/c.parquet"]  # a folder named train, which the card overrides
    for path in paths:
        _write(folder, path, pa.table({"filename": [path]}))
    data_files = [{"split": "train", "path": "old/a.parquet"}, {"split": "validation", "path": "old/b*.parquet"}]
    card = f"---\n{yaml.safe_dump({'configs': [{'config_name': 'default', 'data_files': data_files}]})}---\n"
    (folder / "README.md").write_text(card)
    expected = dict.fromkeys(paths) | _loaded_by_datasets(folder, tmp_path / "cache")
    assert (
        resolve_splits([*paths, "README.md"], paths, card)
        == expected
        == {
            "old/a.parquet": "train",
            "old/b.parquet": "validation",
            "train/c.parquet": None,
        }
    )


def test_a_tree_datasets_cannot_resolve_leaves_every_file_in_no_split(tmp_path):
    path = "data/my split-00000-of-00001.parquet"  # a split name datasets refuses
    _write(tmp_path / "repo", path, pa.table({"filename": [path]}))
    with pytest.raises(ValueError, match="Split name should match"):
        datasets.load_dataset(str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache"))
    assert resolve_splits([path], [path]) == {path: None}


def _table_bytes(table: pa.Table, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "parquet":
        pq.write_table(table, buffer)
    else:
        with (pa.ipc.new_stream if kind == "stream" else pa.ipc.new_file)(buffer, table.schema) as writer:
            writer.write_table(table)
    return buffer.getvalue()


def test_v1_files_are_found_by_their_content_wherever_they_sit(hub, api, repo_id):
    v1 = tiny_v1_table("x")
    with_v2_column = v1.append_column("preprocessed", pa.array([True] * v1.num_rows))
    files = {
        # v1, under names nothing else tells
        "data/train/shard_00000.parquet": _table_bytes(v1, "parquet"),
        "cache/openeds/default/0.0.0/3f2a/openeds-precomputed-validation.arrow": _table_bytes(v1, "stream"),
        "backup/old-test.arrow": _table_bytes(v1, "file"),  # an Arrow IPC file, not a stream
        "x/y/z.PARQUET": _table_bytes(v1, "parquet"),
        # not v1: v2's column, another table, a file that is not of its format (no error: not this tool's)
        "data/test-00000-of-00001.parquet": _table_bytes(pa.table(rows("test", 2)), "parquet"),
        "stats/v1-and-more.parquet": _table_bytes(with_v2_column, "parquet"),
        "misc/notes.parquet": b"not parquet at all",
        "misc/table.arrow": b"not arrow either",
        "misc/empty.arrow": b"",
        "README.md": b"# no configs here\n",
    }
    api.create_repo(repo_id, repo_type="dataset")
    api.create_commit(
        repo_id, [CommitOperationAdd(p, c) for p, c in files.items()], commit_message="a mix", repo_type="dataset"
    )
    hub.reset_faults_and_log()
    remote = inspect_remote(api, repo_id, token=WRITE)
    # A folder named after a split (data/train/) makes datasets read the splits from folder names only: the
    # other v1 files are in no split that load_dataset reads (they go from main all the same).
    assert dict(remote.v1_files) == {
        "backup/old-test.arrow": None,
        "cache/openeds/default/0.0.0/3f2a/openeds-precomputed-validation.arrow": None,
        "data/train/shard_00000.parquet": "train",
        "x/y/z.PARQUET": None,
    }
    reads = sorted(r.path.split("/", 6)[6] for r in hub.requests if "/resolve/" in r.path and r.path[-1] != "d")
    data = sorted(p for p in files if p.lower().endswith((".parquet", ".arrow")))
    assert reads == data  # every data file read once (a short file in one GET), the card apart
    assert remote.footers.keys() == {p for p in data if p.lower().endswith(".parquet") and not p.startswith("misc/")}


@OURS
def test_a_v2_repo_this_tool_published_costs_no_schema_read(hub, api, repo_id, tmp_path):
    publish_train(tmp_path, repo_id, api)  # its card is signed: its shards are this tool's v2
    hub.reset_faults_and_log()
    remote = inspect_remote(api, repo_id, token=WRITE)
    assert remote.v1_files == {} and not [r for r in hub.requests if r.path.endswith(".parquet")]


@OURS
def test_v1_left_beside_v2_is_converted_once_its_v1_state_is_tagged(hub, api, repo_id, tmp_path):
    """What the version of this tool before content detection left on the real repo: it published v2 beside the
    script's v1 shards (not under push_to_hub's names, so not seen as v1), tagged `v2` only."""
    v1_files = push_v1(api, repo_id)
    v1_head = api.dataset_info(repo_id).sha
    first = build(tmp_path / "first", {"data": {"train": 1, "validation": 1}})
    api.upload_folder(repo_id=repo_id, folder_path=first, repo_type="dataset", commit_message="Publish v2")
    api.create_tag(repo_id, tag="v2", repo_type="dataset")
    v2_head = api.dataset_info(repo_id).sha
    folder = build(tmp_path / "again", {"data": {"train": 1, "validation": 1, "test": 1}})
    splits = {"pupil": ["train", "validation", "test"]}

    with pytest.raises(PublishError) as error:
        publish(folder, repo_id, splits_by_config=splits, api=api)
    message = str(error.value)
    assert message.startswith(f"{repo_id} holds v1 data (4 files: 'data/train/shard_00000.parquet', ")
    assert "beside v2 files this tool wrote ('data/train-00000-of-00001.parquet', " in message
    assert f"if {v2_head[:12]}, tagged 'v2', was the first, it is its parent" in message and "\n" not in message
    assert api.dataset_info(repo_id).sha == v2_head

    api.create_tag(repo_id, tag="v1", revision=v1_head, repo_type="dataset")  # as the message says
    result = publish(folder, repo_id, splits_by_config=splits, api=api)
    assert result.tags == ("v2.1",) and sorted(result.v1_removed) == sorted(v1_files)
    assert not set(v1_files) & set(remote_blobs(api, repo_id))
    assert set(v1_files) <= set(remote_blobs(api, repo_id, "v1"))


def test_a_v1_split_the_raw_data_lacks_is_not_refused_but_named(hub, api, repo_id, tmp_path):
    push_v1(api, repo_id)  # train and validation
    remote = inspect_remote(api, repo_id, token=WRITE)
    converted = {"pupil": ["train", "test"]}
    with pytest.raises(PublishError, match=r"so \['validation'\] would be gone from main"):
        refuse_mixing(repo_id, remote, converted)  # the raw data unknown: validation might be rebuilt
    with pytest.raises(PublishError, match=r"so \['validation'\] would be gone from main"):
        refuse_mixing(repo_id, remote, converted, raw_splits=["train", "validation", "test"])
    refuse_mixing(repo_id, remote, converted, raw_splits=["train", "test"])
    check_v1_head(repo_id, remote)  # v1 alone at its head: tagged there
    notes = split_notes(repo_id, remote, built=["train", "test"], raw_splits=["train", "test"])
    assert [note.split(":")[1].strip() for note in notes] == [
        "v1 split 'validation' is not rebuilt",
        "v1 has no test split",
    ]
    assert 'load_dataset("' + repo_id + '", revision="v1", split="validation")' in notes[0]

    result = publish(
        build(tmp_path, {"data": {"train": 1, "test": 1}}),
        repo_id,
        splits_by_config=converted,
        api=api,
        raw_splits=["train", "test"],
    )
    assert result.tags == ("v1", "v2") and len(result.v1_removed) == 4
    assert sorted(remote_blobs(api, repo_id)) == [
        ".gitattributes",
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "images/preview.png",
    ]
    assert datasets.load_dataset(repo_id, revision="v1", split="validation").num_rows == 2
