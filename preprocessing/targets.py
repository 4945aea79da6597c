"""Training targets derived from the segmentation label: mask, edge weights, distance maps.

All functions are pure: arrays in, new arrays out, inputs never modified.

Semantics are those of the v1 data (``Conner/openeds-precomputed``), which followed
RITnet's OpenEDS code:

* config ``pupil``: ``label = uint8(raw == 3)``, two distance channels
  ``[sdf(label == 0), sdf(label == 1)]`` ("not pupil", "pupil");
* config ``full``: the raw 0..3 label and four channels ``sdf(label == i)``.

The distance transform is OpenCV's exact Euclidean one (``DIST_MASK_PRECISE``), snapped
to exact integer squared distances, and v1's formula is then evaluated in float64 and
cast to float32 once, as v1 did with ``scipy.ndimage.distance_transform_edt``: the
distance maps equal v1's bit for bit (the tests compare with ``array_equal`` against a
plain SciPy reference).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import cv2
import numpy as np

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


def _squared_edt_in_box(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """Squared Euclidean distance of each True pixel to the nearest False pixel, on a box.

    Returns ``(box, squared)``: ``squared`` (float32) holds the exact integer squared
    distances of ``mask[box]``, 0 on its False pixels; every pixel outside the box is
    False, so its distance is 0. ``mask`` must have a True
    and a False pixel (OpenCV has no defined answer for a mask without False pixels).

    The box is the bounding box of the True pixels grown by one pixel. That is
    exact: for a True pixel ``p`` and a False pixel ``q`` outside the box, clamping
    ``q`` onto the box's border gives a False pixel no farther from ``p``, so the
    nearest False pixel always lies inside the box.
    """
    box = _bounding_box(mask, pad=1)
    distance = cv2.distanceTransform(mask[box].view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # OpenCV's answer is the exact distance up to float32 rounding, but which way it
    # rounds varies from run to run (measured with OpenCV 5.0: a last-bit difference
    # between two processes and thread counts). Squared pixel distances are integers
    # below 2**20, and the error of float32 d*d stays below 0.15, so rounding d*d gives
    # the exact integer, the same in every run.
    np.multiply(distance, distance, out=distance)
    return box, np.rint(distance, out=distance)


@functools.lru_cache(maxsize=4)
def _edt_without_background(shape: tuple[int, int]) -> np.ndarray:
    """SciPy's answer for a mask with no False pixel at all.

    SciPy then measures every pixel's distance to the point one row above the
    top-left corner, ``(-1, 0)``. v1 went through SciPy, so an all-True mask (for
    example "not pupil" on a frame with no pupil) must give exactly this. It only
    depends on the shape, so it is computed once with SciPy and cached. SciPy's ndimage is
    imported here, not with the module: it costs a third of a second of start-up, which
    push.py's early failures do without, and only such a mask needs it (once per shape).
    """
    from scipy import ndimage

    out = ndimage.distance_transform_edt(np.ones(shape, bool))
    out.setflags(write=False)
    return out


def _diagonal(shape: tuple[int, ...]) -> float:
    h, w = shape
    return math.sqrt((h - 1) ** 2 + (w - 1) ** 2)


def _sdf_values(squared: np.ndarray, diagonal: float, *, inside: bool, out: np.ndarray) -> None:
    """v1's float32 ``sdf`` values at pixels whose squared distance is ``squared``, into ``out``.

    v1 computed ``(edt(~m) * ~m - (edt(m) - 1) * m) / diag`` in float64 and cast the
    result to float32 once. Outside the mask ``edt(m)`` is 0, so the value is exactly
    ``d / diag``; inside it ``edt(~m)`` is 0, so it is exactly ``(0.0 - (d - 1)) / diag``
    (``+0.0`` on the boundary, as in v1). The distance ``d`` is the correctly rounded
    float64 square root of an exact integer, as SciPy's, and the rest is v1's arithmetic
    in float64, so the cast gives v1's float32 bit for bit.
    """
    distance = np.sqrt(squared, dtype=np.float64)
    if inside:
        distance -= 1
        np.subtract(0.0, distance, out=distance)
    np.divide(distance, diagonal, out=out, casting="same_kind")


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """v1's normalised signed distance map of a boolean mask, as float32.

    ``(edt(~m) * ~m - (edt(m) - 1) * m) / sqrt((h-1)**2 + (w-1)**2)`` with SciPy's
    ``distance_transform_edt``, computed in float64 and cast to float32 once, as v1
    did: positive outside the class, 0 on its boundary pixels and negative deeper in.
    An absent class gives all zeros (v1 skipped it); a class covering the whole frame
    gives SciPy's defined all-True answer. Bit-exact to v1.
    """
    return dist_map(np.asarray(mask, dtype=bool).view(np.uint8), 2)[1]


def dist_map(label: np.ndarray, num_classes: int) -> np.ndarray:
    """``signed_distance(label == i)`` for each class ``i < num_classes``: float32[C, H, W].

    Every channel needs, at each pixel, its distance to the class (outside it) or to
    the nearest pixel of another class (inside it). The second is the minimum of the
    first over the other classes, so one distance transform per class present gives
    every channel: half the transforms of computing ``edt(m)`` and ``edt(~m)`` for
    each class, with the same numbers. Distances stay exact integers (squared) until
    :func:`_sdf_values` turns them into v1's float32 values, bit for bit.
    """
    label = np.asarray(label)
    shape = label.shape
    # np.empty, not np.zeros: calloc hands out fresh pages, and first writes to fresh
    # pages are several times slower here than writes to reused memory.
    out = np.empty((num_classes, *shape), np.float32)
    masks = [label == i for i in range(num_classes)]
    present = [i for i, mask in enumerate(masks) if mask.any()]
    for i in set(range(num_classes)) - set(present):
        out[i].fill(0)  # an absent class: all zeros, as v1
    if len(present) == 1:  # one class covers the frame: SciPy's answer, v1's formula in float64
        out[present[0]] = (0.0 - (_edt_without_background(shape) - 1)) / _diagonal(shape)
        return out
    diagonal = _diagonal(shape)
    # Each pixel's squared distance to the nearest pixel of class i (0 on the class), on a box.
    squared = {i: _squared_edt_in_box(~masks[i]) for i in present}
    if num_classes == 2:
        # Each pixel lies outside one class and inside the other, and each squared
        # distance is 0 on its own class, so their sum is the one distance a pixel needs
        # in both channels: on class 0, channel 1's outside value and channel 0's inside
        # value; on class 1, the other way round.
        both = _on_frame(*squared[1], shape)
        box, to_background = squared[0]
        both[box] += to_background
        _sdf_values(both, diagonal, inside=False, out=out[1])
        _sdf_values(both, diagonal, inside=True, out=out[0])
        box = _bounding_box(masks[1], pad=0)
        on_class_1 = masks[1][box]
        channel_1 = out[1][box].copy()
        np.copyto(out[1][box], out[0][box], where=on_class_1)
        np.copyto(out[0][box], channel_1, where=on_class_1)
        return out
    to_class = {i: _on_frame(*squared[i], shape) for i in present}
    for j in present:
        _sdf_values(to_class[j], diagonal, inside=False, out=out[j])  # outside class j: the distance to it
        # Inside class j: the distance to the nearest pixel of another class.
        box = _bounding_box(masks[j], pad=0)
        others = [to_class[i][box] for i in present if i != j]
        nearest_other = np.minimum(others[0], others[1]) if len(others) > 1 else others[0].copy()
        for other in others[2:]:
            np.minimum(nearest_other, other, out=nearest_other)
        values = np.empty(nearest_other.shape, np.float32)
        _sdf_values(nearest_other, diagonal, inside=True, out=values)
        np.copyto(out[j][box], values, where=masks[j][box])
    return out


def _on_frame(box: tuple[slice, slice], values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``values`` of ``box`` placed on a frame of ``shape`` that is 0 elsewhere (``values`` itself if it fills it)."""
    if values.shape == shape:
        return values
    frame = np.empty(shape, values.dtype)  # not np.zeros: see dist_map
    frame.fill(0)
    frame[box] = values
    return frame


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
