"""Reader for the raw OpenEDS tree as Kaggle ships it (``soumicksarker/openeds-dataset``).

Layout::

    openEDS/openEDS/{train,validation,test}/images/<stem>.png   8-bit grayscale, 400 x 640
    openEDS/openEDS/{train,validation,test}/labels/<stem>.npy   (400, 640), 0 bg, 1 sclera, 2 iris, 3 pupil
    openEDS/openEDS/{train,validation,test}/masks/<stem>.png    renderings of the labels (not read)

``data_dir`` may point at the folder holding ``openEDS/``, at ``openEDS/``, at
``openEDS/openEDS/`` or directly at a folder holding the split folders. Anything
else in the tree (for example ``S_*`` subject folders) is ignored.

Every problem with the input raises :class:`RawDataError` with a one-line message
naming the file, what was found and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from openeds.schema import HEIGHT, SPLITS, WIDTH

MissingLabelPolicy = Literal["error", "skip"]
MISSING_LABEL_POLICIES: tuple[str, ...] = ("error", "skip")

_LAYOUT_HINT = "openEDS/openEDS/{train,validation,test}/{images,labels}"


class RawDataError(ValueError):
    """Bad raw input. The message is one line and names the offending file or value."""


@dataclass(frozen=True)
class Pair:
    """One frame of the raw data: its stem and where its image and label live."""

    stem: str
    image: Path
    label: Path


@dataclass(frozen=True)
class SplitListing:
    pairs: list[Pair]
    #: images skipped because they had no label (only with ``on_missing_label="skip"``)
    skipped: list[Path]


def find_split_dirs(data_dir: str | Path) -> dict[str, Path]:
    """Map each split present (train, validation, test, in that order) to its folder."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise RawDataError(
            f"data dir {root} does not exist or is not a folder; expected the Kaggle tree {_LAYOUT_HINT}"
        )
    for base in (root, root / "openEDS", root / "openEDS" / "openEDS"):
        found = {s: base / s for s in SPLITS if (base / s / "images").is_dir()}
        if found:
            return found
    raise RawDataError(
        f"no split folders with images/ found under {root}; expected the Kaggle tree {_LAYOUT_HINT} "
        f"(pass the folder that holds openEDS/, or one of its levels)"
    )


def list_pairs(split_dir: str | Path, on_missing_label: MissingLabelPolicy = "error") -> SplitListing:
    """Pair ``images/*.png`` with ``labels/<stem>.npy`` by stem, in sorted order."""
    if on_missing_label not in MISSING_LABEL_POLICIES:
        raise ValueError(f"on_missing_label={on_missing_label!r}; expected one of {MISSING_LABEL_POLICIES}")
    split_dir = Path(split_dir)
    images = sorted(p for p in (split_dir / "images").iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not images:
        raise RawDataError(f"split folder {split_dir / 'images'} holds no .png images; expected one PNG per frame")
    pairs, skipped = [], []
    for image in images:
        label = split_dir / "labels" / f"{image.stem}.npy"
        if label.is_file():
            pairs.append(Pair(image.stem, image, label))
        elif on_missing_label == "skip":
            skipped.append(image)
        else:
            raise RawDataError(
                f"image {image} has no label {label}; expected one .npy per image "
                f"(use on_missing_label='skip' / --skip-unlabeled to leave such images out)"
            )
    if not pairs:
        raise RawDataError(f"split folder {split_dir} has no labelled images ({len(skipped)} images without labels)")
    return SplitListing(pairs, skipped)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an 8-bit grayscale 400 x 640 PNG into uint8[400, 640]."""
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as e:
        raise RawDataError(f"image {path} cannot be read: {e.strerror or e}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise RawDataError(f"image {path} is not a decodable PNG ({data.size} bytes); expected an 8-bit grayscale PNG")
    if image.ndim != 2 or image.dtype != np.uint8:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise RawDataError(
            f"image {path} has {channels} channel(s) of {image.dtype}; expected 8-bit grayscale (1 channel of uint8)"
        )
    if image.shape != (HEIGHT, WIDTH):
        portrait = image.shape == (WIDTH, HEIGHT)
        hint = " This looks like the 2019 portrait release, which v2 does not support" if portrait else ""
        raise RawDataError(
            f"image {path} has shape {image.shape} (rows, cols); expected ({HEIGHT}, {WIDTH}).{hint}"
        )
    return image


def read_label(path: str | Path, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """Load a raw label ``.npy`` with classes 0..3 as uint8 of the image's ``shape``."""
    path = Path(path)
    try:
        label = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise RawDataError(f"label {path} is not a readable .npy array: {e}") from None
    if label.shape != shape:
        raise RawDataError(f"label {path} has shape {label.shape}; expected {shape}, the shape of its image")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise RawDataError(f"label {path} has dtype {label.dtype}; expected integer class ids 0..3")
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi > 3:
        raise RawDataError(f"label {path} has values in {lo}..{hi}; expected class ids 0..3 (bg, sclera, iris, pupil)")
    return label.astype(np.uint8, copy=False)


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Read one frame: ``(raw image uint8[400, 640], raw label uint8[400, 640])``."""
    image = read_image(pair.image)
    return image, read_label(pair.label, image.shape)
