"""Streaming: IrisLoader and IrisIterableDataset over load_dataset(..., streaming=True), against the map-style feeds."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, HfApi

torch = pytest.importorskip("torch")

from openeds import schema  # noqa: E402
from preprocessing.augment import Compose, GaussianBlur, HorizontalFlip, LineAugment  # noqa: E402
from preprocessing.training import IrisDataset, IrisIterableDataset, IrisLoader  # noqa: E402
from preprocessing.training.arrow_rows import DatasetFormatError  # noqa: E402
from preprocessing.training.shuffle import KeyedOrder, replay, shuffled, swap_buffer_order  # noqa: E402
from preprocessing.training.source import StreamResumeError, StreamRows  # noqa: E402
from push import push  # noqa: E402
from tests.ranks import run_ranks  # noqa: E402
from tests.test_loader import (  # noqa: E402
    FailOn,
    all_reduced_epoch,
    assert_batches_equal,
    assert_outcomes,
    by_filename,
    run_together,
)

pytestmark = pytest.mark.datasets_line

REPO = Path(__file__).resolve().parents[1]
#: TRAIN_AUGMENT's steps, each with p=0.5, so that every small epoch has some of each
AUGMENT = Compose((LineAugment(p=0.5), GaussianBlur(p=0.5), HorizontalFlip(p=0.5)))
TOKEN = "hf_streaming_test_write_token"


def write_parquet(table: pa.Table, path: Path, features: datasets.Features, **options: object) -> None:
    """``table`` as a parquet file with ``features`` in its schema (as ``Dataset.to_parquet`` writes them), in plain
    encoding with LZ4: a third of the CPU time of ``to_parquet``'s dictionary encoding of the float arrays, snappy
    (and, in datasets 5.x, content-defined chunks), to write and to read. The tests read rows, not encodings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata(features.arrow_schema.metadata)
    pq.write_table(table, path, use_dictionary=False, compression="lz4", **options)


def write_folder(root: Path, shards: dict[str, list[datasets.Dataset]], card: bool = True) -> str:
    """A local folder as load_dataset reads it: one parquet file per part, and a card with the row counts."""
    for split, parts in shards.items():
        for i, part in enumerate(parts):
            path = root / "data" / f"{split}-{i:05d}-of-{len(parts):05d}.parquet"
            write_parquet(part.with_format("arrow")[:], path, part.features)
    if card:
        splits = "".join(
            f"  - name: {split}\n    num_bytes: 0\n    num_examples: {sum(len(p) for p in parts)}\n"
            for split, parts in shards.items()
        )
        files = "".join(f"  - split: {split}\n    path: data/{split}-*\n" for split in shards)
        header = f"configs:\n- config_name: default\n  data_files:\n{files}dataset_info:\n  splits:\n{splits}"
        (root / "README.md").write_text(f"---\n{header}---\n")
    return str(root)


def parts(data: datasets.Dataset, *sizes: int) -> list[datasets.Dataset]:
    starts = np.cumsum((0, *sizes))
    return [data.select(range(a, b)) for a, b in itertools.pairwise(starts)]


def stream_of(folder: str, split: str = "train") -> datasets.IterableDataset:
    return datasets.load_dataset(folder, split=split, streaming=True)


def items_by_name(dataset: IrisDataset) -> dict[str, tuple]:
    return {item[2]: item for item in (dataset[i] for i in range(len(dataset)))}


def assert_item_equal(got: tuple, want: tuple, where: str) -> None:
    assert got[2] == want[2], f"{where}: filename"
    for k, name in zip((0, 1, 3, 4), ("image", "label", "spatial_weights", "dist_map"), strict=True):
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), f"{where} {got[2]}: {name}"


# --- against the local Hub ------------------------------------------------------------------


