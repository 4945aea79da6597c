"""Pure NumPy preprocessing shared by the v2 precompute and the training side.

No file, Hub or torch I/O happens here (the training side, ``preprocessing.training``
with ``arrow_rows``, ``loader`` and ``buffers``, reads the data and only calls into
these functions), so the precompute and the training-time fallback can never drift
apart.
"""

from preprocessing.image import GAMMA_LUT, clahe, gamma_correct, preprocess_image
from preprocessing.targets import (
    Targets,
    compute_targets,
    dist_map,
    pupil_label,
    signed_distance,
    spatial_weights,
)

__all__ = [
    "GAMMA_LUT",
    "Targets",
    "clahe",
    "compute_targets",
    "dist_map",
    "gamma_correct",
    "preprocess_image",
    "pupil_label",
    "signed_distance",
    "spatial_weights",
]
