"""PyTorch adapter over OpenEDS v1 and v2 data: :class:`IrisDataset`.

A drop-in for VisionAssist's ``IrisDataset``: the same ``(hf_dataset, split,
transform)`` arguments (``transform`` is now the augmentation; the ``ToTensor`` +
``Normalize`` step is built in) and the same item ``(image, label, filename,
spatial_weights, dist_map)``, but

* **fast**: rows are read as zero-copy NumPy views of the Arrow columns (uint8 stays
  uint8, float32 stays float32), never through the default Python format, which
  turns every array into nested lists;
* **v1 and v2**: the data version is detected once from the columns. v1 (flat
  ``list<uint8>``/``list<float>`` columns, raw image, no ``preprocessed`` column)
  gets the same gamma + CLAHE on the CPU as the v2 precompute, through
  :func:`preprocessing.preprocess_image`, so a v1 source yields the same images as
  v2 bit for bit. v2 images are used as stored. Both the ``pupil`` and the ``full``
  config work (2 or 4 distance channels);
* **correct augmentation**: see :mod:`preprocessing.augment`. Augmentations run on
  the preprocessed image for v1 and v2 alike (the old code drew v1's lines and blur
  before CLAHE), and a flip flips all four arrays together;
* **seeded**: the dataset owns a :class:`numpy.random.Generator`. Inside a DataLoader
  worker it is reseeded from the worker's torch seed (``get_worker_info().seed``,
  which differs per worker and per epoch), so workers never repeat each other, and
  ``torch.manual_seed`` (or the DataLoader's ``generator``) plus ``seed`` reproduce
  an epoch.

torch is an optional dependency of this package (the ``torch`` extra: ``pip install -e
'.[torch]'`` after ``pip install torch==2.13.0`` for the CPU build); only this module
imports it.

Example::

    from datasets import load_dataset
    from torch.utils.data import DataLoader
    from preprocessing.augment import TRAIN_AUGMENT
    from preprocessing.training import IrisDataset

    hf = load_dataset("Conner/openeds-precomputed")
    train = IrisDataset(hf["train"], split="train", transform=TRAIN_AUGMENT, seed=0)
    loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=4)
"""

from __future__ import annotations

import argparse
import math
from bisect import bisect_right
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from openeds.schema import DIST_CHANNELS, HEIGHT, WIDTH
from preprocessing.augment import Sample, Transform
from preprocessing.image import preprocess_image

#: ``(image float32[1, H, W] in [-1, 1], label int64[H, W], filename,
#: spatial_weights float32[H, W], dist_map float32[C, H, W])``
Item = tuple[torch.Tensor, torch.Tensor, str, torch.Tensor, torch.Tensor]

#: ``--preprocessed`` values and what they mean for ``IrisDataset(preprocessed=...)``.
PREPROCESSED_CHOICES: dict[str, bool | None] = {"auto": None, "yes": True, "no": False}

_COLUMN_TYPES = {
    "image": pa.uint8(),
    "label": pa.uint8(),
    "spatial_weights": pa.float32(),
    "dist_map": pa.float32(),
}


class DatasetFormatError(ValueError):
    """The dataset does not fit :class:`IrisDataset`, or contradicts what was asked. One line."""


def add_preprocessed_argument(parser: argparse.ArgumentParser) -> argparse.Action:
    """Add ``--preprocessed {auto,yes,no}`` to a training script's parser.

    Map the parsed value with :func:`preprocessed_from_flag` and pass it to
    ``IrisDataset(preprocessed=...)``.
    """
    return parser.add_argument(
        "--preprocessed",
        choices=list(PREPROCESSED_CHOICES),
        default="auto",
        help=(
            "are the images already gamma + CLAHE? auto (default): read the dataset's "
            "'preprocessed' column (v2 has it; v1 has none, so its raw images are "
            "preprocessed on the CPU); yes/no: require that, and fail fast if the column disagrees"
        ),
    )


def preprocessed_from_flag(value: str) -> bool | None:
    """``auto`` -> None (detect), ``yes`` -> True, ``no`` -> False."""
    if value not in PREPROCESSED_CHOICES:
        raise ValueError(f"--preprocessed {value!r}; expected one of {', '.join(PREPROCESSED_CHOICES)}")
    return PREPROCESSED_CHOICES[value]


def detect_preprocessed(dataset: datasets.Dataset) -> bool:
    """Whether the images already have gamma + CLAHE, from the ``preprocessed`` column.

    No column (v1) means raw images. Reads the column once, through Arrow.
    """
    if "preprocessed" not in dataset.column_names:
        return False
    column = dataset.data.column("preprocessed")
    if pc.all(column).as_py():
        return True
    if not pc.any(column).as_py():
        return False
    raise DatasetFormatError(
        "the dataset's 'preprocessed' column mixes True and False; expected one value for every "
        "row. Split the dataset by that column and wrap each part in its own IrisDataset"
    )