def test_streamed_splits_give_the_map_style_samples_against_the_hub(hub, sample_dir, tmp_path):
    hub.add_token(TOKEN, "streamer", write={"streamer"})
    repo_id = "streamer/openeds-streamed"
    push(data_dir=sample_dir, local_dir=tmp_path / "staging", repo_id=repo_id, config="all", splits=["train"],
         max_shard_size=3 * schema.raw_row_bytes("full"), api=HfApi(token=TOKEN))  # fmt: skip
    # The card's config names, whatever they are (the default config among them).
    configs = [c["config_name"] for c in DatasetCard.load(repo_id, repo_type="dataset").data.configs]
    assert len(configs) == 2
    for config in configs:
        mapped = datasets.load_dataset(repo_id, config, split="train", cache_dir=str(tmp_path / "cache"))
        stream = datasets.load_dataset(repo_id, config, split="train", streaming=True)
        assert stream.n_shards > 1, "several shards, so that reading crosses files"
        # unshuffled, augmented: the map-style epoch item for item, values bit-identical
        with (
            IrisLoader(stream, 3, shuffle=False, transform=AUGMENT, seed=5, num_threads=2) as streamed,
            IrisLoader(mapped, 3, shuffle=False, transform=AUGMENT, seed=5) as reference,
        ):
            assert (len(streamed), streamed.num_classes) == (len(reference), reference.num_classes)
            for epoch in range(2):
                assert_batches_equal(list(streamed), list(reference), f"{config}, epoch {epoch}")
        dataset = IrisDataset(mapped, transform=AUGMENT)
        items = list(IrisIterableDataset(stream, transform=AUGMENT, seed=5, shuffle=False))
        assert [item[2] for item in items] == mapped["filename"]
        for i, item in enumerate(items):
            assert_item_equal(item, dataset.item(i, np.random.default_rng([5, 0, i])), config)
        # shuffled: the same samples, compared as a set by filename
        with IrisLoader(stream, 3, shuffle=True, shuffle_buffer=3, seed=5) as shuffled:
            names, by_name = [], items_by_name(IrisDataset(mapped))
            for image, label, filenames, weights, dist in shuffled:
                for j, name in enumerate(filenames):
                    assert_item_equal((image[j], label[j], name, weights[j], dist[j]), by_name[name], config)
                names += filenames
        assert sorted(names) == sorted(mapped["filename"]) and names != mapped["filename"]
    # resumed mid-epoch from the Hub: the footers read through datasets' own remote open
    rows = StreamRows(stream)
    whole = [row.filename for row in rows.rows(1, order_seed=5, buffer=2)]
    if RESUMABLE:
        assert [row.filename for row in rows.rows(1, order_seed=5, buffer=2, start=5)] == whole[5:]
    else:
        with pytest.raises(StreamResumeError, match=rf"^datasets {re.escape(datasets.__version__)} reads a strea"):
            rows.rows(1, order_seed=5, buffer=2, start=5)


# --- local folders --------------------------------------------------------------------------


@pytest.mark.parametrize("config", schema.CONFIG_NAMES)
def test_v1_streams_get_gamma_and_clahe_in_the_threads(config, v1, tmp_path):
    data = v1[config]["train"]  # flat list columns, raw images, no 'preprocessed' column
    stream = stream_of(write_folder(tmp_path, {"train": parts(data, 5, 3)}))
    assert not isinstance(stream.features["dist_map"], datasets.Array3D)
    with (
        IrisLoader(stream, 3, shuffle=False, transform=AUGMENT, seed=1, num_threads=2) as streamed,
        IrisLoader(data, 3, shuffle=False, transform=AUGMENT, seed=1) as reference,
    ):
        assert (streamed.preprocessed, streamed.num_classes) == (False, schema.DIST_CHANNELS[config])
        assert_batches_equal(list(streamed), list(reference), f"v1 {config}")
    with pytest.raises(DatasetFormatError, match=r"preprocessed=True \(--preprocessed yes\), but the dataset has no"):
        IrisIterableDataset(stream, preprocessed=True)


