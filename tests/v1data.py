"""v1 rows as ``Conner/openeds-precomputed`` stored them, built in code for tests and benchmarks.

The targets come from :mod:`tests.reference` (SciPy, written plainly from FACTS.md),
not from ``preprocessing``: a v1-vs-v2 test then compares the fast code with an
independent implementation, not with itself.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import CommitOperationAdd, HfApi

from openeds import raw
from tests import reference

#: How v1 stored its columns: flat lists, the raw image, no ``preprocessed`` column.
V1_FEATURES = datasets.Features(
    {
        "image": datasets.Sequence(datasets.Value("uint8")),
        "label": datasets.Sequence(datasets.Value("uint8")),
        "spatial_weights": datasets.Sequence(datasets.Value("float32")),
        "dist_map": datasets.Sequence(datasets.Value("float32")),
        "filename": datasets.Value("string"),
    }
)


def flat_lists(arrays: list[np.ndarray]) -> pa.ListArray:
    """One flat Arrow list per array, as v1 stored them."""
    offsets = np.cumsum([0] + [a.size for a in arrays], dtype=np.int32)
    return pa.ListArray.from_arrays(offsets, np.concatenate([a.ravel() for a in arrays]))


def v1_columns(pairs: list[raw.Pair], config: str) -> dict[str, pa.Array | list[str]]:
    """v1's columns of `pairs`: the raw image and the targets (from `tests.reference`) as flat lists, and the stem."""
    frames = [raw.read_pair(pair) for pair in pairs]
    # (label, spatial_weights, dist_map): v1 stored the float64 distance formula cast to float32
    targets = [reference.targets(raw_label, config) for _, raw_label in frames]
    return {
        "image": flat_lists([image for image, _ in frames]),
        "label": flat_lists([label for label, _, _ in targets]),
        "spatial_weights": flat_lists([weights for _, weights, _ in targets]),
        "dist_map": flat_lists([dist.astype(np.float32) for _, _, dist in targets]),
        "filename": [pair.stem for pair in pairs],
    }


def v1_split(pairs: list[raw.Pair], config: str) -> datasets.Dataset:
    """v1 rows: the raw image and the targets as flat lists (built through Arrow: encoding
    NumPy arrays row by row takes datasets about 0.3 s a frame)."""
    return datasets.Dataset.from_dict(v1_columns(pairs, config), features=V1_FEATURES)


def v1_table(pairs: list[raw.Pair]) -> pa.Table:
    """v1 rows of `pairs` as the precompute script wrote them to parquet (the `pupil` semantics, v1's only)."""
    return pa.table(v1_columns(pairs, "pupil"))


def tiny_v1_table(split: str, rows: int = 2) -> pa.Table:
    """`rows` rows with v1's columns and types, of a few values each: for the tests that need v1's schema only."""
    return pa.table(
        {
            "image": flat_lists([np.arange(4, dtype=np.uint8) + i for i in range(rows)]),
            "label": flat_lists([np.array([0, 1, 1, 0], np.uint8)] * rows),
            "spatial_weights": flat_lists([np.array([0, 20, 20, 0], np.float32)] * rows),
            "dist_map": flat_lists([np.linspace(-1, 1, 8, dtype=np.float32) * (i + 1) for i in range(rows)]),
            "filename": [f"{split}_{i:04d}" for i in range(rows)],
        }
    )


#: How v1 may sit on the Hub: as VisionAssist's precompute script uploaded it (`data/train/shard_00000.parquet`,
#: ... by `HfApi.upload_folder`, one commit a split, no card), or under `push_to_hub`'s names with its card.
V1Layout = Literal["script", "push_to_hub"]


def upload_v1(
    api: HfApi,
    repo_id: str,
    tables: Mapping[str, pa.Table],
    *,
    layout: V1Layout = "script",
    rows_per_shard: int = 1,
    card: str | None = None,
) -> dict[str, bytes]:
    """A v1 repo of `tables` (split -> rows) on the Hub as `layout` says, `card` committed after the data if given
    (for `script`: a card added by hand later); the files it holds, path -> bytes.

    `script` is what the precompute script did: shards of `rows_per_shard` rows (500 there) written with
    `pq.write_table` (pyarrow's default compression) as `shard_00000.parquet`, ... in a folder a split, each
    folder uploaded with `upload_folder(folder_path=<split folder>, path_in_repo="data/<split>")`.
    """
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="v1-shards-") as scratch:
        for split, table in tables.items():
            starts = range(0, table.num_rows, rows_per_shard)
            for index, start in enumerate(starts):
                name = (
                    f"shard_{index:05d}.parquet"
                    if layout == "script"
                    else f"{split}-{index:05d}-of-{len(starts):05d}.parquet"
                )
                buffer = io.BytesIO()
                pq.write_table(table.slice(start, rows_per_shard), buffer)
                files[f"data/{split}/{name}" if layout == "script" else f"data/{name}"] = buffer.getvalue()
                folder = Path(scratch, split)
                folder.mkdir(exist_ok=True)
                folder.joinpath(name).write_bytes(buffer.getvalue())
            if layout == "script":
                api.upload_folder(
                    repo_id=repo_id, folder_path=Path(scratch, split), path_in_repo=f"data/{split}", repo_type="dataset"
                )
    additions = [] if layout == "script" else [CommitOperationAdd(p, c) for p, c in files.items()]
    if card is not None:
        files["README.md"] = card.encode()
        additions.append(CommitOperationAdd("README.md", files["README.md"]))
    if additions:
        api.create_commit(repo_id, additions, commit_message="v1", repo_type="dataset")
    return files
