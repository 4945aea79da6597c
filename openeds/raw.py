"""Reader for the raw OpenEDS tree as Kaggle ships it (``soumicksarker/openeds-dataset``).

Layout::

    openEDS/openEDS/{train,validation,test}/images/<stem>.png   8-bit grayscale, 400 x 640
    openEDS/openEDS/{train,validation,test}/labels/<stem>.npy   (400, 640), 0 bg, 1 sclera, 2 iris, 3 pupil
    openEDS/openEDS/{train,validation,test}/masks/<stem>.png    renderings of the labels (not read)

``data_dir`` may point at the folder holding ``openEDS/``, at ``openEDS/``, at
``openEDS/openEDS/`` or directly at a folder holding the split folders. Anything
else in the tree (for example ``S_*`` subject folders) is ignored.

The one policy for bad input is an error: every problem with the input raises
:class:`RawDataError` with a one-line message naming the file, what was found and what was
expected. What is not an error but worth knowing (images left out with
``on_missing_label="skip"``, labels without an image) is counted in :meth:`SplitListing.notes`,
which the callers print as warnings. In particular:

* **Suffixes** are matched ignoring case, alike for images and labels: ``000012.PNG`` is an
  image and ``000012.NPY`` its label. Two files of one folder whose stems are equal once the
  suffix is normalised (``000012.png`` and ``000012.PNG``) are two files for one frame; the
  reader cannot tell which is right, and taking both would give the frame two rows, so that is
  an error naming both, never a silent choice.
* **Split folders**: at the level where split folders are found, each folder named like a split
  must hold both ``images/`` and ``labels/``; one with only one of them, or neither, is an error
  rather than a split left out without a word. An ``images/`` folder without a PNG is an error too.
* **Label dtypes**: a label holds integer class ids, so its dtype must be an integer one, signed
  or unsigned, of any width or byte order (``uint8``, ``int32``, ``>i8``, ...), with values 0..3.
  A ``bool`` array is refused: it is a two-valued mask, not class ids, and read as classes it
  would turn every True into 1 (sclera) and leave the frame without a pupil. Floating-point
  labels are refused even when their values are whole: a float array is what resampling or a
  network's output gives, and turning 1.9999 or 2.5 into a class id would be a guess. Complex,
  ``timedelta64`` (which NumPy counts as an integer type) and structured dtypes are refused.
* **Headers before payloads**: a PNG's signature and IHDR chunk (size, bit depth, colour type,
  interlace) are checked before the file is read whole or decoded (:func:`check_png_header`),
  and an ``.npy``'s header (shape, dtype, order) and its size against the file's before its data
  is read, so a file declaring a huge image or array costs a few bytes of reading, not a decode
  or an allocation. Exactly the PNGs ``docs/data.md`` lists are accepted: 8-bit grayscale
  (colour type 0), 640 x 400, interlaced or not; nothing is converted (a 4-bit or 16-bit
  grayscale, RGB or palette PNG is refused, not rescaled).
* **Names in messages** go through :func:`openeds.names.shown`, so a file name holding a
  newline or another control character keeps the message on one line.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import sys
import tempfile
import threading
import tokenize
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import cv2
import numpy as np

from openeds.names import shown
from openeds.schema import HEIGHT, SPLITS, WIDTH

MissingLabelPolicy = Literal["error", "skip"]
MISSING_LABEL_POLICIES: tuple[str, ...] = ("error", "skip")

_LAYOUT_HINT = "openEDS/openEDS/{train,validation,test}/{images,labels}"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
#: file descriptor 2 belongs to the whole process: one redirection at a time
_STDERR_LOCK = threading.Lock()


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
    #: ``labels/*.npy`` files whose image does not exist; they are ignored
    orphan_labels: list[Path] = field(default_factory=list)

    def notes(self, split: str) -> list[str]:
        """One warning line per kind of file left out, with a count and an example."""
        notes = []
        if self.skipped:
            notes.append(f"{split}: skipped {len(self.skipped)} images without a label")
        if self.orphan_labels:
            example = self.orphan_labels[0]
            notes.append(
                f"{split}: ignored {len(self.orphan_labels)} labels without an image "
                f"(e.g. {shown(f'{example.parent.name}/{example.name}')})"
            )
        return notes


def find_split_dirs(data_dir: str | Path) -> dict[str, Path]:
    """Map each split present (train, validation, test, in that order) to its folder.

    The first level (``data_dir``, ``openEDS/``, ``openEDS/openEDS/``) holding a split folder
    with ``images/`` or ``labels/`` is the one read; there every folder named like a split must
    hold both (see the module docstring).
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise RawDataError(
            f"data dir {shown(root)} does not exist or is not a folder; expected the Kaggle tree {_LAYOUT_HINT}"
        )
    for base in (root, root / "openEDS", root / "openEDS" / "openEDS"):
        if any(os.path.lexists(base / s / sub) for s in SPLITS for sub in ("images", "labels")):
            found = {s: base / s for s in SPLITS if os.path.lexists(base / s)}
            for folder in found.values():
                _check_split_folder(folder)
            return found
    raise RawDataError(
        f"no split folders with images/ found under {shown(root)}; expected the Kaggle tree {_LAYOUT_HINT} "
        f"(pass the folder that holds openEDS/, or one of its levels)"
    )