def test_a_preprocessed_column_that_mixes_values_is_found_per_batch(v2, tmp_path):
    data = v2["pupil"]["test"]
    mixed = data.map(lambda row, i: {"preprocessed": i != 1}, with_indices=True, features=data.features)
    stream = stream_of(write_folder(tmp_path / "mixed", {"train": [data, mixed]}))
    loader = IrisLoader(stream, 2, shuffle=False)
    assert loader.preprocessed, "a 'preprocessed' column marks v2, without reading the stream"
    with pytest.raises(DatasetFormatError) as info:
        list(loader)
    first, last = data["filename"][0], mixed["filename"][-1]
    assert str(info.value).startswith(
        f"the streamed rows {first} to {last} (6 rows): 'preprocessed' column mixes True and False"
    )
    assert "\n" not in str(info.value)
    loader.close()
    raw = data.map(lambda row: {"preprocessed": False}, features=data.features)
    with pytest.raises(DatasetFormatError, match=r"\(3 rows\): 'preprocessed' is False, but a stream"):
        list(IrisIterableDataset(stream_of(write_folder(tmp_path / "raw", {"train": [raw]}))))


def test_shuffle_buffer_epochs_and_memory(v2, tmp_path):
    data = v2["full"]["train"]
    stream = stream_of(write_folder(tmp_path, {"train": parts(data, 3, 3, 2)}))
    loader = IrisLoader(stream, 3, transform=AUGMENT, seed=4, shuffle_buffer=4, num_threads=2)
    assert loader.shuffle and len(loader) == 3
    epochs = [[name for batch in loader for name in batch[2]] for _ in range(3)]
    for names in epochs:
        assert sorted(names) == sorted(data["filename"]), "every row once per epoch"
    assert len({tuple(names) for names in epochs}) == 3, "each epoch in another order"
    loader.set_epoch(1)
    replay = list(loader)
    again = IrisLoader(stream, 3, transform=AUGMENT, seed=4, shuffle_buffer=4, num_threads=1)
    again.set_epoch(1)
    assert_batches_equal(list(again), replay, "the same seed and epoch, 1 thread against 2")
    arena = loader.dataset.rows._arena
    assert 4 <= arena.allocated <= 4 + 16 + 2, f"{arena.allocated} row copies for a buffer of 4"
    assert loader._pool.peak <= 4, "the slots are reused as in map-style mode"
    for each in (loader, again):
        each.close()
    unshuffled = IrisLoader(stream, 3, split="validation")
    assert not unshuffled.shuffle and [n for b in unshuffled for n in b[2]] == data["filename"]
    unshuffled.close()


@pytest.mark.parametrize("buffer", [0, 4])
def test_a_shard_split_reads_other_shards_and_rows_each_epoch(buffer, v2, tmp_path):
    data = v2["pupil"]["train"]  # 8 rows in 4 shards; 2 parts of 4 rows each, whole shards each
    rows = StreamRows(stream_of(write_folder(tmp_path, {"train": parts(data, 3, 1, 3, 1)})))
    shard_order_per_epoch = int(datasets.__version__.split(".")[0]) >= 5  # datasets 3.6 keeps the file order
    seen, orders = set(), set()
    for epoch in range(6):
        shares = [
            [row.filename for row in rows.rows(epoch, part=p, parts=2, order_seed=7, buffer=buffer, limit=4)]
            for p in range(2)
        ]
        assert [len(share) for share in shares] == [4, 4] and not set(shares[0]) & set(shares[1]), epoch
        seen.update(*shares)
        orders.add(tuple(shares[0]))
    if buffer or shard_order_per_epoch:
        # A part whose shards hold 6 rows keeps 4: other rows each epoch, so none is left out for good.
        assert seen == set(data["filename"]), f"never read: {set(data['filename']) - seen}"
        assert len(orders) > 1, "each epoch in another order"


def test_a_modified_stream_is_refused(v2, tmp_path):
    stream = stream_of(write_folder(tmp_path, {"train": [v2["pupil"]["train"]]}))
    for modified, how in ((stream.take(4), "TakeExamplesIterable"), (stream.skip(2), "SkipExamplesIterable")):
        with pytest.raises(DatasetFormatError, match=rf"its rows come through {how}, e\.g\. from take, skip"):
            IrisLoader(modified, seed=0)
    with pytest.raises(TypeError, match=r"IterableDatasetDict, every split of a stream; expected one split"):
        IrisDataset(datasets.load_dataset(str(tmp_path), streaming=True))
    with pytest.raises(TypeError, match=r"expected one split of a stream"):
        IrisIterableDataset(datasets.load_dataset(str(tmp_path), streaming=True))


