"""v1 rows as ``Conner/openeds-precomputed`` stored them, built in code for tests and benchmarks.

The targets come from :mod:`tests.reference` (SciPy, written plainly from FACTS.md),
not from ``preprocessing``: a v1-vs-v2 test then compares the fast code with an
independent implementation, not with itself.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

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


def v1_split(pairs: list[raw.Pair], config: str) -> datasets.Dataset:
    """v1 rows: the raw image and the targets as flat lists (built through Arrow: encoding
    NumPy arrays row by row takes datasets about 0.3 s a frame)."""
    frames = [raw.read_pair(pair) for pair in pairs]
    # (label, spatial_weights, dist_map): v1 stored the float64 distance formula cast to float32
    targets = [reference.targets(raw_label, config) for _, raw_label in frames]
    columns = {
        "image": flat_lists([image for image, _ in frames]),
        "label": flat_lists([label for label, _, _ in targets]),
        "spatial_weights": flat_lists([weights for _, weights, _ in targets]),
        "dist_map": flat_lists([dist.astype(np.float32) for _, _, dist in targets]),
        "filename": [pair.stem for pair in pairs],
    }
    return datasets.Dataset.from_dict(columns, features=V1_FEATURES)
