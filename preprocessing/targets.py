"""Training targets derived from the segmentation label: mask, edge weights, distance maps.

All functions are pure: arrays in, new arrays out, inputs never modified.

Semantics are those of the v1 data (``Conner/openeds-precomputed``), which followed
RITnet's OpenEDS code:

* config ``pupil``: ``label = uint8(raw == 3)``, two distance channels
  ``[sdf(label == 0), sdf(label == 1)]`` ("not pupil", "pupil");
* config ``full``: the raw 0..3 label and four channels ``sdf(label == i)``.

The distance transform is OpenCV's exact Euclidean one (``DIST_MASK_PRECISE``), which
gives the same distances as ``scipy.ndimage.distance_transform_edt`` up to float32
rounding (the max error after normalisation is below 1e-7; the tests hold it to 1e-6
against a float64 SciPy reference).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import cv2
import numpy as np
from scipy import ndimage

PUPIL_CLASS = 3
NUM_CLASSES = 4
EDGE_WEIGHT = 20.0

# The v1 script called ``cv2.dilate(edges, (3, 3), iterations=1)``. OpenCV takes the
# tuple as the *kernel* array, not a size: a 2x1 column of non-zeros, anchored at its
# bottom element. Each edge pixel therefore also marks the pixel directly below it;
# nothing grows sideways. v1 data has this quirk and v2 keeps it bit-exact (pinned by
# ``tests/test_targets.py::test_spatial_weights_golden``).
V1_DILATE_KERNEL = np.ones((2, 1), np.uint8)


def pupil_label(raw_label: np.ndarray) -> np.ndarray:
    """Binary pupil mask of the v1/v2 ``pupil`` config: ``uint8(raw_label == 3)``."""
    return (raw_label == PUPIL_CLASS).astype(np.uint8)


def spatial_weights(label: np.ndarray, *, binary: bool) -> np.ndarray:
    """Edge weights: 20 on the (quirkily dilated) Canny edges of ``label``, else 0.

    Equals the v1 formula bit for bit::

        cv2.dilate(cv2.Canny(edge_input, 0, 3) / 255, (3, 3), iterations=1) * 20

    where ``edge_input`` is ``label * 255`` for the binary pupil label
    (``binary=True``) and the raw 0..3 label for the ``full`` config
    (``binary=False``). See :data:`V1_DILATE_KERNEL` for the ``(3, 3)`` quirk.
    Returns float32 with values {0, 20}.
    """
    label = np.ascontiguousarray(label, dtype=np.uint8)
    weights = np.zeros(label.shape, np.float32)
    # Edges only occur around non-zero pixels. Canny (3x3 Sobel, non-maximum
    # suppression, hysteresis) and the 2x1 dilate look at most a few pixels away, so
    # working on the bounding box padded by 4 gives the same pixels, much faster.
    box = _bounding_box(label, pad=4)
    if box is None:
        return weights
    crop = label[box]
    edges = cv2.Canny(crop * np.uint8(255) if binary else crop, 0, 3)
    grown = cv2.dilate(edges, V1_DILATE_KERNEL, iterations=1)
    weights[box][grown > 0] = EDGE_WEIGHT
    return weights


def _bounding_box(mask: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """Slices of the bounding box of ``mask``'s non-zero pixels grown by ``pad``, clipped."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)),
        slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)),
    )


