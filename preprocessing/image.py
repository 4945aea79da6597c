"""Deterministic image preprocessing: gamma 0.8 then CLAHE (clipLimit 1.5, 8x8 tiles).

This is the exact transform VisionAssist's training code applied to every raw
OpenEDS frame, moved to precompute time. The training code did::

    table = 255.0 * np.linspace(0, 1, 256) ** 0.8      # float64
    img = np.uint8(cv2.LUT(raw, table))                 # np.uint8 truncates
    img = cv2.createCLAHE(clipLimit=1.5, tileGridSize=(8, 8)).apply(img)

``cv2.LUT`` with a float64 table yields float64 values, and ``np.uint8`` truncates
them towards zero, so the whole first step equals indexing with the table already
truncated to uint8 (:data:`GAMMA_LUT`). Doing it that way is bit-exact and avoids a
float64 image per frame.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

GAMMA = 0.8
CLAHE_CLIP_LIMIT = 1.5
CLAHE_TILE_GRID = (8, 8)

#: uint8 gamma table, truncated exactly as ``np.uint8(cv2.LUT(raw, float_table))`` did.
GAMMA_LUT: np.ndarray = (255.0 * np.linspace(0, 1, 256) ** GAMMA).astype(np.uint8)
GAMMA_LUT.setflags(write=False)

_local = threading.local()


def _clahe_op() -> cv2.CLAHE:
    # One CLAHE object per thread: creating it costs more than applying it to a frame,
    # but it is not thread-safe. ``apply`` keeps its working buffers in the object, so
    # two threads sharing one write into each other's tables (measured: 278 of 600
    # frames wrong with 2 threads). IrisLoader preprocesses v1 images in threads.
    op = getattr(_local, "clahe", None)
    if op is None:
        op = _local.clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILE_GRID)
    return op


def _check_gray_uint8(image: np.ndarray, name: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D uint8 grayscale image; got dtype {image.dtype} with shape {image.shape}"
        )


def gamma_correct(raw: np.ndarray) -> np.ndarray:
    """Apply the truncated gamma-0.8 table to a uint8 image. Returns a new array."""
    _check_gray_uint8(raw, "raw image")
    return cv2.LUT(raw, GAMMA_LUT)


def clahe(image: np.ndarray) -> np.ndarray:
    """CLAHE with clipLimit 1.5 on an 8x8 tile grid. Returns a new uint8 array."""
    _check_gray_uint8(image, "image")
    return _clahe_op().apply(image)


def preprocess_image(raw: np.ndarray) -> np.ndarray:
    """The full v2 image transform: gamma 0.8 (truncated to uint8), then CLAHE.

    Bit-exact to the training code's ``clahe.apply(np.uint8(cv2.LUT(raw, table)))``.
    The input is not modified.
    """
    return clahe(gamma_correct(raw))
