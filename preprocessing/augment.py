"""Training-time augmentations of one OpenEDS sample, on NumPy arrays.

These are the augmentations of VisionAssist's training code (``Line_augment``,
``Gaussian_blur`` and a horizontal flip, after RITnet's OpenEDS code), rewritten so
that

* every random draw comes from an explicit :class:`numpy.random.Generator` passed in
  by the caller (never the global ``random`` or ``np.random`` state);
* each augmentation draws its parameters once (:meth:`Augmentation.get_params`) and
  applies them to every target of the sample (:meth:`Augmentation.apply`). A flip
  therefore flips the image, the label, the spatial weights and the distance maps
  together. The old code decided whether the image had been flipped by comparing
  the label's top-left pixel, which is almost always 0, so its weights and distance
  maps were not flipped with the image;
* a flip gives the targets the precompute gives for the mirrored raw frame, which
  mirroring the stored targets does not (see :class:`HorizontalFlip`);
* inputs are never modified; outputs keep every array's dtype and shape.

Lines and blur change the image only: they imitate occlusions and defocus, and the
targets stay those of the clean frame, as in the original code.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

from preprocessing.targets import NUM_CLASSES, spatial_weights


class Sample(NamedTuple):
    """One frame and its targets, as the training code sees them."""

    image: np.ndarray  # uint8 [H, W], already gamma + CLAHE
    label: np.ndarray  # uint8 [H, W]
    spatial_weights: np.ndarray  # float32 [H, W]
    dist_map: np.ndarray  # float32 [C, H, W]; after a flip, a mirrored view (negative strides)


#: The dtype of each array of a :class:`Sample`: the stored columns' (v1 and v2), and what a
#: :class:`Transform` returns, with each array's shape unchanged (the training feeds check it)
SAMPLE_DTYPES: dict[str, np.dtype] = {
    "image": np.dtype(np.uint8),
    "label": np.dtype(np.uint8),
    "spatial_weights": np.dtype(np.float32),
    "dist_map": np.dtype(np.float32),
}


class Transform(ABC):
    """Anything :class:`preprocessing.training.IrisDataset` accepts as ``transform``.

    It returns a :class:`Sample` of NumPy arrays of the shapes it was given and the dtypes of
    :data:`SAMPLE_DTYPES` (views of any strides will do); the feeds refuse anything else with
    one error naming the array (``preprocessing.training.items.check_transformed``).
    """

    @abstractmethod
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Return the transformed sample, drawing all randomness from ``rng``."""


class Augmentation(Transform):
    """Applied with probability ``p``: draw the parameters once, apply them to every target.

    ``augmentation(sample, rng)`` draws ``rng.random() < p`` and, when it hits,
    ``params = get_params(rng, image_shape)`` then returns ``apply(sample, params)``.
    """

    p: float

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        return self.apply(sample, self.get_params(rng, sample.image.shape))

    @abstractmethod
    def get_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
        """Draw this augmentation's random parameters for an image of ``shape`` (H, W)."""

    @abstractmethod
    def apply(self, sample: Sample, params: Any) -> Sample:
        """Apply drawn parameters to the sample. Returns a new sample; the input is not modified."""


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability p={p!r} is outside [0, 1]")


Point = tuple[int, int]
Segment = tuple[Point, Point]

# cv2.line only takes coordinates that fit a C int. Within ~1e-7 rad of vertical an end
# point's |y| exceeds that (the original code then raised, roughly once in 10^7-10^8
# lines). Such an end point is moved along its own line to this distance from the
# centre, far outside the image, so the drawn pixels stay the same.
_FAR = float(2**30)


@dataclass(frozen=True)
class LineAugment(Augmentation):
    """White lines through a random centre, drawn on the image (VisionAssist's ``Line_augment``).

    The draws follow the original: the centre is ``f * (H, W)`` with one
    ``f ~ U[0.3, 0.7)`` for both axes; 1 to 9 lines; each line has an angle
    ``theta ~ U[0, pi)`` and runs from ``xc -/+ 50 * U[0, 1)`` to ``xc -/+ (50 + 150 * U[0, 1))``
    (each sign a fair coin) along ``y = (x - xc) * tan(theta) + yc``, with end points
    truncated to integers. Lines are drawn with value 255, 4 px thick.
    """

    p: float = 0.2
    max_lines: int = 9
    thickness: int = 4

    def __post_init__(self) -> None:
        _check_p(self.p)

    def get_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> list[Segment]:
        f = 0.3 + 0.4 * rng.random()
        yc, xc = f * shape[0], f * shape[1]
        segments = []
        for _ in range(int(rng.integers(1, self.max_lines + 1))):
            slope = math.tan(math.pi * rng.random())
            x1 = xc - 50 * rng.random() * (1 if rng.random() < 0.5 else -1)
            x2 = xc - (150 * rng.random() + 50) * (1 if rng.random() < 0.5 else -1)
            ends = []
            for x in (x1, x2):
                dy = (x - xc) * slope
                if abs(dy) > _FAR:
                    x, dy = xc + (x - xc) * _FAR / abs(dy), math.copysign(_FAR, dy)
                ends.append((int(x), int(yc + dy)))
            segments.append((ends[0], ends[1]))
        return segments

    def apply(self, sample: Sample, params: list[Segment]) -> Sample:
        image = sample.image.copy()
        for start, end in params:
            cv2.line(image, start, end, 255, self.thickness)
        return sample._replace(image=image)


