"""Turn raw frames into v2 rows. Shared by the builder and ``push.py``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from openeds.raw import Pair, read_pair
from openeds.schema import ConfigName
from preprocessing import compute_targets, preprocess_image


def make_row(pair: Pair, config: ConfigName) -> dict[str, Any]:
    """One v2 row (NumPy arrays, typed as :func:`openeds.schema.features_for`)."""
    image, raw_label = read_pair(pair)
    targets = compute_targets(raw_label, config)
    return {
        "image": preprocess_image(image),
        "label": targets.label,
        "spatial_weights": targets.spatial_weights,
        "dist_map": targets.dist_map,
        "filename": pair.stem,
        "preprocessed": True,
    }


def iter_rows(pairs: Iterable[Pair], config: ConfigName) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, row)`` for each pair, keyed by the file stem."""
    for pair in pairs:
        yield pair.stem, make_row(pair, config)
