"""The training side: OpenEDS v1/v2 rows as torch tensors, for a training loop.

* :class:`IrisLoader`: the feed training should use, batches of model-ready tensors
  gathered in threads into reused buffers, several times what a ``DataLoader`` over
  :class:`IrisDataset` delivers (docs/benchmarks.md), from a map-style or a streamed split
  (``load_dataset(..., streaming=True)``);
* :class:`IrisDataset`: the items of a map-style split, a drop-in for VisionAssist's
  ``IrisDataset``, where a ``DataLoader`` is needed;
* :class:`IrisIterableDataset`: the items of a streamed split;
* :func:`add_preprocessed_argument`: a training script's ``--preprocessed`` flag;
* :func:`describe_state`: an :meth:`IrisLoader.state_dict` in a few words, for a log line.

One file per concern, each using only those below it (``lint-imports`` checks this,
see ``pyproject.toml``):

* ``loader``: :class:`IrisLoader`, which plans each epoch's batches and hands them out;
* ``dataset``, ``streaming``: the two datasets; ``feed``: the threads that gather a
  batch into a slot;
* ``source``: a split made its row source once (columns checked, v1 or v2 detected,
  channels counted), which every feed reads; ``buffers``: the reused batch slots;
* ``items``: a stored row as training sees it (preprocessed, augmented, normalised);
  ``arguments``: the checks the feeds share; ``reader``: a stream's reader thread;
  ``shuffle``: a stream's shuffle buffer; ``state``: the resume state of
  :class:`IrisLoader` (its format, its checks, its description);
* ``arrow_rows``: zero-copy NumPy views of Arrow rows.

All of it uses the pure functions of :mod:`preprocessing` (gamma + CLAHE, targets,
augmentations, shapes) and nothing of ``openeds``. torch is an optional dependency (the
``torch`` extra: ``pip install -e '.[torch]'`` after ``pip install torch==2.13.0`` for
the CPU build); only this package imports it.

Example::

    from datasets import load_dataset
    from preprocessing.augment import TRAIN_AUGMENT
    from preprocessing.training import IrisLoader

    hf = load_dataset("Conner/openeds-precomputed")
    loader = IrisLoader(hf["train"], batch_size=64, transform=TRAIN_AUGMENT, seed=0)
    for epoch in range(epochs):
        for image, label, filenames, spatial_weights, dist_map in loader:
            ...
"""

from preprocessing.training.arguments import PREPROCESSED_CHOICES, add_preprocessed_argument, preprocessed_from_flag
from preprocessing.training.arrow_rows import DatasetFormatError
from preprocessing.training.dataset import IrisDataset
from preprocessing.training.items import Item, TransformOutputError, to_normalized_tensor
from preprocessing.training.loader import Batch, IrisLoader
from preprocessing.training.source import detect_preprocessed
from preprocessing.training.state import describe_state
from preprocessing.training.streaming import IrisIterableDataset

__all__ = [
    "PREPROCESSED_CHOICES",
    "Batch",
    "DatasetFormatError",
    "IrisDataset",
    "IrisIterableDataset",
    "IrisLoader",
    "Item",
    "TransformOutputError",
    "add_preprocessed_argument",
    "describe_state",
    "detect_preprocessed",
    "preprocessed_from_flag",
    "to_normalized_tensor",
]