def _edt_in_box(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """Euclidean distance of each True pixel to the nearest False pixel, on a box.

    Returns ``(box, distances)``: the distances (float32) are those of ``mask[box]``
    and are 0 everywhere outside the box. ``mask`` must have a True and a False
    pixel (OpenCV has no defined answer for a mask without False pixels).

    The box is the bounding box of the True pixels grown by one pixel. That is
    exact: for a True pixel ``p`` and a False pixel ``q`` outside the box, clamping
    ``q`` onto the box's border gives a False pixel no farther from ``p``, so the
    nearest False pixel always lies inside the box.
    """
    box = _bounding_box(mask, pad=1)
    distance = cv2.distanceTransform(mask[box].view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # OpenCV's answer is exact up to float32 rounding, but which way it rounds varies
    # from run to run (measured with OpenCV 5.0: a last-bit difference between two
    # processes). Squared pixel distances are integers below 2**20, and the error of
    # float32 d*d stays below 0.15, so rounding d*d and taking the correctly rounded sqrt gives
    # the exact float32 distance, the same in every run.
    np.multiply(distance, distance, out=distance)
    np.rint(distance, out=distance)
    return box, np.sqrt(distance, out=distance)


@functools.lru_cache(maxsize=4)
def _edt_without_background(shape: tuple[int, int]) -> np.ndarray:
    """SciPy's answer for a mask with no False pixel at all.

    SciPy then measures every pixel's distance to the point one row above the
    top-left corner, ``(-1, 0)``. v1 went through SciPy, so an all-True mask (for
    example "not pupil" on a frame with no pupil) must give exactly this. It only
    depends on the shape, so it is computed once with SciPy and cached.
    """
    out = ndimage.distance_transform_edt(np.ones(shape, bool))
    out.setflags(write=False)
    return out


def _diagonal(shape: tuple[int, ...]) -> float:
    h, w = shape
    return math.sqrt((h - 1) ** 2 + (w - 1) ** 2)


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """v1's normalised signed distance map of a boolean mask, as float32.

    ``(edt(~m) * ~m - (edt(m) - 1) * m) / sqrt((h-1)**2 + (w-1)**2)`` with SciPy's
    ``distance_transform_edt``: positive outside the class, 0 on its boundary pixels
    and negative deeper in. An absent class gives all zeros (v1 skipped it); a class
    covering the whole frame gives SciPy's defined all-True answer.
    """
    return dist_map(np.asarray(mask, dtype=bool).view(np.uint8), 2)[1]


def dist_map(label: np.ndarray, num_classes: int) -> np.ndarray:
    """``signed_distance(label == i)`` for each class ``i < num_classes``: float32[C, H, W].

    Every channel needs, at each pixel, its distance to the class (outside it) or to
    the nearest pixel of another class (inside it). The second is the minimum of the
    first over the other classes, so one distance transform per class present gives
    every channel: half the transforms of computing ``edt(m)`` and ``edt(~m)`` for
    each class, with the same numbers.
    """
    label = np.asarray(label)
    shape = label.shape
    out = np.empty((num_classes, *shape), np.float32)
    masks = [label == i for i in range(num_classes)]
    present = [i for i, mask in enumerate(masks) if mask.any()]
    for i in set(range(num_classes)) - set(present):
        out[i].fill(0)  # an absent class: all zeros, as v1
    if len(present) == 1:  # one class covers the frame
        np.divide(1.0 - _edt_without_background(shape), _diagonal(shape), out=out[present[0]], casting="same_kind")
        return out
    # to_class[i]: each pixel's distance to the nearest pixel of class i (0 on the class).
    to_class: dict[int, np.ndarray] = {}
    for i in present:
        box, distance = _edt_in_box(~masks[i])
        if distance.shape == shape:
            to_class[i] = distance
        else:
            to_class[i] = np.zeros(shape, np.float32)
            to_class[i][box] = distance
    inv_diag = np.float32(1.0 / _diagonal(shape))
    # With two classes, the unnormalised maps of the two sum to 1: channel 0 is 1/diag - channel 1.
    for j in [1] if num_classes == 2 else present:
        np.multiply(to_class[j], inv_diag, out=out[j])  # outside class j
        box = _bounding_box(masks[j], pad=0)
        others = [to_class[i][box] for i in present if i != j]
        inner = np.minimum(others[0], others[1]) if len(others) > 1 else others[0].copy()
        for other in others[2:]:
            np.minimum(inner, other, out=inner)
        np.subtract(np.float32(1), inner, out=inner)  # inside class j: 1 - distance to the others
        inner *= inv_diag
        np.copyto(out[j][box], inner, where=masks[j][box])
    if num_classes == 2:
        np.subtract(inv_diag, out[1], out=out[0])
    return out


class Targets(NamedTuple):
    """The three per-frame training targets of one config."""

    label: np.ndarray  # uint8[H, W]
    spatial_weights: np.ndarray  # float32[H, W]
    dist_map: np.ndarray  # float32[C, H, W]


def compute_targets(raw_label: np.ndarray, config: Literal["pupil", "full"]) -> Targets:
    """All targets of one frame from its raw 0..3 label, for config ``pupil`` or ``full``."""
    if config == "pupil":
        label = pupil_label(raw_label)
        return Targets(label, spatial_weights(label, binary=True), dist_map(label, 2))
    if config == "full":
        label = np.ascontiguousarray(raw_label, dtype=np.uint8)
        return Targets(label, spatial_weights(label, binary=False), dist_map(label, NUM_CLASSES))
    raise ValueError(f"unknown config {config!r}; expected 'pupil' or 'full'")