def _check_split_folder(folder: Path) -> None:
    """A split folder holds the folders images/ and labels/, else the split would go missing without a word."""
    if not folder.is_dir():
        raise RawDataError(
            f"split {shown(folder)} is not a folder; expected a folder holding images/ and labels/ "
            f"({_LAYOUT_HINT}). Fix: move it out of the tree, or replace it with the split's folder"
        )
    there = [sub for sub in ("images", "labels") if (folder / sub).is_dir()]
    if len(there) == 2:
        return
    for sub in ("images", "labels"):
        if os.path.lexists(folder / sub) and sub not in there:
            raise RawDataError(
                f"{shown(folder / sub)} is not a folder; expected the folder of the split's {sub} ({_LAYOUT_HINT}). "
                f"Fix: replace it with the folder, or move the split {shown(folder)} out of the tree"
            )
    missing = [sub for sub in ("images", "labels") if sub not in there]
    has = f"has {there[0]}/ but no {missing[0]}/" if there else "holds neither images/ nor labels/"
    raise RawDataError(
        f"split folder {shown(folder)} {has}; expected both images/ and labels/ ({_LAYOUT_HINT}), "
        f"one label per image. Fix: restore {shown(folder / missing[0])}, or move {shown(folder)} out of the tree "
        f"to leave the split out"
    )