def test_iterable_dataset_in_a_dataloader_reads_disjoint_parts(v2, tmp_path):
    data = v2["pupil"]["train"]
    stream = stream_of(write_folder(tmp_path, {"train": parts(data, 3, 3, 2)}))  # 3 shards, 2 workers: row by row
    dataset = IrisIterableDataset(stream, split="validation")
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    items = list(loader)
    names = [item[2] for item in items]
    assert sorted(names) == sorted(data["filename"]) and len(set(names)) == len(names), "disjoint parts, all rows"
    by_name = items_by_name(IrisDataset(data))
    for item in items:
        assert_item_equal(item, by_name[item[2]], "worker item")
    assert len(dataset) == 8


def test_set_epoch_reaches_persistent_dataloader_workers(v2, tmp_path):
    data = v2["pupil"]["train"]
    stream = stream_of(write_folder(tmp_path, {"train": parts(data, 2, 2, 2, 2)}))  # 4 shards, 2 workers: whole shards

    def epoch_items(loader, dataset, epoch):
        dataset.set_epoch(epoch)
        return [(item[2], item[0]) for item in loader]

    persistent_set = IrisIterableDataset(stream, transform=AUGMENT, seed=3, shuffle_buffer=2)
    persistent = torch.utils.data.DataLoader(persistent_set, batch_size=None, num_workers=2, persistent_workers=True)
    kept = [epoch_items(persistent, persistent_set, epoch) for epoch in range(2)]
    for epoch in range(2):
        fresh_set = IrisIterableDataset(stream, transform=AUGMENT, seed=3, shuffle_buffer=2)
        fresh = epoch_items(torch.utils.data.DataLoader(fresh_set, batch_size=None, num_workers=2), fresh_set, epoch)
        assert [name for name, _ in kept[epoch]] == [name for name, _ in fresh], f"epoch {epoch}: order"
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(kept[epoch], fresh, strict=True)), (
            f"epoch {epoch}: draws"
        )
        assert sorted(name for name, _ in fresh) == sorted(data["filename"]), f"epoch {epoch}: every row once"
    assert [n for n, _ in kept[0]] != [n for n, _ in kept[1]], "the workers read epoch 1, not epoch 0 again"


def test_errors_reach_the_caller_and_threads_end(v2, tmp_path):
    data = v2["pupil"]["train"]
    folder = write_folder(tmp_path / "folder", {"train": parts(data, 4, 4)})
    stream = stream_of(folder)
    with pytest.raises(TypeError) as info:
        IrisDataset(stream)
    assert "IrisIterableDataset" in str(info.value) and "IrisLoader" in str(info.value)
    transform = FailOn(data.with_format("numpy", dtype=None)[5]["image"], data["filename"][5])
    loader = IrisLoader(stream, 2, shuffle=False, transform=transform, num_threads=2)
    with pytest.raises(ValueError) as failed:
        list(loader)
    assert failed.value is transform.raised[0], "the exception object itself"
    assert not loader._feed._reader._thread.is_alive(), "the stream's reader thread ended"
    for _batch in loader:  # a loop left mid-epoch
        break
    threads = [loader._feed._thread, loader._feed._reader._thread]
    loader.close()
    assert not [t.name for t in threads if t.is_alive()], "close() stops the feed and the stream"
    with pytest.raises(TypeError, match=r"rows\(\) lists the rows of a map-style epoch"):
        loader.rows(0)
    no_card = stream_of(write_folder(tmp_path / "no-card", {"train": [data]}, card=False))
    with pytest.raises(TypeError, match=r"the stream of split train has no row count: its dataset card gives none"):
        len(IrisLoader(no_card))
    assert len([n for b in IrisLoader(no_card, 3, shuffle=False) for n in b[2]]) == 8, "read to the end"
    with pytest.raises(DatasetFormatError, match=r"world_size=2 needs the split's row count, to stop every rank"):
        IrisLoader(no_card, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"shuffle_buffer=8 is for streamed splits"):
        IrisLoader(data, shuffle_buffer=8)
    with pytest.raises(ValueError, match=r"already split by node \(split_dataset_by_node\); pass the whole split"):
        StreamRows(datasets.distributed.split_dataset_by_node(stream, rank=0, world_size=2))


