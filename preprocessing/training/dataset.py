"""Map-style items of OpenEDS v1 and v2 data: :class:`IrisDataset`, for a ``DataLoader``.

:class:`IrisDataset` is a drop-in for VisionAssist's ``IrisDataset``: the same
``(hf_dataset, split, transform)`` arguments (``transform`` is now the augmentation;
the ``ToTensor`` + ``Normalize`` step is built in) and the same item ``(image, label,
filename, spatial_weights, dist_map)``, but

* **fast**: rows are read as zero-copy NumPy views of the Arrow columns (uint8 stays
  uint8, float32 stays float32), never through the default Python format, which
  turns every array into nested lists;
* **v1 and v2**: the data version is detected once from the columns
  (:class:`~preprocessing.training.source.MapRows`). v1 (flat
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

For training, :class:`~preprocessing.training.loader.IrisLoader` gives the same values
several times faster (docs/benchmarks.md has the figures, from one dated run).

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

import datasets
import numpy as np
import torch

from preprocessing.augment import Sample, Transform
from preprocessing.training.arguments import check_transform
from preprocessing.training.items import Item, prepare, to_item
from preprocessing.training.source import MapRows


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
            require that and raise :class:`~preprocessing.training.arrow_rows.DatasetFormatError`
            if the column disagrees.
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
        check_transform(transform)
        self._setup(MapRows(hf_dataset, preprocessed), split, transform, seed)

    @classmethod
    def from_rows(
        cls, rows: MapRows, split: str = "train", transform: Transform | None = None, seed: int | None = None
    ) -> IrisDataset:
        """An IrisDataset over a row source already made (``IrisLoader`` makes one, for itself and this)."""
        check_transform(transform)
        dataset = cls.__new__(cls)
        dataset._setup(rows, split, transform, seed)
        return dataset

    def _setup(self, rows: MapRows, split: str, transform: Transform | None, seed: int | None) -> None:
        #: the row source: the split's columns checked, v1 or v2 detected, the channels counted
        self.rows = rows
        self.split = split
        self.transform = transform
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None

    @property
    def dataset(self) -> datasets.Dataset:
        """The split the rows come from."""
        return self.rows.dataset

    @property
    def preprocessed(self) -> bool:
        """Whether the stored images already have gamma + CLAHE (v2); v1's raw images get it on the CPU."""
        return self.rows.preprocessed

    @property
    def num_classes(self) -> int:
        """Distance-map channels, which is also the number of label classes: 2 (pupil) or 4 (full)."""
        return self.rows.num_classes

    def __len__(self) -> int:
        return len(self.rows)

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
        sample, filename = self.rows.read(index % rows)
        return self.prepare(sample, rng), filename

    def prepare(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """A stored sample preprocessed and, on the train split, augmented (``rng`` as in :meth:`item`)."""
        augment = self.transform is not None and self.split == "train"
        if augment and rng is None:
            rng = self._generator()
        return prepare(sample, self.preprocessed, self.transform if augment else None, rng)

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