def _by_stem(folder: Path, suffix: str, role: str) -> dict[str, Path]:
    """The files of ``folder`` whose suffix is ``suffix`` ignoring case, by stem, in sorted order.

    Two files of one stem (``000012.png`` and ``000012.PNG``) are an error naming both.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.suffix.lower() != suffix:
            continue
        if path.stem in found:
            raise RawDataError(
                f"{role}s {shown(found[path.stem].name)} and {shown(path.name)} in {shown(folder)} are two files for "
                f"the frame {shown(path.stem)} (suffixes are matched ignoring case); expected one {suffix} file per "
                f"frame. Fix: remove the one that is not the frame's {role}"
            )
        found[path.stem] = path
    return found


def list_pairs(split_dir: str | Path, on_missing_label: MissingLabelPolicy = "error") -> SplitListing:
    """Pair ``images/<stem>.png`` with ``labels/<stem>.npy`` by stem (suffixes ignoring case), in sorted order.

    An image or label that is a folder, a broken symbolic link or another non-file is an
    error; labels without an image are left out and listed in ``orphan_labels``.
    """
    if on_missing_label not in MISSING_LABEL_POLICIES:
        raise ValueError(f"on_missing_label={on_missing_label!r}; expected one of {MISSING_LABEL_POLICIES}")
    split_dir = Path(split_dir)
    images = _by_stem(split_dir / "images", ".png", "image")
    for image in images.values():
        _require_file(image, "image", "an 8-bit grayscale PNG file")
    if not images:
        raise RawDataError(
            f"split folder {shown(split_dir / 'images')} holds no .png images; expected one PNG per frame"
        )
    labels_dir = split_dir / "labels"
    labels = _by_stem(labels_dir, ".npy", "label")
    pairs, skipped = [], []
    for stem, image in images.items():
        label = labels.get(stem)
        if label is not None:
            _require_file(label, "label", "a .npy file")
            pairs.append(Pair(stem, image, label))
        elif on_missing_label == "skip":
            skipped.append(image)
        else:
            raise RawDataError(
                f"image {shown(image)} has no label {shown(labels_dir / f'{stem}.npy')}{_same_stem(labels_dir, stem)}; "
                f"expected one .npy per image (use on_missing_label='skip' / --skip-unlabeled to leave such "
                f"images out)"
            )
    if not pairs:
        raise RawDataError(
            f"split folder {shown(split_dir)} has no labelled images ({len(skipped)} images without labels)"
        )
    return SplitListing(pairs, skipped, [label for stem, label in labels.items() if stem not in images])


def _same_stem(folder: Path, stem: str) -> str:
    """`` (labels/ holds 000012.npz, not a .npy)``: the files there named like the frame, if any."""
    if not folder.is_dir():
        return ""
    others = sorted(p.name for p in folder.iterdir() if p.name == stem or p.name.startswith(f"{stem}."))
    if not others:
        return ""
    listed = ", ".join(shown(name) for name in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return f" ({folder.name}/ holds {listed}, not a .npy)"


def _require_file(path: Path, role: str, expected: str) -> None:
    if path.is_file():
        return
    if path.is_symlink() and not path.exists():
        raise RawDataError(
            f"{role} {shown(path)} is a broken symbolic link (to {shown(os.readlink(path))}); expected {expected}. "
            f"Fix: restore what it points to, or replace the link with the file"
        )
    kind = "a folder" if path.is_dir() else "not a regular file"
    raise RawDataError(f"{role} {shown(path)} is {kind}; expected {expected}. Fix: replace it with the file")


def check_disjoint(split_dirs: Mapping[str, Path]) -> list[str]:
    """Refuse a frame that sits in two splits; return warnings for names two splits share.

    The same image bytes in two splits leak training data into evaluation: an error. The
    same stem with different images is only a naming clash (the ``filename`` column then
    does not tell the splits' rows apart): a warning with a count, since some copies of a
    dataset number their frames from 0 in every split. Only the shared stems are read.
    """
    stems = {split: _by_stem(folder / "images", ".png", "image") for split, folder in split_dirs.items()}
    notes = []
    names = list(stems)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(stems[first].keys() & stems[second].keys())
            same = [stem for stem in shared if _same_bytes(stems[first][stem], stems[second][stem])]
            if same:
                raise RawDataError(
                    f"image {shown(stems[first][same[0]].name)} is in both {first} and {second} with the same content "
                    f"({len(same)} identical frames in the two splits); expected each frame in one split only, since "
                    f"a frame in two splits leaks training data into evaluation. Fix: remove the duplicates from "
                    f"{shown(split_dirs[first] / 'images')} or {shown(split_dirs[second] / 'images')}"
                )
            if shared:
                notes.append(
                    f"{first} and {second}: {len(shared)} image names appear in both, with different images "
                    f"(e.g. {shown(stems[first][shared[0]].name)}); their rows share a filename"
                )
    return notes


#: frames named one by one per pair of splits by :func:`same_frames`; the rest are counted
SAME_FRAMES_SHOWN = 5


def same_frames(listings: Mapping[str, Sequence[Pair]], digests: Mapping[Pair, str]) -> list[str]:
    """Warnings for frames whose image and label bytes are those of a frame of another split, under another name.

    ``digests`` holds a content hash of each frame's image and label files (``openeds.materialize.digest_pair``,
    which ``push.py`` computes anyway); frames without one are not compared, so nothing is read here. A frame
    in an earlier split (train, validation, test) and its copy in a later one: one line each, naming both, up to
    :data:`SAME_FRAMES_SHOWN` a pair of splits, then one line counting the rest. Copies within one split are not
    said (a split may hold a frame twice), nor same names: :func:`check_disjoint` deals with those.
    """
    first: dict[str, tuple[str, Pair]] = {}
    copies: dict[tuple[str, str], list[tuple[Pair, Pair]]] = {}
    for split in sorted(listings, key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS)):
        for pair in listings[split]:
            digest = digests.get(pair)
            if digest is None:
                continue
            earlier, original = first.setdefault(digest, (split, pair))
            if earlier != split:
                copies.setdefault((earlier, split), []).append((original, pair))
    notes = []
    for (earlier, later), found in copies.items():
        leak = " (training data leaks into evaluation)" if earlier == "train" else ""
        for original, copy in found[:SAME_FRAMES_SHOWN]:
            notes.append(
                f"warning: {later} frame {shown(copy.image.name)} has the same image and label bytes as {earlier} "
                f"frame {shown(original.image.name)} ({shown(_in_split(copy))} and {shown(_in_split(original))}), so "
                f"{later} is not independent of {earlier}{leak}; expected each frame in one split only. "
                f"Fix: remove one of the two from the raw data"
            )
        if len(found) > SAME_FRAMES_SHOWN:
            notes.append(
                f"warning: {earlier} and {later}: {len(found) - SAME_FRAMES_SHOWN} more frames of {later} have the "
                f"same image and label bytes as a frame of {earlier} under another name ({len(found)} in all)"
            )
    return notes


def _in_split(pair: Pair) -> str:
    """``test/images/000012.png``: a frame's image as its split folder sees it."""
    return f"{pair.image.parent.parent.name}/{pair.image.parent.name}/{pair.image.name}"


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False  # unreadable: list_pairs and read_image name it


