"""From a stored row to what training sees: preprocessed, augmented, as normalised tensors.

:func:`prepare` is the one place a stored sample becomes a training sample (gamma +
CLAHE for v1's raw images, then the augmentation), for every feed; :func:`to_item` and
:func:`to_normalized_tensor` give the tensors of an item as ``ToTensor`` +
``Normalize([0.5], [0.5])`` would, value for value.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from preprocessing.augment import SAMPLE_DTYPES, Sample, Transform
from preprocessing.image import preprocess_image

#: ``(image float32[1, H, W] in [-1, 1], label int64[H, W], filename,
#: spatial_weights float32[H, W], dist_map float32[C, H, W])``
Item = tuple[torch.Tensor, torch.Tensor, str, torch.Tensor, torch.Tensor]


def _normalise(values: torch.Tensor) -> torch.Tensor:
    """uint8 values -> float32 in [-1, 1] by ``ToTensor()`` then ``Normalize([0.5], [0.5])``'s float32 ops, in
    their order: ``/ 255``, ``- 0.5``, ``/ 0.5``."""
    return values.to(torch.float32).div_(255).sub_(0.5).div_(0.5)


#: uint8 -> the normalised float32 of ``ToTensor`` + ``Normalize([0.5], [0.5])``: the 256 values, computed once
#: with those very torch ops (on 256 values, so on one thread), then looked up per pixel.
IMAGE_TABLE: np.ndarray = _normalise(torch.arange(256, dtype=torch.uint8)).numpy()
IMAGE_TABLE.setflags(write=False)


def to_normalized_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] -> float32 [1, H, W] in [-1, 1], as ``ToTensor()`` then ``Normalize([0.5], [0.5])``.

    Each pixel is looked up in :data:`IMAGE_TABLE`, whose entries are those ops' own results, so the values are
    identical. A lookup, not torch's elementwise ops: those split a frame over torch's intra-op threads, and with
    another process busy on the cores each op waits for a thread that is not running (measured at a third of the
    one-thread speed, ``benchmarks/bench_dataset.py``). ``cv2.LUT`` runs a 400 x 640 frame on the calling thread
    (OpenCV splits only frames of 2^18 pixels or more) and reads a mirrored view as it is. torch's thread count is
    left as it is.
    """
    out = np.empty((1, *image.shape), np.float32)
    cv2.LUT(image, IMAGE_TABLE, dst=out[0])
    return torch.from_numpy(out)


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


class TransformOutputError(ValueError):
    """A transform returned what the feeds cannot batch: not a Sample, or an array of another shape or dtype."""


def prepare(sample: Sample, preprocessed: bool, transform: Transform | None, rng: np.random.Generator | None) -> Sample:
    """A stored sample as training sees it: gamma + CLAHE if the image is raw (v1), then ``transform``.

    What ``transform`` returns is checked (:func:`check_transformed`), here, where every feed passes.
    """
    if not preprocessed:
        sample = sample._replace(image=preprocess_image(sample.image))
    if transform is not None:
        stored, sample = sample, transform(sample, rng)
        check_transformed(sample, stored, transform)
    return sample


_EXPECTED = tuple(SAMPLE_DTYPES[name] for name in Sample._fields)


def check_transformed(result: object, stored: Sample, transform: object) -> None:
    """Raise :class:`TransformOutputError` unless ``result`` is a :class:`Sample` of NumPy arrays with ``stored``'s
    shapes and the dtypes of :data:`preprocessing.augment.SAMPLE_DTYPES`.

    A few comparisons a sample. Without them an array of another shape or dtype fails differently in each
    feed, or not at all: ``IrisLoader`` hands out a batch whose rows kept zeros, ``IrisDataset`` converts.
    """
    if isinstance(result, Sample):  # written out: about 1 us a sample, against 2 for a loop over the fields
        image, label, weights, dist = result
        u8, f32, array = _EXPECTED[0], _EXPECTED[2], np.ndarray
        if (
            isinstance(image, array)
            and isinstance(label, array)
            and isinstance(weights, array)
            and isinstance(dist, array)
            and image.dtype == u8
            and label.dtype == u8
            and weights.dtype == f32
            and dist.dtype == f32
            and image.shape == stored.image.shape
            and label.shape == stored.label.shape
            and weights.shape == stored.spatial_weights.shape
            and dist.shape == stored.dist_map.shape
        ):
            return
    name = type(transform).__qualname__
    if not isinstance(result, Sample):
        raise TransformOutputError(
            f"transform {name} returned {_kind(result)}; expected a "
            f"preprocessing.augment.Sample (image, label, spatial_weights, dist_map) of NumPy arrays. Fix the "
            f"transform to return sample._replace(...) or Sample(...)"
        )
    for field, array, dtype, before in zip(Sample._fields, result, _EXPECTED, stored, strict=True):
        if not isinstance(array, np.ndarray):
            found, fix = f"as {_kind(array)}", "return a NumPy array"
        elif array.dtype != dtype:
            found, fix = f"of dtype {array.dtype}", f"cast it with .astype(np.{dtype})"
        elif array.shape != before.shape:
            found, fix = f"of shape {array.shape}", f"give it back the shape {before.shape} (e.g. pad or resize a crop)"
        else:
            continue
        raise TransformOutputError(
            f"transform {name} returned {field} {found}; expected a {dtype} array of shape {before.shape}, the "
            f"stored row's: a transform keeps every array's shape and dtype (preprocessing.augment.SAMPLE_DTYPES). "
            f"Fix the transform: {fix}"
        )


def _kind(value: object) -> str:
    return "None" if value is None else f"a {type(value).__module__}.{type(value).__qualname__}"
