"""The pure core: NumPy functions shared by the v2 precompute and the training side.

``image`` (gamma + CLAHE), ``targets`` (label, weights, distance maps), ``augment``
(the training augmentations) and ``shapes`` (the frame size and channels). No file,
Hub or torch I/O happens here, and nothing of torch, ``datasets`` or ``openeds`` is
imported: the precompute (``openeds``, the builder, ``push.py``) and the training side
(the subpackage :mod:`preprocessing.training`, which reads the data) both only call
into these functions, so the precompute and the training-time fallback can never
drift apart. ``lint-imports`` checks this (``pyproject.toml``).
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

#: Version of what these functions compute. Bump it in the commit that changes any value
#: they return: a shard records it, and one built with another version is rebuilt.
#: 1: the first v2 build. 2: ``dist_map`` bit-exact to v1 (v1's formula in float64, one
#: float32 cast; 1 was within 1e-6, with 1-2 ulp differences in about 28% of values).
COMPUTE_VERSION = 2

__all__ = [
    "COMPUTE_VERSION",
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