def read_image(path: str | Path) -> np.ndarray:
    """Decode an 8-bit grayscale 400 x 640 PNG into uint8[400, 640]; its header is checked before it is decoded.

    What is accepted is exactly what ``docs/data.md`` ("The raw files it reads") says: the PNG
    signature, then an intact IHDR chunk first (:func:`check_png_header`) declaring 640 x 400 pixels,
    bit depth 8, colour type 0 (grayscale), compression and filter method 0, interlace 0 or 1
    (Adam7 gives the same pixels); a file of at most ``MAX_PNG_BYTES``. Only then is the file read
    whole and decoded, so a hostile header costs 33 bytes of reading, never a decode; the decode
    must then give exactly the declared frame (image data that ends early is an error).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_PNG_HEAD_BYTES)
            check_png_header(head, size, path)
            if size > MAX_PNG_BYTES:
                raise RawDataError(
                    f"image {shown(path)} is {size:,} bytes; expected at most {MAX_PNG_BYTES:,} (a 640 x 400 8-bit "
                    f"frame takes under 260,000 bytes even stored uncompressed, so the rest is not the frame). "
                    f"Fix: replace it with the original PNG"
                )
            data = np.frombuffer(head + f.read(MAX_PNG_BYTES + 1 - len(head)), np.uint8)
    except OSError as e:
        raise RawDataError(f"image {shown(path)} cannot be read: {e.strerror or e}") from None
    image, said = _decode_quietly(data)
    if image is None:
        why = f": {said}" if said else ""
        raise RawDataError(
            f"image {shown(path)} is not a decodable PNG ({data.size} bytes{why}); expected an 8-bit grayscale PNG"
        )
    if image.shape != (HEIGHT, WIDTH) or image.dtype != np.uint8:  # the header said so: the decoder disagrees
        raise RawDataError(
            f"image {shown(path)} decodes to {image.dtype} of shape {image.shape}, not the 8-bit grayscale "
            f"({HEIGHT}, {WIDTH}) frame its PNG header declares; expected a PNG whose data matches its header. "
            f"Fix: replace it with the original PNG"
        )
    return image


#: the largest image file read: far above any encoding of one 640 x 400 8-bit frame (docs/data.md)
MAX_PNG_BYTES = 32 * 1024**2
#: signature, then the IHDR chunk: length, type, width, height, bit depth, colour type, compression,
#: filter and interlace methods, CRC (PNG 3rd edition, 11.2.1)
_IHDR = struct.Struct(">I4sIIBBBBBI")
_PNG_HEAD_BYTES = len(_PNG_SIGNATURE) + _IHDR.size
#: colour type -> (what it is, the bit depths PNG allows with it)
_PNG_COLOUR_TYPES = {
    0: ("grayscale", (1, 2, 4, 8, 16)),
    2: ("RGB", (8, 16)),
    3: ("palette", (1, 2, 4, 8)),
    4: ("grayscale with alpha", (8, 16)),
    6: ("RGB with alpha", (8, 16)),
}


def check_png_header(head: bytes, size: int, path: Path) -> None:
    """Refuse, from its first 33 bytes, a file that is not an accepted PNG (see :func:`read_image`).

    ``head``: the file's first bytes (at most 33 are looked at); ``size``: its size, for messages.
    """
    expected = "expected an 8-bit grayscale PNG"
    if head.startswith(_JPEG_SIGNATURE):
        raise RawDataError(
            f"image {shown(path)} holds JPEG data, not PNG ({size} bytes); expected the lossless 8-bit "
            f"grayscale PNG of OpenEDS (a JPEG copy has lost detail to compression). "
            f"Fix: replace it with the original PNG"
        )
    if not head.startswith(_PNG_SIGNATURE):
        start = f", starting {head[:8]!r}, not the PNG signature" if head else ""
        raise RawDataError(f"image {shown(path)} is not a decodable PNG ({size} bytes{start}); {expected}")
    if len(head) < _PNG_HEAD_BYTES:
        raise RawDataError(
            f"image {shown(path)} is not a decodable PNG ({size} bytes: it ends within the IHDR chunk that "
            f"must follow the signature); {expected}"
        )
    length, kind, width, height, depth, colour, compression, filtering, interlace, crc = _IHDR.unpack_from(
        head, len(_PNG_SIGNATURE)
    )
    if kind != b"IHDR" or length != 13:
        raise RawDataError(
            f"image {shown(path)} is not a decodable PNG ({size} bytes: its first chunk is {kind!r} of {length} "
            f"bytes, not the 13-byte IHDR a PNG starts with); {expected}"
        )
    if zlib.crc32(head[len(_PNG_SIGNATURE) + 4 : _PNG_HEAD_BYTES - 4]) != crc:
        raise RawDataError(
            f"image {shown(path)} is not a decodable PNG ({size} bytes: the CRC of its IHDR chunk does not match, "
            f"so its header is damaged); {expected}"
        )
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise RawDataError(
            f"image {shown(path)} is not a decodable PNG ({size} bytes: its IHDR declares compression method "
            f"{compression}, filter method {filtering} and interlace method {interlace}; PNG defines 0, 0 and 0 or 1); "
            f"{expected}"
        )
    name, depths = _PNG_COLOUR_TYPES.get(colour, (None, ()))
    if depth not in depths:
        raise RawDataError(
            f"image {shown(path)} is not a decodable PNG ({size} bytes: its IHDR declares bit depth {depth} with "
            f"colour type {colour}, a combination PNG does not define); {expected}"
        )
    if (depth, colour) != (8, 0):
        raise RawDataError(
            f"image {shown(path)} is a PNG of {depth}-bit {name} (bit depth {depth}, colour type {colour}); {expected} "
            f"(bit depth 8, colour type 0), as OpenEDS ships its frames; other kinds are not converted, since "
            f"their values would not be the frame's. Fix: replace it with the original frame"
        )
    if (height, width) != (HEIGHT, WIDTH):
        portrait = (height, width) == (WIDTH, HEIGHT)
        hint = " This looks like the 2019 portrait release, which v2 does not support" if portrait else ""
        raise RawDataError(
            f"image {shown(path)} has shape ({height}, {width}) (rows, cols); expected ({HEIGHT}, {WIDTH}).{hint}"
        )


def _decode_quietly(data: np.ndarray) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode``, and what it would have printed; on success that is printed after all.

    OpenCV's own ``[ WARN ...]`` lines are switched off through its log level; libpng prints
    ``libpng error: ...`` with ``fprintf(stderr)``, which no OpenCV setting reaches, so the
    process's stderr is pointed at a temporary file for the call. On failure what libpng
    said goes into the caller's one-line error instead of lines of its own before it. Image
    data beyond the declared frame (libpng's warnings of :data:`_BEYOND_THE_FRAME`) is a failure.
    """
    with _STDERR_LOCK:
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            with _stderr_captured() as said:
                image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        finally:
            cv2.utils.logging.setLogLevel(level)
    lines = (said[0] if said else "").splitlines(keepends=True)
    if image is not None and not any(excess in line for line in lines for excess in _BEYOND_THE_FRAME):
        sys.stderr.write("".join(lines))
        return image, ""
    # Anything else written meanwhile (another thread's output) is passed on.
    sys.stderr.write("".join(line for line in lines if not line.startswith("libpng")))
    libpng = [line.strip() for line in lines if line.startswith("libpng")]
    return None, "; ".join(line.removeprefix("libpng error: ").removeprefix("libpng warning: ") for line in libpng)


