"""From a stored row to what training sees: preprocessed, augmented, as normalised tensors.

:func:`prepare` is the one place a stored sample becomes a training sample (gamma +
CLAHE for v1's raw images, then the augmentation), for every feed; :func:`to_item` and
:func:`to_normalized_tensor` give the tensors of an item as ``ToTensor`` +
``Normalize([0.5], [0.5])`` would, value for value.
"""

from __future__ import annotations

import numpy as np
import torch

from preprocessing.augment import Sample, Transform
from preprocessing.image import preprocess_image

#: ``(image float32[1, H, W] in [-1, 1], label int64[H, W], filename,
#: spatial_weights float32[H, W], dist_map float32[C, H, W])``
Item = tuple[torch.Tensor, torch.Tensor, str, torch.Tensor, torch.Tensor]


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


def prepare(sample: Sample, preprocessed: bool, transform: Transform | None, rng: np.random.Generator | None) -> Sample:
    """A stored sample as training sees it: gamma + CLAHE if the image is raw (v1), then ``transform``."""
    if not preprocessed:
        sample = sample._replace(image=preprocess_image(sample.image))
    if transform is not None:
        sample = transform(sample, rng)
    return sample
