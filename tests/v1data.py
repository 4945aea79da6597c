"""v1 rows as ``Conner/openeds-precomputed`` stored them, built in code for tests and benchmarks."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from openeds import raw
from preprocessing import compute_targets

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


def v1_split(pairs: list[raw.Pair], config: str) -> datasets.Dataset:
    """v1 rows: the raw image and the targets as flat lists (built through Arrow: encoding
    NumPy arrays row by row takes datasets about 0.3 s a frame)."""
    frames = [raw.read_pair(pair) for pair in pairs]
    targets = [compute_targets(raw_label, config) for _, raw_label in frames]
    columns = {
        "image": flat_lists([image for image, _ in frames]),
        "label": flat_lists([t.label for t in targets]),
        "spatial_weights": flat_lists([t.spatial_weights for t in targets]),
        "dist_map": flat_lists([t.dist_map for t in targets]),
        "filename": [pair.stem for pair in pairs],
    }
    return datasets.Dataset.from_dict(columns, features=V1_FEATURES)