#: what libpng says, as a warning, of image data that runs on past the frame the header declares: such a
#: file holds something else than the frame, so it is refused (docs/data.md)
_BEYOND_THE_FRAME = ("Too much image data", "Extra compressed data")


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Point file descriptor 2 at a temporary file for the body; then the list holds what was written."""
    said: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to redirect
        yield said
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            said.append(capture.read().decode(errors="replace"))


def read_label(path: str | Path, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """Load a raw label ``.npy`` with classes 0..3 as uint8 of the image's ``shape`` (C order).

    The ``.npy`` header (``numpy.lib.format``: format version, shape, order, dtype) is read and
    checked first, and the file's size against it, so nothing is allocated for a header that
    declares another shape, a dtype that is not integer class ids, Python objects, or more or
    fewer bytes than the file holds. Only then is the payload (at most ``shape`` x 8 bytes) read.
    Any integer dtype of any byte order is accepted, in C or Fortran order (``np.save`` of an
    ``np.asfortranarray``); the module docstring says why the others are not.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if not head.startswith(_NPY_MAGIC):
                raise RawDataError(
                    f"label {shown(path)} {_what_it_is(head)}; expected one array saved with numpy.save (.npy). "
                    f"Fix: save the label with numpy.save"
                )
            f.seek(0)
            found_shape, fortran, dtype = _npy_header(f, path)
            _check_label_header(path, found_shape, dtype, shape)
            count = math.prod(shape)
            payload = count * dtype.itemsize
            size, offset = os.fstat(f.fileno()).st_size, f.tell()
            if size != offset + payload:
                what = "it is truncated" if size < offset + payload else "bytes follow the array"
                raise RawDataError(
                    f"label {shown(path)} is {size:,} bytes, but its .npy header declares {_one_line(dtype)} of shape "
                    f"{found_shape}: {offset:,} header bytes and {payload:,} of data, {offset + payload:,} in all "
                    f"({what}); expected a file of exactly that size. Fix: save the label again with numpy.save"
                )
            flat = np.fromfile(f, dtype, count)
    except OSError as e:
        raise RawDataError(f"label {shown(path)} cannot be read: {e.strerror or e}") from None
    if flat.size != count:  # the file shrank since its size was taken
        raise RawDataError(
            f"label {shown(path)} ended after {flat.size:,} of the {count:,} values its .npy header declares; "
            f"expected the whole array. Fix: save the label again with numpy.save"
        )
    label = flat.reshape(shape, order="F" if fortran else "C")
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi > 3:
        raise RawDataError(
            f"label {shown(path)} has values in {lo}..{hi}; expected class ids 0..3 (bg, sclera, iris, pupil)"
        )
    return np.ascontiguousarray(label, dtype=np.uint8)


