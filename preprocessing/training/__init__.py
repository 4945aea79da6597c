"""The training side: OpenEDS v1/v2 rows as torch tensors, for a training loop.

* :class:`IrisLoader`: the feed training should use, batches gathered in threads into
  reused buffers, from a map-style or a streamed split;
* :class:`IrisDataset`: the items of a map-style split, a drop-in for VisionAssist's
  ``IrisDataset`` (for a ``DataLoader``);
* :class:`IrisIterableDataset`: the items of a streamed split;
* :func:`add_preprocessed_argument`: a training script's ``--preprocessed`` flag.

torch is an optional dependency (the ``torch`` extra); only this package imports it.
"""

from preprocessing.training.arrow_rows import DatasetFormatError, detect_preprocessed
from preprocessing.training.dataset import (
    PREPROCESSED_CHOICES,
    IrisDataset,
    Item,
    add_preprocessed_argument,
    preprocessed_from_flag,
    to_normalized_tensor,
)
from preprocessing.training.loader import Batch, IrisLoader
from preprocessing.training.streaming import IrisIterableDataset

__all__ = [
    "PREPROCESSED_CHOICES",
    "Batch",
    "DatasetFormatError",
    "IrisDataset",
    "IrisIterableDataset",
    "IrisLoader",
    "Item",
    "add_preprocessed_argument",
    "detect_preprocessed",
    "preprocessed_from_flag",
    "to_normalized_tensor",
]