@dataclass(frozen=True)
class GaussianBlur(Augmentation):
    """Blur the image with a 7x7 Gaussian, sigma an integer in 2..6 (VisionAssist's ``Gaussian_blur``)."""

    p: float = 0.2
    kernel_size: int = 7
    sigma_range: tuple[int, int] = (2, 6)

    def __post_init__(self) -> None:
        _check_p(self.p)

    def get_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> int:
        low, high = self.sigma_range
        return int(rng.integers(low, high + 1))

    def apply(self, sample: Sample, params: int) -> Sample:
        size = (self.kernel_size, self.kernel_size)
        return sample._replace(image=cv2.GaussianBlur(sample.image, size, params))


@dataclass(frozen=True)
class HorizontalFlip(Augmentation):
    """Mirror left to right, with the targets the precompute gives for the mirrored raw frame.

    The image and the label are mirrored. Mirroring the stored targets is not the
    same as computing them on the mirrored frame, so:

    * the spatial weights are recomputed from the mirrored label with
      :func:`preprocessing.targets.spatial_weights` (``binary`` for the 2-channel
      ``pupil`` config, the raw classes for the 4-channel ``full`` one). OpenCV's
      Canny breaks ties of a vertical step toward the left pixel, so mirrored weights
      sit one pixel off on vertical edges (64-888 pixels a frame on ordinary eyes
      against upstream RITnet; 62-276 on the synthetic eyes of the tests). Canny runs
      on the label's bounding box only, and only for the flipped half of the samples;
    * the distance maps are mirrored (a Euclidean distance transform is mirror
      symmetric), except when one class covers the whole frame, a closed eye's "not
      pupil" for example. SciPy then measures from a phantom point above the top-left
      corner, and a mirror would move it to the top-right (a difference of up to
      0.85). Such a map depends on the frame's shape only, so it stays as it is, and so
      do the all-zero maps of the absent classes.

    The distance maps come back as a mirrored view (negative strides), so that a
    consumer writes them where they go in one pass. Copy them (``np.ascontiguousarray``)
    before handing them to torch. The image itself went through CLAHE before the flip:
    CLAHE is not exactly mirror-symmetric (measured: 7% of the pixels of a synthetic eye
    differ by 1 grey level from CLAHE on the mirrored raw frame), and that is kept.
    """

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_p(self.p)

    def get_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> None:
        return None  # the coin drawn in __call__ is the only parameter

    def apply(self, sample: Sample, params: None = None) -> Sample:
        channels = sample.dist_map.shape[0]
        if channels not in (2, NUM_CLASSES):
            raise ValueError(
                f"dist_map has {channels} channels; expected 2 (config pupil) or {NUM_CLASSES} (config full), "
                "which say how to recompute the spatial weights of the mirrored label"
            )
        label = cv2.flip(sample.label, 1)
        low, high, _, _ = cv2.minMaxLoc(label)
        return Sample(
            image=cv2.flip(sample.image, 1),
            label=label,
            spatial_weights=spatial_weights(label, binary=channels == 2),
            dist_map=sample.dist_map if low == high else sample.dist_map[..., ::-1],
        )


@dataclass(frozen=True)
class Compose(Transform):
    """Apply transforms in order, each drawing from the same generator."""

    transforms: Sequence[Transform]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


#: VisionAssist's training augmentation, in its order: lines (p=0.2), blur (p=0.2), flip (p=0.5).
def order_rng(seed: int, epoch: int, part: int = 0, *, shards: bool = False) -> np.random.Generator:
    """The generator of an epoch's order: a map-style permutation or the shuffle buffer of
    stream part ``part``; with ``shards=True``, a stream's shard order.

    Row ``r`` of epoch ``e`` draws its augmentation from ``np.random.default_rng([seed, e, r])``.
    NumPy's ``SeedSequence`` ignores trailing zeros, so ``default_rng([seed, e])`` or
    ``default_rng([seed, e, p])`` would be the very stream of row 0 (or row ``p``): the order and
    that row's draws would be correlated. A spawn key gives each kind of order a stream of its own.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, part], spawn_key=(2 if shards else 1,)))


TRAIN_AUGMENT = Compose((LineAugment(), GaussianBlur(), HorizontalFlip()))
