"""PyTorch adapter over OpenEDS v1 and v2 data: :class:`IrisDataset`, :class:`IrisLoader`, :class:`IrisIterableDataset`.

:class:`IrisLoader` (in :mod:`preprocessing.loader`, importable from here) is the feed
training should use: batches of the same values, gathered in threads into reused
buffers, about 10x what a ``DataLoader`` over :class:`IrisDataset` delivers. It also
reads a streamed split (``load_dataset(..., streaming=True)``), for which
:class:`IrisIterableDataset` (in :mod:`preprocessing.streaming`, importable from here)
gives the items.

:class:`IrisDataset` is a drop-in for VisionAssist's ``IrisDataset``: the same
``(hf_dataset, split, transform)`` arguments (``transform`` is now the augmentation;
the ``ToTensor`` + ``Normalize`` step is built in) and the same item ``(image, label,
filename, spatial_weights, dist_map)``, but

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
  before CLAHE), and a flip gives the targets of the mirrored raw frame;
* **seeded**: the dataset owns a :class:`numpy.random.Generator`. Inside a DataLoader
  worker it is reseeded from the worker's torch seed (``get_worker_info().seed``,
  which differs per worker and per epoch), so workers never repeat each other, and
  ``torch.manual_seed`` (or the DataLoader's ``generator``) plus ``seed`` reproduce
  an epoch. :meth:`IrisDataset.item` takes a generator of the caller's instead.

torch is an optional dependency of this package (the ``torch`` extra: ``pip install -e
'.[torch]'`` after ``pip install torch==2.13.0`` for the CPU build); only this module,
:mod:`preprocessing.loader`, :mod:`preprocessing.buffers` and
:mod:`preprocessing.streaming` import it.

Example::

    from datasets import load_dataset
    from torch.utils.data import DataLoader
    from preprocessing.augment import TRAIN_AUGMENT
    from preprocessing.training import IrisDataset, IrisLoader

    hf = load_dataset("Conner/openeds-precomputed")
    loader = IrisLoader(hf["train"], batch_size=64, transform=TRAIN_AUGMENT, seed=0)
    # or, where a DataLoader is needed:
    train = IrisDataset(hf["train"], split="train", transform=TRAIN_AUGMENT, seed=0)
    loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=4)
"""

from __future__ import annotations

import argparse
from typing import Any

import datasets
import numpy as np
import torch

from preprocessing.augment import Sample, Transform
from preprocessing.image import preprocess_image
from preprocessing.training.arrow_rows import (  # noqa: F401 (DatasetFormatError, detect_preprocessed: public here)
    ArrowRows,
    DatasetFormatError,
    detect_preprocessed,
    dist_channels,
    require_columns,
    resolve_preprocessed,
)

#: ``(image float32[1, H, W] in [-1, 1], label int64[H, W], filename,
#: spatial_weights float32[H, W], dist_map float32[C, H, W])``
Item = tuple[torch.Tensor, torch.Tensor, str, torch.Tensor, torch.Tensor]

#: ``--preprocessed`` values and what they mean for ``IrisDataset(preprocessed=...)``.
PREPROCESSED_CHOICES: dict[str, bool | None] = {"auto": None, "yes": True, "no": False}


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


def to_normalized_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] -> float32 [1, H, W] in [-1, 1], as ``ToTensor()`` then ``Normalize([0.5], [0.5])``.

    Same float32 operations in the same order (``/ 255``, ``- 0.5``, ``/ 0.5``), so
    the values are identical.
    """
    return torch.tensor(np.ascontiguousarray(image)).unsqueeze(0).float().div_(255).sub_(0.5).div_(0.5)


def _tensor(array: np.ndarray, dtype: type) -> torch.Tensor:
    """A tensor that owns a C-ordered copy of ``array``: one pass, also from a mirrored view."""
    return torch.from_numpy(np.array(array, dtype=dtype, order="C"))


def to_item(sample: Sample, filename: str) -> Item:
    """A prepared sample as the item tensors (copies: the sample's arrays may be views of stored data)."""
    return (
        to_normalized_tensor(sample.image),
        _tensor(sample.label, np.int64),
        filename,
        _tensor(sample.spatial_weights, np.float32),
        _tensor(sample.dist_map, np.float32),
    )


def prepare(
    sample: Sample, preprocessed: bool, transform: Transform | None, rng: np.random.Generator | None
) -> Sample:
    """A stored sample as training sees it: gamma + CLAHE if the image is raw (v1), then ``transform``."""
    if not preprocessed:
        sample = sample._replace(image=preprocess_image(sample.image))
    if transform is not None:
        sample = transform(sample, rng)
    return sample


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive int")
    return value


def ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else from an initialised ``torch.distributed``."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        rank = torch.distributed.get_rank() if rank is None else rank
        world_size = torch.distributed.get_world_size() if world_size is None else world_size
    elif rank is None and world_size is None:
        return 0, 1
    elif rank is None or world_size is None:
        raise ValueError(
            f"rank={rank!r} and world_size={world_size!r}: pass both, or neither and initialise torch.distributed"
        )
    world_size = positive_int(world_size, "world_size")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r}; expected an int in 0..{world_size - 1} for world_size={world_size}")
    return rank, world_size


