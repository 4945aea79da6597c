"""Plain reference implementations, written straight from FACTS.md section 1.

Slow and obvious on purpose: this is what v1's precompute script and the training
code computed. The fast code in ``preprocessing/`` is tested against it.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt


def image(raw: np.ndarray) -> np.ndarray:
    table = 255.0 * np.linspace(0, 1, 256) ** 0.8
    gamma = np.uint8(cv2.LUT(raw, table))
    return cv2.createCLAHE(clipLimit=1.5, tileGridSize=(8, 8)).apply(gamma)


def spatial_weights(canny_input: np.ndarray) -> np.ndarray:
    # Verbatim v1, including the (3, 3) passed as the dilate *kernel*.
    return (cv2.dilate(cv2.Canny(canny_input, 0, 3) / 255, (3, 3), iterations=1) * 20).astype(np.float32)


def sdf(mask: np.ndarray) -> np.ndarray:
    """float64 signed distance map of a boolean mask, as v1 computed it (before the float32 cast)."""
    h, w = mask.shape
    if not mask.any():
        return np.zeros(mask.shape, np.float64)
    neg = ~mask
    res = distance_transform_edt(neg) * neg - (distance_transform_edt(mask) - 1) * mask
    return res / np.sqrt((h - 1) ** 2 + (w - 1) ** 2)


def targets(raw_label: np.ndarray, config: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label uint8, spatial_weights float32, dist_map float64) of one frame."""
    if config == "pupil":
        label = (raw_label == 3).astype(np.uint8)
        weights = spatial_weights(label * 255)
        dist = np.stack([sdf(label == 0), sdf(label == 1)])
    else:
        label = raw_label.astype(np.uint8)
        weights = spatial_weights(label)
        dist = np.stack([sdf(label == i) for i in range(4)])
    return label, weights, dist
