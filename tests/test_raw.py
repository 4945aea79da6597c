"""The raw Kaggle-layout reader: finding splits, pairing files, and every bad-input error."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from openeds import raw


@pytest.fixture
def tree(sample_dir, tmp_path) -> Path:
    """A private, writable copy of the sample to damage."""
    return Path(shutil.copytree(sample_dir, tmp_path / "raw"))


def _split(tree: Path, split: str = "train") -> Path:
    return tree / "openEDS" / "openEDS" / split


@pytest.mark.parametrize("level", ["", "openEDS", "openEDS/openEDS"])
def test_find_split_dirs_at_every_level(sample_dir, level):
    found = raw.find_split_dirs(sample_dir / level)
    assert list(found) == ["train", "validation", "test"]
    assert found["train"] == sample_dir / "openEDS" / "openEDS" / "train"


def test_find_split_dirs_only_present_splits(tree):
    shutil.rmtree(_split(tree, "validation"))
    assert list(raw.find_split_dirs(tree)) == ["train", "test"]


def test_no_splits_is_an_error(tmp_path):
    with pytest.raises(raw.RawDataError, match=f"no split folders with images/ found under {tmp_path}"):
        raw.find_split_dirs(tmp_path)
    with pytest.raises(raw.RawDataError, match="does not exist"):
        raw.find_split_dirs(tmp_path / "missing")


def test_pairs_are_sorted_by_stem_and_ignore_other_files(tree):
    split = _split(tree)
    (split / "images" / "notes.txt").write_text("not an image")
    (split / "S_0").mkdir()  # subject folders are ignored
    listing = raw.list_pairs(split)
    stems = [p.stem for p in listing.pairs]
    assert stems == sorted(stems) and len(stems) == 8
    assert all(p.image.name == f"{p.stem}.png" and p.label.name == f"{p.stem}.npy" for p in listing.pairs)


def test_read_pair_dtypes(sample_dir):
    pair = raw.list_pairs(raw.find_split_dirs(sample_dir)["test"]).pairs[0]
    image, label = raw.read_pair(pair)
    assert image.dtype == np.uint8 and image.shape == (400, 640)
    assert label.dtype == np.uint8 and label.shape == (400, 640)


def _first(tree: Path) -> raw.Pair:
    return raw.list_pairs(_split(tree)).pairs[0]


def _write_label(pair: raw.Pair, array: np.ndarray) -> None:
    np.save(pair.label, array)


# (name, how to damage the first train frame, regex the one-line error must match)
DAMAGE = [
    ("corrupt_png", lambda p: p.image.write_bytes(b"\x89PNG\r\n\x1a\n garbage"), r"image .*\.png is not a decodable PNG"),
    ("empty_png", lambda p: p.image.write_bytes(b""), r"image .*\.png is not a decodable PNG \(0 bytes\)"),
    (
        "truncated_png",
        lambda p: p.image.write_bytes(p.image.read_bytes()[:200]),
        r"image .*\.png is not a decodable PNG",
    ),
    (
        "portrait_2019",
        lambda p: cv2.imwrite(str(p.image), np.zeros((640, 400), np.uint8)),
        r"has shape \(640, 400\) \(rows, cols\); expected \(400, 640\)\. This looks like the 2019 portrait release",
    ),
    (
        "wrong_size",
        lambda p: cv2.imwrite(str(p.image), np.zeros((200, 320), np.uint8)),
        r"has shape \(200, 320\) \(rows, cols\); expected \(400, 640\)\.$",
    ),
    (
        "color_png",
        lambda p: cv2.imwrite(str(p.image), np.zeros((400, 640, 3), np.uint8)),
        r"has 3 channel\(s\) of uint8; expected 8-bit grayscale",
    ),
    (
        "16bit_png",
        lambda p: cv2.imwrite(str(p.image), np.zeros((400, 640), np.uint16)),
        r"has 1 channel\(s\) of uint16; expected 8-bit grayscale",
    ),
    ("corrupt_label", lambda p: p.label.write_bytes(b"not numpy"), r"label .*\.npy is not a readable \.npy array"),
    (
        "label_shape",
        lambda p: _write_label(p, np.zeros((640, 400), np.uint8)),
        r"label .*\.npy has shape \(640, 400\); expected \(400, 640\), the shape of its image",
    ),
    (
        "label_values",
        lambda p: _write_label(p, np.full((400, 640), 7, np.int64)),
        r"label .*\.npy has values in 7\.\.7; expected class ids 0\.\.3",
    ),
    (
        "negative_label",
        lambda p: _write_label(p, np.full((400, 640), -1, np.int16)),
        r"label .*\.npy has values in -1\.\.-1; expected class ids 0\.\.3",
    ),
    (
        "float_label",
        lambda p: _write_label(p, np.zeros((400, 640), np.float32)),
        r"label .*\.npy has dtype float32; expected integer class ids",
    ),
]


@pytest.mark.parametrize("name,damage,message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_bad_frame_errors_name_the_file(tree, name, damage, message):
    pair = _first(tree)
    damage(pair)
    with pytest.raises(raw.RawDataError, match=message) as info:
        raw.read_pair(pair)
    text = str(info.value)
    assert "\n" not in text, f"{name}: error is not one line"
    assert pair.stem in text, f"{name}: error does not name the file"


def test_int_labels_of_any_width_are_accepted(tree):
    pair = _first(tree)
    original = np.load(pair.label)
    _write_label(pair, original.astype(np.int64))
    np.testing.assert_array_equal(raw.read_pair(pair)[1], original)


def test_missing_label_is_an_error_by_default(tree):
    pair = _first(tree)
    pair.label.unlink()
    with pytest.raises(raw.RawDataError, match=rf"image .*{pair.stem}\.png has no label .*{pair.stem}\.npy"):
        raw.list_pairs(_split(tree))


def test_missing_label_can_be_skipped_and_counted(tree):
    pair = _first(tree)
    pair.label.unlink()
    listing = raw.list_pairs(_split(tree), on_missing_label="skip")
    assert listing.skipped == [pair.image]
    assert len(listing.pairs) == 7 and pair.stem not in {p.stem for p in listing.pairs}


def test_split_without_images_is_an_error(tree):
    for image in (_split(tree, "test") / "images").iterdir():
        image.unlink()
    with pytest.raises(raw.RawDataError, match=r"test/images holds no \.png images"):
        raw.list_pairs(_split(tree, "test"))


def test_unreadable_image_file(tree):
    pair = _first(tree)
    pair.image.unlink()
    pair.image.mkdir()  # a folder where a file should be: reading fails
    with pytest.raises(raw.RawDataError, match=rf"image .*{pair.stem}\.png"):
        raw.read_image(pair.image)


def test_bad_policy_is_refused(sample_dir):
    with pytest.raises(ValueError, match="on_missing_label='maybe'"):
        raw.list_pairs(raw.find_split_dirs(sample_dir)["train"], on_missing_label="maybe")