def check_seed(seed: object, world_size: int) -> None:
    """A seed is a non-negative int or None, and every rank of a distributed run must pass the same one."""
    if seed is None and world_size > 1:
        raise ValueError(
            f"world_size={world_size} needs a seed: every rank must draw the same permutation "
            "to read a disjoint share. Pass the same seed=... on every rank"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed={seed!r}; expected a non-negative int or None")


def check_transform(transform: object) -> None:
    if transform is not None and not isinstance(transform, Transform):
        raise TypeError(
            f"transform is a {type(transform).__module__}.{type(transform).__qualname__}; expected a "
            "preprocessing.augment.Transform such as augment.TRAIN_AUGMENT. IrisDataset already "
            "normalises like ToTensor + Normalize([0.5], [0.5]), so drop the torchvision pipeline"
        )


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
        if isinstance(hf_dataset, datasets.IterableDataset):
            raise TypeError(
                "hf_dataset is a streamed datasets.IterableDataset (load_dataset(..., streaming=True)), which has "
                "no random access; use IrisIterableDataset for its items or IrisLoader for batches, which both "
                "read streams, or load the split without streaming=True"
            )
        if isinstance(hf_dataset, datasets.IterableDatasetDict):
            raise TypeError(
                "hf_dataset is a datasets.IterableDatasetDict, every split of a stream; expected one split, "
                "e.g. load_dataset(..., streaming=True)['train'], for IrisLoader or IrisIterableDataset"
            )
        if not isinstance(hf_dataset, datasets.Dataset):
            raise TypeError(
                f"hf_dataset is a {type(hf_dataset).__name__}; expected one split as a map-style "
                "datasets.Dataset, e.g. load_dataset(...)['train']"
            )
        check_transform(transform)
        require_columns(hf_dataset.column_names)
        self.dataset = hf_dataset
        self.split = split
        self.transform = transform
        self.preprocessed = resolve_preprocessed(hf_dataset, preprocessed)
        #: distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)
        self.num_classes = dist_channels(hf_dataset.data.column("dist_map"))
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None
        self._rows: ArrowRows | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        return self.item(index)

    def item(self, index: int, rng: np.random.Generator | None = None) -> Item:
        """The item of row ``index``, its augmentation drawing from ``rng``.

        ``rng=None`` draws from the dataset's own generator, as ``dataset[index]``
        does. Passing a generator makes an item reproducible on its own: the batches
        of :class:`IrisLoader` equal ``torch.stack`` of ``item(row, rng)`` with the
        loader's per-sample generators.
        """
        return to_item(*self.sample(index, rng))

    def sample(self, index: int, rng: np.random.Generator | None = None) -> tuple[Sample, str]:
        """Row ``index`` as NumPy arrays, preprocessed and, on the train split, augmented.

        The arrays may be read-only views of the Arrow data, or mirrored views after a
        flip: copy them before writing or handing them to torch. ``rng`` as in :meth:`item`.
        Safe to call from several threads with a generator each.
        """
        rows = len(self)
        if not -rows <= index < rows:
            raise IndexError(f"index {index} is out of range for an IrisDataset of {rows} rows")
        sample, filename = self._reader().read(index % rows)
        return self.prepare(sample, rng), filename

    def prepare(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """A stored sample preprocessed and, on the train split, augmented (``rng`` as in :meth:`item`)."""
        augment = self.transform is not None and self.split == "train"
        if augment and rng is None:
            rng = self._generator()
        return prepare(sample, self.preprocessed, self.transform if augment else None, rng)

    def _reader(self) -> ArrowRows:
        if self._rows is None:
            self._rows = ArrowRows(self.dataset, self.num_classes)
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