def test_threads_on_one_stream_loader_and_on_one_iterable_dataset(v2, tmp_path):
    # issue 14 §5 for streams: a newer loop or close() from another thread ends a loop with the
    # documented message, never another one, and the batches the loops hold stay intact and their own.
    data = v2["pupil"]["train"]
    items = by_filename(IrisDataset(data))
    stream = stream_of(write_folder(tmp_path, {"train": parts(data, 4, 4)}))
    loader = IrisLoader(stream, 2, seed=0, shuffle_buffer=2, num_threads=2)
    for repetition in range(3):  # the old code failed at the first (both loops ran to the end)
        for actions, hold_first in ((["loop", "loop"], True), (["loop", "loop"], False), (["loop", "close"], False)):
            where = f"repetition {repetition}, {' and '.join(actions)}"
            outcomes = assert_outcomes(run_together(loader, actions, hold_first), actions, items, where)
            if hold_first:
                assert sorted(outcomes) == ["done", "ended"], f"{where}: {outcomes}"
    assert len(list(loader)) == 4, "the loader loops on"
    loader.close()
    # An IrisIterableDataset has no loop to end: two threads each read the whole epoch, each its own copies.
    dataset = IrisIterableDataset(stream, seed=0, shuffle_buffer=2)
    start = threading.Barrier(2)

    def read() -> list:
        start.wait(timeout=60)
        return list(dataset)

    with ThreadPoolExecutor(2) as pool:
        reads = [future.result(timeout=120) for future in [pool.submit(read), pool.submit(read)]]
    for k, read_items in enumerate(reads):
        assert sorted(item[2] for item in read_items) == sorted(items), f"thread {k}: every row once"
        for item in read_items:
            assert_item_equal(item, items[item[2]], f"thread {k}")