#: the longest .npy header read (numpy's own default bound; np.save writes about 128 bytes for a label)
_MAX_NPY_HEADER = 10_000


def _npy_header(f: BinaryIO, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The ``(shape, fortran_order, dtype)`` of the ``.npy`` header ``f`` starts with; ``f`` is left at the data."""
    # numpy parses the header with ast.literal_eval, and a header from Python 2 with tokenize
    unreadable = (ValueError, SyntaxError, tokenize.TokenError, RecursionError)
    try:
        version = np.lib.format.read_magic(f)
    except unreadable as e:
        raise _unreadable_npy_header(path, e) from None
    readers = {(1, 0): (2, np.lib.format.read_array_header_1_0), (2, 0): (4, np.lib.format.read_array_header_2_0)}
    if version not in readers:
        raise RawDataError(
            f"label {shown(path)} is .npy format version {version[0]}.{version[1]}; expected 1.0 or 2.0, what "
            f"numpy.save writes for an array of integers (3.0 is only for structured dtypes). "
            f"Fix: save the label with numpy.save"
        )
    # numpy reads the whole header (its length a 2- or 4-byte field) before it checks that length
    width, read_header = readers[version]
    at = f.tell()
    length = int.from_bytes(f.read(width), "little")
    if length > _MAX_NPY_HEADER:
        raise RawDataError(
            f"label {shown(path)} has a .npy header of {length:,} bytes, by its length field; expected at most "
            f"{_MAX_NPY_HEADER:,} (numpy.save writes about 128 for a label). Fix: save the label again with numpy.save"
        )
    f.seek(at)
    try:
        return read_header(f, max_header_size=_MAX_NPY_HEADER)
    except unreadable as e:
        raise _unreadable_npy_header(path, e) from None


def _unreadable_npy_header(path: Path, error: Exception) -> RawDataError:
    return RawDataError(
        f"label {shown(path)} has a .npy header numpy cannot read ({_one_line(error)}); expected one array saved "
        f"with numpy.save. Fix: save the label again with numpy.save"
    )


def _check_label_header(path: Path, found: tuple[int, ...], dtype: np.dtype, shape: tuple[int, int]) -> None:
    """Refuse, from its header, a label whose shape is not ``shape`` or whose dtype is not of integer class ids."""
    if dtype.hasobject:
        raise RawDataError(
            f"label {shown(path)} holds an array of Python objects (pickled); expected integer class ids 0..3"
        )
    if found != shape:
        raise RawDataError(f"label {shown(path)} has shape {found}; expected {shape}, the shape of its image")
    if dtype == np.bool_:
        raise RawDataError(
            f"label {shown(path)} holds a bool array (a True/False mask); expected integer class ids 0..3 "
            f"(0 bg, 1 sclera, 2 iris, 3 pupil) in an integer dtype such as uint8, since read as classes every True "
            f"would be sclera and the frame would have no pupil. Fix: save the frame's 4-class label"
        )
    if dtype.kind not in "iu":  # kind, not issubdtype: NumPy counts timedelta64 as an integer type
        raise RawDataError(
            f"label {shown(path)} has dtype {_one_line(dtype)}; expected integer class ids 0..3 in an integer "
            f"dtype such as uint8 (floats are refused even when whole: their class would be a guess). "
            f"Fix: save the frame's label as integers"
        )


def _one_line(value: object) -> str:
    """An exception's or dtype's text on one line (NumPy's messages may span several)."""
    return " ".join(str(value).split())


def _what_it_is(head: bytes) -> str:
    """What a file that should be a .npy holds instead, from its first bytes."""
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(_ZIP_MAGIC):
        return "is an .npz archive (zip data, from numpy.savez) under a .npy name"
    if head.startswith(_PNG_SIGNATURE):
        return "holds PNG data, not a .npy array"
    if head[:1] == b"\x80":
        return "holds a Python pickle, not a .npy array"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"is not a .npy array (it starts with {head[:8]!r}, not {_NPY_MAGIC!r})"
    if all(c.isprintable() or c.isspace() for c in text):
        return f"is a text file (it starts with {text[:24]!r}), not a .npy array"
    return f"is not a .npy array (it starts with {head[:8]!r}, not {_NPY_MAGIC!r})"


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Read one frame: ``(raw image uint8[400, 640], raw label uint8[400, 640])``."""
    image = read_image(pair.image)
    return image, read_label(pair.label, image.shape)