def _resolve_preprocessed(dataset: datasets.Dataset, requested: bool | None) -> bool:
    found = detect_preprocessed(dataset)
    if requested is None or requested == found:
        return found
    flag = "yes" if requested else "no"
    if requested and "preprocessed" not in dataset.column_names:
        raise DatasetFormatError(
            f"preprocessed=True (--preprocessed {flag}), but the dataset has no 'preprocessed' "
            "column: it is v1 data with raw images. Use --preprocessed auto to apply gamma + CLAHE "
            "on the CPU, or load the v2 data"
        )
    state = "already have" if found else "do not have"
    raise DatasetFormatError(
        f"preprocessed={requested} (--preprocessed {flag}), but the dataset's 'preprocessed' column "
        f"is {found}: its images {state} gamma + CLAHE. Use --preprocessed auto"
    )


def to_normalized_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] -> float32 [1, H, W] in [-1, 1], as ``ToTensor()`` then ``Normalize([0.5], [0.5])``.

    Same float32 operations in the same order (``/ 255``, ``- 0.5``, ``/ 0.5``), so
    the values are identical.
    """
    return torch.tensor(image).unsqueeze(0).float().div_(255).sub_(0.5).div_(0.5)


def _leaf_view(array: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The flat values under a (nested) list array, and each row's start and stop in them.

    Handles the storages ``datasets`` uses: ``Array2D``/``Array3D`` extension arrays
    over nested lists, plain ``list<...>`` (v1), and fixed-size lists. Nothing is
    copied: the values are the Arrow array the rows point into.
    """
    if isinstance(array.type, pa.ExtensionType):
        array = array.storage
    starts = np.arange(len(array))
    stops = starts + 1
    while True:
        kind = array.type
        if pa.types.is_fixed_size_list(kind):
            # ``values`` ignores the array's own offset, so add it back.
            starts = (starts + array.offset) * kind.list_size
            stops = (stops + array.offset) * kind.list_size
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            # ``offsets`` follow the array's offset and index into the full ``values``.
            offsets = array.offsets.to_numpy()
            starts, stops = offsets[starts], offsets[stops]
        else:
            return array, starts, stops
        array = array.values