def test_a_loop_left_mid_stream_exits_cleanly(v2, tmp_path):
    # With pyarrow 26 a stream left open at exit can abort the process ("terminate called
    # without an active exception", 134) or hang it: without the atexit hook of
    # preprocessing.training.reader this script hung in 9 runs of 12, with it in none.
    folder = write_folder(tmp_path, {"train": parts(v2["pupil"]["train"], 4, 4)})
    code = textwrap.dedent(f"""
        import datasets
        from preprocessing.training import IrisIterableDataset, IrisLoader
        stream = datasets.load_dataset({folder!r}, split="train", streaming=True)
        batches = iter(IrisLoader(stream, 2, seed=0, shuffle_buffer=2))
        items = iter(IrisIterableDataset(stream, shuffle=False))
        print("left", next(batches)[2], next(items)[2])
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "left" in done.stdout, done.stderr[-2000:]
    assert "terminate called" not in done.stderr


# --- resuming a stream mid-epoch: rows(start=h) --------------------------------------------

#: rows of each parquet row group in the resume tests: neither a divisor nor a multiple of the 16-row record batches
ROW_GROUP = 3
RESUMABLE = int(datasets.__version__.split(".")[0]) >= 5  # datasets 3.6 refuses start > 0 (see check_resumable)
#: rows of the resume tests' split (each row costs about 15-30 ms to decode here: few rows, few starts)
RESUME_ROWS = 20


def write_shards(root: Path, data: datasets.Dataset, sizes: tuple[int, ...]) -> str:
    """The sample's rows again and again, each under a filename of its own, in parquet files of ``sizes`` rows
    with row groups of ROW_GROUP, and a card with the row count."""
    rows = sum(sizes)
    table = data.data.table.take([k % len(data) for k in range(rows)])
    table = table.set_column(table.schema.get_field_index("filename"), "filename", [[f"r{k:03d}" for k in range(rows)]])
    for i, (a, b) in enumerate(itertools.pairwise(np.cumsum((0, *sizes)).tolist())):
        path = root / "data" / f"train-{i:05d}-of-{len(sizes):05d}.parquet"
        write_parquet(table.slice(a, b - a), path, data.features, row_group_size=ROW_GROUP)
    card = f"dataset_info:\n  splits:\n  - name: train\n    num_bytes: 0\n    num_examples: {rows}\n"
    files = "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
    (root / "README.md").write_text(f"---\n{files}{card}---\n")
    return str(root)


def fingerprints(rows, source: StreamRows) -> list[tuple]:
    """Each row's number, filename and a hash of its arrays, with the rows ``source`` had decoded by then;
    the rows are dropped at once (they hold the shuffle's copies)."""
    out = []
    for row in rows:
        digest = 0
        for array in row.sample:
            digest = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"), digest)
        out.append((row.index, row.filename, digest, source.rows_decoded))
    return out


@pytest.fixture(scope="module")
def resume_folders(v2, tmp_path_factory) -> dict[str, str]:
    data = v2["pupil"]["train"]
    root = tmp_path_factory.mktemp("resume")
    return {
        "4 shards": write_shards(root / "four", data, (6, 6, 5, 3)),  # 2 parts: whole shards, at most 12 rows each
        "3 shards": write_shards(root / "three", data, (7, 7, 6)),  # 2 parts: every other row
    }


@pytest.fixture(scope="module")
def long_folder(v2, tmp_path_factory) -> str:
    """48 rows in 4 shards, for the one test that needs a longer epoch (datasets 5.x only: not written on 3.6)."""
    return write_shards(tmp_path_factory.mktemp("long"), v2["pupil"]["train"], (12, 12, 12, 12))


#: (folder, parts, part, buffer, limit, starts): one process, shuffled and not; 2 parts by whole shards with a
#: limit above every part's rows (the part reads its shards again), shuffled and not; 2 parts by rows, the DDP limit
RESUME_CASES = [
    ("4 shards", 1, 0, 4, None, (1, 7, 16, 19, 20)),
    ("4 shards", 1, 0, 0, None, (1, 7, 16, 19, 20)),
    ("4 shards", 2, 1, 4, 13, (1, 7, 12, 13)),
    ("4 shards", 2, 0, 0, 13, (5, 12, 13)),
    ("3 shards", 2, 1, 4, 10, (1, 5, 9, 10)),
]


@pytest.mark.parametrize(("folder", "parts", "part", "buffer", "limit", "starts"), RESUME_CASES)
def test_a_stream_resumes_at_any_row_exactly_and_decodes_little_before(folder, parts, part, buffer, limit, starts,
                                                                       resume_folders):  # fmt: skip
    source = StreamRows(stream_of(resume_folders[folder]))
    by_rows = parts > 1 and not source._by_shards(parts)
    assert by_rows == (folder == "3 shards"), "the case's split"
    call = dict(part=part, parts=parts, order_seed=7 if buffer else None, buffer=buffer, limit=limit)
    before = source.rows_decoded
    whole = [(*f[:3], f[3] - before) for f in fingerprints(source.rows(2, **call), source)]
    total, n = source.rows_decoded - before, len(whole)
    assert n == (limit or RESUME_ROWS), "every row of the part, or the limit"
    if limit is None:
        assert sorted(f[1] for f in whole) == [f"r{k:03d}" for k in range(RESUME_ROWS)], "each row once"
    elif not by_rows:
        assert len({f[1] for f in whole}) < n, "the part reads its shards again to reach the limit"
    if not RESUMABLE:
        with pytest.raises(StreamResumeError, match=rf"^datasets {re.escape(datasets.__version__)} reads a strea"):
            source.rows(2, **call, start=1)
        return
    for h in (*starts, n + 2):
        before = source.rows_decoded
        resumed = [(*f[:3], f[3] - before) for f in fingerprints(source.rows(2, **call, start=h), source)]
        where = f"{folder}, part {part} of {parts}, buffer {buffer}, limit {limit}, start {h}"
        assert [f[:3] for f in resumed] == [f[:3] for f in whole[h:]], where
        # What resuming decoded beyond what the uninterrupted read decoded after its h-th row: the
        # rows the shuffle held at h read again with those between (under 3 windows of part rows,
        # `parts` stream rows each by rows), the rows before them in their row group, and a record
        # batch each read may have had ahead.
        decoded = source.rows_decoded - before
        after = total - (whole[h - 1][3] if h <= n else total)
        bound = 3 * buffer * (parts if by_rows else 1) + ROW_GROUP + 2 * 16
        assert decoded - after <= bound, f"{where}: decoded {decoded}, the uninterrupted read {after} after row {h}"
    if buffer:
        assert source._arena.allocated <= buffer + 2, "no more rows held resumed than whole"


@pytest.mark.skipif(not RESUMABLE, reason="datasets 3.6 refuses start > 0 (tested above)")
def test_a_resumed_stream_decodes_only_the_held_rows_again(long_folder):
    # Late in a longer epoch, where reading it all again would show: what the resumed read decoded
    # beyond what the uninterrupted read decoded after its h-th row is at most the shuffle's span
    # (3 windows), the rows before its oldest held row in that row group, and the record batch the
    # uninterrupted read had ahead at row h.
    source, h, buffer = StreamRows(stream_of(long_folder)), 40, 4
    whole = fingerprints(source.rows(1, order_seed=5, buffer=buffer), source)
    before = source.rows_decoded
    resumed = fingerprints(source.rows(1, order_seed=5, buffer=buffer, start=h), source)
    assert [f[:3] for f in resumed] == [f[:3] for f in whole[h:]]
    decoded, after = source.rows_decoded - before, whole[-1][3] - whole[h - 1][3]
    assert decoded - after <= 3 * buffer + ROW_GROUP + 16, f"decoded {decoded}, {after} after row {h} whole"
    assert decoded < len(whole) - h + 3 * buffer + ROW_GROUP + 16 < len(whole), "not the whole epoch again"


class _Same:
    """An arena that keeps what it is given: the shuffle run on positions standing for rows."""

    def copy(self, row):
        return row


def _positions(first: int, length: int, passes: bool):
    """A part's input as positions from ``first`` on: one pass of ``length``, or passes without end (``None``
    after each), as StreamRows' reads give it."""
    position = first
    while passes or position < length:
        yield position, position
        position += 1
        if passes and position % length == 0:
            yield None


@pytest.mark.parametrize(("size", "length", "limit"), [(1, 9, None), (2, 23, None), (4, 60, None), (4, 5, 23),
                                                       (3, 17, 17), (8, 40, 31)])  # fmt: skip
def test_the_shuffle_replayed_on_positions_goes_on_exactly_at_every_output(size, length, limit):
    # The real shuffle (shuffle.shuffled) on positions: replayed to every output h, then fed from its
    # oldest held position, it hands out exactly the rest; with a limit the passes follow one another
    # (a pass shorter than the shuffle's span included), each pass's rows leaving before the next's.
    passes = limit is not None
    total = limit or length
    for seed in range(6):
        whole = list(itertools.islice(shuffled(_positions(0, length, passes), KeyedOrder(size, seed, 3, 1), _Same()),
                                      total))  # fmt: skip
        assert len(whole) == total
        for k in range(0, total - length + 1, length):  # each whole pass's rows once, before the next pass's
            assert sorted(whole[k : k + length]) == list(range(k, k + length)), f"seed {seed}, pass at {k}"
        for h in range(total + 1):
            order = KeyedOrder(size, seed, 3, 1)
            done = replay(order, h, lambda row: row < length, passes)
            if done < h:
                assert h == total and not passes
                continue
            assert len(order) <= size
            first = min(order.held) if order.held else order.frontier
            assert order.frontier - first <= order.span, "a resume re-reads less than the span"
            rest = shuffled(_positions(first, length, passes), order, _Same())
            assert list(itertools.islice(rest, total - h)) == whole[h:], f"seed {seed}, start {h}"


def test_resume_through_the_iterable_dataset_and_refusals(resume_folders):
    stream = stream_of(resume_folders["4 shards"])
    dataset = IrisIterableDataset(stream, seed=3, shuffle=True, shuffle_buffer=4, rank=1, world_size=2)
    whole = fingerprints(dataset.part_rows(1, 1, 2), dataset.rows)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=rf"^start={re.escape(repr(bad))}; expected a non-negative int"):
            dataset.part_rows(1, 1, 2, start=bad)
    if not RESUMABLE:
        with pytest.raises(StreamResumeError) as refused:
            dataset.part_rows(1, 1, 2, start=5)
        assert f"datasets {datasets.__version__}" in str(refused.value) and "\n" not in str(refused.value)
        assert [f[:3] for f in fingerprints(dataset.part_rows(1, 1, 2, start=0), dataset.rows)] == [
            f[:3] for f in whole
        ], "start=0 reads as before"
        return
    resumed = fingerprints(dataset.part_rows(1, 1, 2, start=5), dataset.rows)
    assert [f[:3] for f in resumed] == [f[:3] for f in whole[5:]]
    filtered = datasets.load_dataset(resume_folders["4 shards"], split="train", streaming=True,
                                     filters=[("filename", "!=", "r001")])  # fmt: skip
    with pytest.raises(StreamResumeError, match=r"^the stream was loaded with filters=.*load it without filters"):
        StreamRows(filtered).rows(0, start=3)


def test_the_keyed_shuffle_spreads_rows_at_least_as_far_as_the_swap_buffer():
    # positions only, the same positions through both, at the default window
    length, size = 20_000, 256
    swapped, _ = swap_buffer_order(length, size, np.random.default_rng(0))
    order, keyed, most, reread = KeyedOrder(size, seed=0, epoch=0, part=0), [], 0, 0
    for position in range(length):
        order.admit(position)
        while order.due():
            keyed.append(order.pop())
            if order.held:
                reread = max(reread, order.frontier - min(order.held))
        most = max(most, len(order))
    order.end()
    keyed += [order.pop() for _ in range(len(order))]

    def displacement(out: list[int]) -> np.ndarray:
        where = np.empty(length, np.int64)
        where[out] = np.arange(length)
        return where - np.arange(length)

    new, old = displacement(keyed), displacement(swapped)
    assert sorted(keyed) == list(range(length)), "each position once"
    assert new.std() >= old.std() and np.abs(new).mean() >= np.abs(old).mean(), (new.std(), old.std())
    assert most <= size, "never more rows held than the swap buffer held"
    assert reread <= order.span == 3 * size, "a resume re-reads at most 3 windows"


# --- distributed data parallel: 2 processes on gloo -----------------------------------------


def ddp_rank(rank: int, world_size: int, folders: list[str], init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=30)
    )
    try:
        record = []
        for folder in folders:
            stream = datasets.load_dataset(folder, split="train", streaming=True)
            loader = IrisLoader(stream, 2, transform=AUGMENT, seed=11, shuffle_buffer=2)  # ranks from torch
            epochs = [all_reduced_epoch(loader) for _ in range(2)]
            loader.close()
            record.append({"len": len(loader), "epochs": epochs})
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_stop_after_the_same_number_of_batches(v2, tmp_path):
    data = v2["pupil"]["train"].select(range(7))  # 7 rows, 2 ranks: 3 each (7 // 2), in 2 batches
    folders = [
        write_folder(tmp_path / "by-shards", {"train": parts(data, 5, 2)}),  # 2 shards: whole shards, 5 and 2 rows
        write_folder(tmp_path / "by-rows", {"train": parts(data, 3, 2, 2)}),  # 3 shards: every other row
    ]
    run_ranks(ddp_rank, (2, folders, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for k, layout in enumerate(("by shards", "by rows")):
        assert [r[k]["len"] for r in records] == [2, 2], layout
        for epoch in range(2):
            shares = [r[k]["epochs"][epoch]["filenames"] for r in records]
            assert [len(s) for s in shares] == [3, 3], f"{layout}, epoch {epoch}: equal shares"
            assert records[0][k]["epochs"][epoch]["sums"] == [4.0, 2.0], f"{layout}, epoch {epoch}"
            if layout == "by rows":  # every other row of the split, one row dropped
                assert not set(shares[0]) & set(shares[1]) and len(set(shares[0] + shares[1])) == 6
            else:  # one rank reads 3 of its shard's 5 rows, the other its 2 rows and 1 of them again
                assert sorted(map(len, map(set, shares))) == [2, 3] and not set(shares[0]) & set(shares[1])