class _ArrayColumn:
    """Per-row zero-copy views of one array column, across the column's chunks.

    A chunk's views are built the first time one of its rows is read, then kept.
    """

    def __init__(self, column: pa.ChunkedArray, name: str, shape: tuple[int, ...]) -> None:
        self._name = name
        self._shape = shape
        self._size = math.prod(shape)
        self._chunks = column.chunks
        self._first_rows = np.cumsum([0] + [len(chunk) for chunk in self._chunks]).tolist()
        self._views: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, row: int) -> np.ndarray:
        k = bisect_right(self._first_rows, row) - 1
        if k not in self._views:
            self._views[k] = self._chunk_view(k)
        values, starts = self._views[k]
        start = starts[row - self._first_rows[k]]
        return values[start : start + self._size].reshape(self._shape)

    def _chunk_view(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        values, starts, stops = _leaf_view(self._chunks[k])
        expected = _COLUMN_TYPES[self._name]
        if values.type != expected or values.null_count:
            found = f"{values.null_count} null values" if values.type == expected else f"{values.type} values"
            raise DatasetFormatError(
                f"column {self._name!r} holds {found}; expected non-null {expected} as in the v1/v2 schema. "
                "Fix the column (e.g. Dataset.cast_column) before wrapping it"
            )
        bad = np.flatnonzero(stops - starts != self._size)
        if bad.size:
            row = self._first_rows[k] + int(bad[0])
            raise DatasetFormatError(
                f"column {self._name!r}, row {row} has {int(stops[bad[0]] - starts[bad[0]])} values; "
                f"expected {self._size} (shape {self._shape})"
            )
        # A read-only view of the Arrow buffer (memory-mapped for on-disk datasets).
        return values.to_numpy(zero_copy_only=True), starts


def _dist_channels(column: pa.ChunkedArray) -> int:
    """Distance-map channels from the first row: 2 (``pupil``) or 4 (``full``)."""
    for chunk in column.chunks:
        if len(chunk):
            _, starts, stops = _leaf_view(chunk.slice(0, 1))
            size = int(stops[0] - starts[0])
            break
    else:
        return DIST_CHANNELS["pupil"]  # an empty dataset has no rows to read
    channels, rest = divmod(size, HEIGHT * WIDTH)
    if rest or channels not in DIST_CHANNELS.values():
        raise DatasetFormatError(
            f"column 'dist_map' row 0 has {size} values; expected C x {HEIGHT} x {WIDTH} with C = "
            f"{' or '.join(map(str, DIST_CHANNELS.values()))} (configs {', '.join(DIST_CHANNELS)})"
        )
    return channels


class _Rows:
    """Zero-copy reads of whole rows, through any ``select``/``shuffle`` index mapping."""

    def __init__(self, dataset: datasets.Dataset, dist_channels: int) -> None:
        table = dataset.data  # the Arrow table, memory-mapped for on-disk datasets
        shapes = {name: (HEIGHT, WIDTH) for name in _COLUMN_TYPES}
        shapes["dist_map"] = (dist_channels, HEIGHT, WIDTH)
        self._columns = {name: _ArrayColumn(table.column(name), name, shape) for name, shape in shapes.items()}
        self._filenames = table.column("filename")
        # ``select``/``shuffle``/``train_test_split`` keep the table and add an index
        # mapping; datasets has no public accessor for it.
        indices = dataset._indices
        self._index = None if indices is None else indices.column(0).to_numpy()

    def read(self, index: int) -> tuple[Sample, str]:
        row = index if self._index is None else int(self._index[index])
        sample = Sample(*(self._columns[name][row] for name in Sample._fields))
        return sample, self._filenames[row].as_py()


class IrisDataset(torch.utils.data.Dataset):
    """OpenEDS rows as ``(image, label, filename, spatial_weights, dist_map)`` tensors.

    Args:
        hf_dataset: one split of the data, a map-style :class:`datasets.Dataset`
            (from ``load_dataset``, ``load_from_disk`` or the builder; v1 or v2,
            config ``pupil`` or ``full``).
        split: ``"train"`` enables ``transform``; other splits are never augmented,
            as in the original training code.
        transform: a :class:`preprocessing.augment.Transform`, for example
            :data:`preprocessing.augment.TRAIN_AUGMENT`. ``None``: no augmentation.
            Normalisation is built in, so a torchvision ``ToTensor``/``Normalize``
            pipeline is neither needed nor accepted.
        preprocessed: ``None`` detects from the ``preprocessed`` column (absent in
            v1: raw images, which get gamma + CLAHE on the CPU). ``True``/``False``
            require that and raise :class:`DatasetFormatError` if the column disagrees.
        seed: seeds the augmentation generator. In DataLoader workers it is mixed
            with each worker's torch seed.

    Items: ``image`` float32 [1, 400, 640] in [-1, 1] (as ``ToTensor`` +
    ``Normalize([0.5], [0.5])``), ``label`` int64 [400, 640], ``filename`` str,
    ``spatial_weights`` float32 [400, 640], ``dist_map`` float32 [C, 400, 640] with
    C = :attr:`num_classes`.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        split: str = "train",
        transform: Transform | None = None,
        preprocessed: bool | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(hf_dataset, datasets.Dataset):
            raise TypeError(
                f"hf_dataset is a {type(hf_dataset).__name__}; expected one split as a map-style "
                "datasets.Dataset, e.g. load_dataset(...)['train'] (streaming is not supported)"
            )
        if transform is not None and not isinstance(transform, Transform):
            raise TypeError(
                f"transform is a {type(transform).__module__}.{type(transform).__qualname__}; expected a "
                "preprocessing.augment.Transform such as augment.TRAIN_AUGMENT. IrisDataset already "
                "normalises like ToTensor + Normalize([0.5], [0.5]), so drop the torchvision pipeline"
            )
        missing = [c for c in (*_COLUMN_TYPES, "filename") if c not in hf_dataset.column_names]
        if missing:
            raise DatasetFormatError(
                f"the dataset lacks column(s) {', '.join(missing)}; it has {', '.join(hf_dataset.column_names)}. "
                "Expected OpenEDS v1 or v2 rows (image, label, spatial_weights, dist_map, filename)"
            )
        self.dataset = hf_dataset
        self.split = split
        self.transform = transform
        self.preprocessed = _resolve_preprocessed(hf_dataset, preprocessed)
        #: distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)
        self.num_classes = _dist_channels(hf_dataset.data.column("dist_map"))
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None
        self._rows: _Rows | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        rows = len(self)
        if not -rows <= index < rows:
            raise IndexError(f"index {index} is out of range for an IrisDataset of {rows} rows")
        sample, filename = self._reader().read(index % rows)
        if not self.preprocessed:
            sample = sample._replace(image=preprocess_image(sample.image))
        if self.transform is not None and self.split == "train":
            sample = self.transform(sample, self._generator())
        return (
            to_normalized_tensor(sample.image),
            torch.tensor(sample.label, dtype=torch.int64),
            filename,
            torch.tensor(sample.spatial_weights),
            torch.tensor(sample.dist_map),
        )

    def _reader(self) -> _Rows:
        if self._rows is None:
            self._rows = _Rows(self.dataset, self.num_classes)
        return self._rows

    def _generator(self) -> np.random.Generator:
        """The dataset's generator; in a DataLoader worker, reseeded from that worker's seed.

        ``get_worker_info().seed`` is ``base_seed + worker_id``, and the DataLoader
        draws a new ``base_seed`` each epoch (once, with ``persistent_workers``, where
        the generator then simply continues).
        """
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            entropy = [info.seed] if self.seed is None else [self.seed, info.seed]
            self._rng = np.random.default_rng(entropy)
        return self._rng

    def __getstate__(self) -> dict[str, Any]:
        # The row views hold Arrow chunks, which pickle by value. A worker started with
        # spawn or forkserver rebuilds them from the datasets.Dataset, which pickles
        # memory-mapped tables by path.
        state = self.__dict__.copy()
        state["_rows"] = None
        return state
