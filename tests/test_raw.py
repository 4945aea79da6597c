"""The raw Kaggle-layout reader: finding splits, pairing files, and every bad-input error."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from openeds import raw
from openeds.materialize import digest_pair
from tests import reference

pytestmark = pytest.mark.datasets_independent("the raw Kaggle tree reader")


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


def _flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


# (name, how to damage the first train frame, regex the one-line error must match)
DAMAGE = [
    (
        "corrupt_png",
        lambda p: p.image.write_bytes(b"\x89PNG\r\n\x1a\n garbage"),
        r"image .*\.png is not a decodable PNG",
    ),
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
        r"is a PNG of 8-bit RGB \(bit depth 8, colour type 2\); expected an 8-bit grayscale PNG",
    ),
    (
        "16bit_png",
        lambda p: cv2.imwrite(str(p.image), np.zeros((400, 640), np.uint16)),
        r"is a PNG of 16-bit grayscale \(bit depth 16, colour type 0\); expected an 8-bit grayscale PNG",
    ),
    (
        "text_label",
        lambda p: p.label.write_bytes(b"not numpy"),
        r"label .*\.npy is a text file \(it starts with 'not numpy'\), not a \.npy array; expected one array saved",
    ),
    (
        "npz_label",
        lambda p: np.savez(p.label.open("wb"), label=np.zeros((400, 640), np.uint8)),
        r"label .*\.npy is an \.npz archive \(zip data, from numpy\.savez\) under a \.npy name",
    ),
    ("empty_label", lambda p: p.label.write_bytes(b""), r"label .*\.npy is empty \(0 bytes\)"),
    (
        "object_label",
        lambda p: np.save(p.label, np.array([{"a": 1}], dtype=object), allow_pickle=True),
        r"label .*\.npy holds an array of Python objects \(pickled\); expected integer class ids",
    ),
    (
        "truncated_label",
        lambda p: p.label.write_bytes(p.label.read_bytes()[:1000]),
        r"label .*\.npy is 1,000 bytes, but its \.npy header declares uint8 of shape \(400, 640\): 128 header bytes "
        r"and 256,000 of data, 256,128 in all \(it is truncated\); expected a file of exactly that size",
    ),
    (
        "jpeg_in_png",
        lambda p: p.image.write_bytes(cv2.imencode(".jpg", cv2.imread(str(p.image), cv2.IMREAD_UNCHANGED))[1]),
        r"image .*\.png holds JPEG data, not PNG \(\d+ bytes\); expected the lossless 8-bit grayscale PNG",
    ),
    (
        "not_a_png",
        lambda p: p.image.write_bytes(b"GIF89a and more"),
        r"image .*\.png is not a decodable PNG \(15 bytes, starting b'GIF89a a', not the PNG signature\)",
    ),
    (
        "crc_broken_png",
        lambda p: p.image.write_bytes(_flip_byte(p.image.read_bytes(), 200)),
        r"image .*\.png is not a decodable PNG \(\d+ bytes: [a-zA-Z ]+\); expected",  # what libpng said
    ),
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
def test_bad_frame_errors_name_the_file(tree, name, damage, message, capfd):
    pair = _first(tree)
    damage(pair)
    capfd.readouterr()
    with pytest.raises(raw.RawDataError, match=message) as info:
        raw.read_pair(pair)
    text = str(info.value)
    assert "\n" not in text, f"{name}: error is not one line"
    assert pair.stem in text, f"{name}: error does not name the file"
    # Nothing of OpenCV's or libpng's own ([ WARN ...], libpng error: ...) reaches the terminal.
    assert capfd.readouterr() == ("", ""), f"{name}: the decoder printed lines of its own"


def test_decoder_warnings_of_a_good_image_still_reach_stderr(tree, capfd):
    """Only a failed decode folds what libpng said into the error; a good image's warnings stay visible."""
    pair = _first(tree)
    png = pair.image.read_bytes()
    # An ancillary tEXt chunk with a wrong CRC after IHDR: libpng warns, drops it and decodes the image.
    body = b"Comment\x00hello"
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body) ^ 1)
    pair.image.write_bytes(png[:33] + chunk + png[33:])
    capfd.readouterr()
    image = raw.read_image(pair.image)
    assert image.shape == (400, 640)
    assert capfd.readouterr().err == "libpng warning: tEXt: CRC error\n"


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


def test_labels_without_an_image_are_ignored_and_counted(tree):
    split = _split(tree)
    image = sorted((split / "images").iterdir())[0]
    image.unlink()
    (split / "labels" / "notes.txt").write_text("not a label")  # only .npy files count as labels
    listing = raw.list_pairs(split)
    assert listing.orphan_labels == [split / "labels" / f"{image.stem}.npy"]
    assert len(listing.pairs) == 7
    assert listing.notes("train") == [f"train: ignored 1 labels without an image (e.g. labels/{image.stem}.npy)"]


def test_notes_count_skipped_images_too(tree):
    pair = _first(tree)
    pair.label.unlink()
    assert raw.list_pairs(_split(tree), on_missing_label="skip").notes("train") == [
        "train: skipped 1 images without a label"
    ]
    assert raw.list_pairs(_split(tree, "test")).notes("test") == []


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _broken_link(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("gone" + path.suffix))


@pytest.mark.parametrize(
    "role,make,message",
    [
        ("image", _folder, r"image .*/images/(?P<stem>\w+)\.png is a folder; expected an 8-bit grayscale PNG file"),
        (
            "image",
            _broken_link,
            r"image .*\.png is a broken symbolic link \(to .*gone\.png\); expected an 8-bit grayscale PNG file",
        ),
        ("label", _folder, r"label .*/labels/\w+\.npy is a folder; expected a \.npy file"),
        ("label", _broken_link, r"label .*\.npy is a broken symbolic link \(to .*gone\.npy\); expected a \.npy file"),
    ],
    ids=["image-folder", "image-broken-link", "label-folder", "label-broken-link"],
)
def test_a_file_that_is_not_a_file_is_an_error(tree, role, make, message):
    pair = _first(tree)
    make(pair.image if role == "image" else pair.label)
    with pytest.raises(raw.RawDataError, match=message) as info:
        raw.list_pairs(_split(tree), on_missing_label="skip")  # not "a missing label", whatever the policy
    assert pair.stem in str(info.value)


def test_a_link_to_a_file_is_fine(tree):
    pair = _first(tree)
    moved = pair.image.with_name("elsewhere.bin")
    pair.image.rename(moved)
    pair.image.symlink_to(moved)
    assert raw.list_pairs(_split(tree)).pairs[0] == pair


def test_the_same_frame_in_two_splits_is_an_error(tree):
    dirs = raw.find_split_dirs(tree)
    assert raw.check_disjoint(dirs) == []
    stem = sorted((dirs["train"] / "images").iterdir())[0].stem
    for split in ("validation", "test"):
        shutil.copy(dirs["train"] / "images" / f"{stem}.png", dirs[split] / "images")
        shutil.copy(dirs["train"] / "labels" / f"{stem}.npy", dirs[split] / "labels")
    expected = (
        rf"image {stem}.png is in both validation and test with the same content \(1 identical frames in the two "
        rf"splits\); expected each frame in one split only, since a frame in two splits leaks training data"
    )
    with pytest.raises(raw.RawDataError, match=rf"image {stem}.png is in both train and validation with the same"):
        raw.check_disjoint(dirs)
    with pytest.raises(raw.RawDataError, match=expected):
        raw.check_disjoint({s: dirs[s] for s in ("validation", "test")})


def test_the_same_name_for_different_frames_is_a_warning(tree):
    """Some copies number frames from 0 in every split: equal names, different images."""
    dirs = raw.find_split_dirs(tree)
    train, test = sorted((dirs["train"] / "images").iterdir()), sorted((dirs["test"] / "images").iterdir())
    for i, image in enumerate(test):
        image.rename(image.with_name(train[i].name))
        (dirs["test"] / "labels" / f"{image.stem}.npy").rename(dirs["test"] / "labels" / f"{train[i].stem}.npy")
    assert raw.check_disjoint(dirs) == [
        f"train and test: {len(test)} image names appear in both, with different images (e.g. {train[0].name}); "
        "their rows share a filename"
    ]


# --- names, suffixes, split folders and label dtypes (issue 14) -------------------------------


@pytest.fixture
def odd_tree(sample_dir, tmp_path) -> Path:
    """A copy of the sample under a folder whose name holds a newline and a terminal escape."""
    return Path(shutil.copytree(sample_dir, tmp_path / "raw\nco\x1bpy"))


@pytest.mark.parametrize("name,damage,message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_bad_frame_errors_stay_one_line_under_any_folder_name(odd_tree, name, damage, message, capfd):
    pair = raw.list_pairs(_split(odd_tree)).pairs[0]
    damage(pair)
    with pytest.raises(raw.RawDataError) as info:
        raw.read_pair(pair)
    text = str(info.value)
    assert text.isprintable(), f"{name}: {text!r} is not one printable line"
    assert r"raw\nco\x1bpy" in text, f"{name}: the folder is not shown escaped: {text}"


def test_shown_leaves_printable_names_alone_and_escapes_the_rest():
    from openeds.names import one_line, shown

    assert one_line("error: server said\n<html>\x1b[0m é") == "error: server said\\n<html>\\x1b[0m é"
    assert one_line("already one line: 'quoted' é") == "already one line: 'quoted' é"

    assert shown(Path("/data/openEDS/000012.png")) == "/data/openEDS/000012.png"
    assert shown("été 12.png") == "été 12.png"
    for odd in ("a\nb.png", "a\rb", "tab\there", "esc\x1b[2J", "line\u2028sep", "bad\udcffbyte"):
        assert shown(odd).isprintable() and shown(odd) == repr(odd), odd


@pytest.mark.parametrize("kind,names", [("images", ("000000000000.PNG",)), ("labels", ("000000000000.NPY",))])
def test_two_files_of_one_stem_are_an_error_naming_both(tree, kind, names):
    folder = _split(tree) / kind
    original = folder / ("000000000000.png" if kind == "images" else "000000000000.npy")
    shutil.copy(original, folder / names[0])
    with pytest.raises(raw.RawDataError) as info:
        raw.list_pairs(_split(tree))
    text = str(info.value)
    assert f"{kind[:-1]}s {names[0]} and {original.name} in {folder} are two files for the frame 000000000000" in text
    assert "suffixes are matched ignoring case" in text


def test_the_same_stems_in_images_are_an_error_for_check_disjoint_too(tree):
    images = _split(tree) / "images"
    shutil.copy(images / "000000000000.png", images / "000000000000.Png")
    with pytest.raises(raw.RawDataError, match="two files for the frame 000000000000"):
        raw.check_disjoint(raw.find_split_dirs(tree))


def test_suffixes_of_images_and_labels_are_matched_alike(tree):
    split = _split(tree)
    image, label = split / "images" / "000000000001.png", split / "labels" / "000000000001.npy"
    image.rename(image.with_name("000000000001.PNG"))
    label.rename(label.with_name("000000000001.NpY"))
    listing = raw.list_pairs(split)
    pair = next(p for p in listing.pairs if p.stem == "000000000001")
    assert (pair.image.name, pair.label.name) == ("000000000001.PNG", "000000000001.NpY")
    assert len(listing.pairs) == 8 and listing.orphan_labels == []
    assert raw.read_pair(pair)[1].shape == (400, 640)


def test_orphan_labels_of_any_suffix_case_are_counted(tree):
    split = _split(tree)
    (split / "images" / "000000000002.png").unlink()
    label = split / "labels" / "000000000002.npy"
    label.rename(label.with_name("000000000002.NPY"))
    assert raw.list_pairs(split).orphan_labels == [split / "labels" / "000000000002.NPY"]


def test_a_missing_label_names_the_files_of_that_stem_that_are_there(tree):
    split = _split(tree)
    label = split / "labels" / "000000000003.npy"
    with label.open("rb") as f:
        np.savez(split / "labels" / "000000000003.npz", label=np.load(f))
    label.unlink()
    with pytest.raises(raw.RawDataError) as info:
        raw.list_pairs(split)
    assert f"has no label {label} (labels/ holds 000000000003.npz, not a .npy); expected one .npy" in str(info.value)


@pytest.mark.parametrize(
    "remove,message",
    [
        ("images", r"split folder .*/test has labels/ but no images/; expected both images/ and labels/"),
        ("labels", r"split folder .*/test has images/ but no labels/; expected both images/ and labels/"),
        ("both", r"split folder .*/test holds neither images/ nor labels/; expected both"),
    ],
)
def test_a_split_folder_without_images_or_labels_is_an_error(tree, remove, message):
    split = _split(tree, "test")
    for sub in ("images", "labels") if remove == "both" else (remove,):
        shutil.rmtree(split / sub)
    with pytest.raises(raw.RawDataError, match=message) as info:
        raw.find_split_dirs(tree)
    assert "Fix: restore" in str(info.value) and "out of the tree" in str(info.value)


def test_a_file_where_a_split_or_its_images_should_be_is_an_error(tree):
    images = _split(tree, "validation") / "images"
    shutil.rmtree(images)
    images.write_text("not a folder")
    with pytest.raises(raw.RawDataError, match=r"validation/images is not a folder; expected the folder of the"):
        raw.find_split_dirs(tree)
    shutil.rmtree(_split(tree, "test"))
    _split(tree, "test").write_text("not a folder")
    images.unlink()
    images.mkdir()
    with pytest.raises(raw.RawDataError, match=r"split .*/test is not a folder; expected a folder holding images/"):
        raw.find_split_dirs(tree)


def test_an_empty_images_folder_is_an_error(tree):
    for image in (_split(tree, "validation") / "images").iterdir():
        image.unlink()
    assert list(raw.find_split_dirs(tree)) == ["train", "validation", "test"]
    with pytest.raises(raw.RawDataError, match=r"validation/images holds no \.png images"):
        raw.list_pairs(_split(tree, "validation"))


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((400, 640), bool), r"holds a bool array \(a True/False mask\); expected integer class ids 0\.\.3"),
        (np.zeros((400, 640), np.float16), r"has dtype float16; expected integer class ids 0\.\.3"),
        (np.ones((400, 640), np.float64) * 2, r"has dtype float64; expected integer class ids 0\.\.3"),
        (np.zeros((400, 640), np.complex64), r"has dtype complex64; expected integer class ids"),
        (np.zeros((400, 640), "m8[s]"), r"has dtype timedelta64\[s\]; expected integer class ids"),
        (np.zeros((400, 640), [("a", "u1")]), r"has dtype \[\('a', 'u1'\)\]; expected integer class ids"),
    ],
    ids=["bool", "float16", "whole-floats", "complex", "timedelta", "structured"],
)
def test_labels_that_are_not_integer_class_ids_are_refused(tree, array, message):
    pair = _first(tree)
    _write_label(pair, array)
    with pytest.raises(raw.RawDataError, match=message) as info:
        raw.read_pair(pair)
    assert pair.label.name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", ["u1", "i1", "<u2", ">i2", "<i4", ">u4", "<i8", ">u8"])
def test_integer_labels_of_every_width_and_byte_order_are_read(tree, dtype):
    pair = _first(tree)
    original = np.load(pair.label)
    _write_label(pair, original.astype(dtype))
    label = raw.read_pair(pair)[1]
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, original)


def test_names_with_a_newline_stay_one_line_in_every_listing_message(tree):
    split = _split(tree)
    odd = split / "images" / "000\n12.png"
    shutil.copy(split / "images" / "000000000000.png", odd)
    with pytest.raises(raw.RawDataError) as info:
        raw.list_pairs(split)
    assert str(info.value).isprintable() and r"'000\n12.png'" not in str(info.value)  # the whole path is one repr
    assert repr(str(odd)) in str(info.value)
    odd.unlink()
    (split / "labels" / "000\n13.npy").write_bytes((split / "labels" / "000000000000.npy").read_bytes())
    [note] = raw.list_pairs(split).notes("train")
    assert note == r"train: ignored 1 labels without an image (e.g. 'labels/000\n13.npy')"


# --- headers before payloads (issue 22): what a PNG or .npy header declares is checked first -------------------

#: a frame of every gray level, to compare decodes with exactly
FRAME = np.random.default_rng(22).integers(0, 256, (400, 640), dtype=np.uint8)
_IEND = reference.png_chunk(b"IEND", b"")


def _header_only(width: int, height: int, bit_depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    """A PNG of a header and no image data: a decoder fails on it, so a header error proves it was never decoded."""
    return reference.PNG_SIGNATURE + reference.ihdr(width, height, bit_depth, colour, interlace) + _IEND


def _ihdr_with(**fields: int) -> bytes:
    """The IHDR of a 640 x 400 8-bit grayscale PNG with some fields changed (struct offsets of PNG 11.2.1)."""
    values = {"width": 640, "height": 400, "depth": 8, "colour": 0, "compression": 0, "filter": 0, "interlace": 0}
    body = struct.pack(">IIBBBBB", *{**values, **fields}.values())
    return reference.png_chunk(b"IHDR", body)


# (id, the image file's bytes, regex the one-line error must match); none of them is decoded
PNG_REFUSED = [
    ("4-bit", _header_only(640, 400, bit_depth=4), r"is a PNG of 4-bit grayscale \(bit depth 4, colour type 0\)"),
    ("1-bit", reference.png(FRAME >> 7, bit_depth=1), r"is a PNG of 1-bit grayscale \(bit depth 1, colour type 0\)"),
    ("16-bit", _header_only(640, 400, bit_depth=16), r"is a PNG of 16-bit grayscale"),
    ("gray-alpha", _header_only(640, 400, colour=4), r"is a PNG of 8-bit grayscale with alpha \(bit depth 8, colour"),
    ("palette", _header_only(640, 400, colour=3), r"is a PNG of 8-bit palette \(bit depth 8, colour type 3\)"),
    ("rgba-16", _header_only(640, 400, 16, colour=6), r"is a PNG of 16-bit RGB with alpha"),
    ("641-wide", _header_only(641, 400), r"has shape \(400, 641\) \(rows, cols\); expected \(400, 640\)\.$"),
    ("huge", _header_only(2**31 - 1, 2**31 - 1), r"has shape \(2147483647, 2147483647\) \(rows, cols\); expected"),
    ("zero-rows", _header_only(640, 0), r"has shape \(0, 640\) \(rows, cols\); expected \(400, 640\)"),
    ("portrait", _header_only(400, 640), r"has shape \(640, 400\) .* This looks like the 2019 portrait release"),
    (
        "truncated-ihdr",
        reference.PNG_SIGNATURE + reference.ihdr(640, 400)[:20],
        r"not a decodable PNG \(28 bytes: it ends within the IHDR chunk that must follow the signature\)",
    ),
    (
        "ihdr-not-first",
        reference.PNG_SIGNATURE + reference.png_chunk(b"tEXt", b"a\x00b") + reference.ihdr(640, 400) + _IEND,
        r"its first chunk is b'tEXt' of 3 bytes, not the 13-byte IHDR a PNG starts with\)",
    ),
    (
        "ihdr-crc",
        reference.PNG_SIGNATURE + reference.ihdr(640, 400)[:-1] + b"\x00" + _IEND,
        r"the CRC of its IHDR chunk does not match, so its header is damaged",
    ),
    (
        "interlace-2",
        reference.PNG_SIGNATURE + _ihdr_with(interlace=2) + _IEND,
        r"declares compression method 0, filter method 0 and interlace method 2; PNG defines 0, 0 and 0 or 1",
    ),
    (
        "filter-1",
        reference.PNG_SIGNATURE + _ihdr_with(filter=1) + _IEND,
        r"compression method 0, filter method 1 and interlace method 0",
    ),
    ("depth-3", _header_only(640, 400, bit_depth=3), r"declares bit depth 3 with colour type 0, a combination PNG"),
    ("colour-type-1", _header_only(640, 400, colour=1), r"declares bit depth 8 with colour type 1, a combination"),
    ("rgb-4-bit", _header_only(640, 400, 4, colour=2), r"declares bit depth 4 with colour type 2, a combination"),
    ("bmp", cv2.imencode(".bmp", FRAME)[1].tobytes(), r"\(\d+ bytes, starting b'BM.*', not the PNG signature\)"),
    ("tiff", cv2.imencode(".tiff", FRAME)[1].tobytes(), r"starting b'II\*\\x00.*', not the PNG signature\)"),
    # the header is right; the data is not what it declares
    (
        "fewer-rows-than-declared",
        reference.png(FRAME[:399], header=reference.ihdr(640, 400)),
        r"is not a decodable PNG \(\d+ bytes: Not enough image data\)",
    ),
    (
        "more-rows-than-declared",
        reference.png(np.concatenate([FRAME, FRAME]), header=reference.ihdr(640, 400)),
        r"is not a decodable PNG \(\d+ bytes: IDAT: Too much image data\)",
    ),
    (
        "bytes-after-the-image-data",
        reference.PNG_SIGNATURE
        + reference.ihdr(640, 400)
        + reference.png_chunk(b"IDAT", reference.png(FRAME)[41:-16] + b"...")  # the first IDAT's zlib stream
        + _IEND,
        r"is not a decodable PNG \(\d+ bytes: .*Extra compressed data",
    ),
    (
        "narrower-than-declared",
        reference.png(FRAME[:, :320], header=reference.ihdr(640, 400)),
        r"is not a decodable PNG \(\d+ bytes: ",
    ),
]


@pytest.mark.parametrize("name,data,message", PNG_REFUSED, ids=[c[0] for c in PNG_REFUSED])
def test_a_png_is_refused_from_its_header_before_it_is_decoded(tree, name, data, message, capfd):
    pair = _first(tree)
    pair.image.write_bytes(data)
    capfd.readouterr()
    with pytest.raises(raw.RawDataError, match=message) as info:
        raw.read_image(pair.image)
    text = str(info.value)
    assert text.isprintable() and pair.image.name in text, text
    assert capfd.readouterr() == ("", ""), f"{name}: the decoder printed lines of its own"


def test_a_png_over_the_size_bound_is_refused_unread(tree):
    pair = _first(tree)
    with pair.image.open("wb") as f:
        f.write(reference.png(FRAME))
        f.truncate(raw.MAX_PNG_BYTES + 1)  # sparse: no 32 MiB written
    with pytest.raises(raw.RawDataError, match=rf"is {raw.MAX_PNG_BYTES + 1:,} bytes; expected at most "):
        raw.read_image(pair.image)


@pytest.mark.parametrize(
    "data",
    [
        reference.png(FRAME),
        reference.png(FRAME, interlace=1),
        # ancillary chunks change nothing: transparency, gamma and significant bits are not applied
        reference.png(
            FRAME,
            before_idat=(
                reference.png_chunk(b"tRNS", b"\x00\x07"),
                reference.png_chunk(b"gAMA", struct.pack(">I", 100000)),
                reference.png_chunk(b"sBIT", b"\x05"),
                reference.png_chunk(b"tEXt", b"Comment\x00synthetic"),
            ),
        ),
    ],
    ids=["plain", "interlaced", "ancillary-chunks"],
)
def test_the_accepted_pngs_give_their_samples_exactly(tree, data):
    pair = _first(tree)
    pair.image.write_bytes(data)
    image = raw.read_image(pair.image)
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, FRAME)


def _npy(header: dict, payload: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """An .npy file of ``header`` (descr, fortran_order, shape) and ``payload``, as numpy.lib.format writes one."""
    buffer = io.BytesIO()
    write = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    write(buffer, header)
    return buffer.getvalue() + payload


def _u8(shape: tuple[int, ...] = (400, 640), descr: str = "|u1", fortran: bool = False) -> dict:
    return {"descr": descr, "fortran_order": fortran, "shape": shape}


def _npy_text(header: str) -> bytes:
    """An .npy 1.0 file whose header is ``header``, padded as numpy pads it, and no data."""
    padded = header.ljust(-(-(10 + len(header) + 1) // 64) * 64 - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(padded)) + padded.encode("latin1")


ZEROS = bytes(400 * 640)
# (id, the label file's bytes, regex the one-line error must match)
NPY_REFUSED = [
    ("unicode", _npy(_u8(descr="<U3"), bytes(400 * 640 * 12)), r"has dtype <U3; expected integer class ids"),
    ("bytes", _npy(_u8(descr="|S1"), ZEROS), r"has dtype \|S1; expected integer class ids"),
    ("float-be", _npy(_u8(descr=">f4"), bytes(4 * 400 * 640)), r"has dtype >f4; expected integer class ids"),
    ("datetime", _npy(_u8(descr="<M8[s]"), bytes(8 * 400 * 640)), r"has dtype datetime64\[s\]; expected integer"),
    ("3-d", _npy(_u8((1, 400, 640)), ZEROS), r"has shape \(1, 400, 640\); expected \(400, 640\), the shape of its"),
    ("scalar", _npy(_u8(()), b"\x00"), r"has shape \(\); expected \(400, 640\)"),
    # what the header declares is refused before anything of that size is allocated or read
    ("huge-declared", _npy(_u8((2**40, 2**20), "<i8"), b""), r"has shape \(1099511627776, 1048576\); expected"),
    ("huge-of-right-shape", _npy(_u8(descr="|V100000"), b""), r"has dtype \|V100000; expected integer class ids"),
    (
        "int64-declared-uint8-stored",
        _npy(_u8(descr="<i8"), ZEROS),
        r"is 256,128 bytes, but its \.npy header declares int64 of shape \(400, 640\): 128 header bytes and "
        r"2,048,000 of data, 2,048,128 in all \(it is truncated\)",
    ),
    ("bytes-appended", _npy(_u8(), ZEROS + b"\x00"), r"256,000 of data, 256,128 in all \(bytes follow the array\)"),
    ("no-data", _npy(_u8(), b""), r"is 128 bytes, .*\(it is truncated\)"),
    ("version-3", b"\x93NUMPY\x03\x00" + _npy(_u8(), ZEROS)[8:], r"is \.npy format version 3\.0; expected 1\.0 or"),
    ("version-9", b"\x93NUMPY\x09\x00" + _npy(_u8(), ZEROS)[8:], r"is \.npy format version 9\.0; expected 1\.0 or"),
    ("header-not-a-dict", _npy_text("[1, 2, 3]"), r"has a \.npy header numpy cannot read \(.*\); expected one array"),
    (
        "header-bad-shape",
        _npy_text("{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 2)}"),
        r"has shape \(-1, 2\); expected \(400, 640\)",
    ),
    ("header-not-python", _npy_text("{'descr': '|u1', 'shape': (400, 640"), r"has a \.npy header numpy cannot read"),
    ("header-nested", _npy_text("(" * 4000 + ")" * 4000), r"has a \.npy header numpy cannot read"),
    ("header-null", _npy_text("{'descr': '|u1'\x00}"), r"has a \.npy header numpy cannot read"),
    ("magic-only", b"\x93NUMPY", r"has a \.npy header numpy cannot read \("),
    (
        "header-length-too-large",
        b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{" * 20000,  # never read, let alone parsed
        r"has a \.npy header of 2,147,483,648 bytes, by its length field; expected at most 10,000",
    ),
    (
        "header-of-20000-bytes",
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 20000) + b" " * 20000,
        r"has a \.npy header of 20,000 bytes, by its length field; expected at most 10,000 \(numpy\.save writes",
    ),
]


@pytest.mark.parametrize("name,data,message", NPY_REFUSED, ids=[c[0] for c in NPY_REFUSED])
def test_a_label_is_refused_from_its_npy_header_before_its_data_is_read(tree, name, data, message):
    pair = _first(tree)
    pair.label.write_bytes(data)
    with pytest.raises(raw.RawDataError, match=message) as info:
        raw.read_label(pair.label)
    text = str(info.value)
    assert text.isprintable() and pair.label.name in text, text


@pytest.mark.parametrize(
    "save",
    [
        lambda path, label: np.save(path, np.asfortranarray(label.astype(">u2"))),
        lambda path, label: path.write_bytes(_npy(_u8(descr=">i8"), label.astype(">i8").tobytes(), version=(2, 0))),
        lambda path, label: np.save(path, label.T.copy().T),  # a Fortran-ordered copy, saved in Fortran order
    ],
    ids=["fortran-big-endian", "version-2", "transposed-copy"],
)
def test_labels_in_every_order_and_format_version_read_exactly(tree, save):
    pair = _first(tree)
    original = np.load(pair.label)
    save(pair.label, original)
    label = raw.read_label(pair.label)
    assert label.dtype == np.uint8 and label.flags.c_contiguous
    np.testing.assert_array_equal(label, original)


# --- the same frame under another name in another split (issue 22) ---------------------------------------------


def _copy_frame(tree: Path, source: raw.Pair, split: str, stem: str, label: np.ndarray | None = None) -> None:
    folder = _split(tree, split)
    shutil.copy(source.image, folder / "images" / f"{stem}.png")
    if label is None:
        shutil.copy(source.label, folder / "labels" / f"{stem}.npy")
    else:
        np.save(folder / "labels" / f"{stem}.npy", label)


def test_a_frame_under_another_name_in_another_split_is_a_warning_naming_both(tree):
    dirs = raw.find_split_dirs(tree)
    train = raw.list_pairs(dirs["train"]).pairs
    _copy_frame(tree, train[0], "test", "copy-a")  # train data in test
    _copy_frame(tree, train[1], "validation", "copy-b")  # and in validation
    _copy_frame(tree, train[1], "test", "copy-c")  # the same frame again, in test too
    _copy_frame(tree, train[2], "train", "copy-d")  # twice in one split: not this warning's business
    _copy_frame(tree, train[3], "test", "copy-e", label=np.zeros((400, 640), np.uint8))  # same image, another label
    listings = {split: raw.list_pairs(folder).pairs for split, folder in dirs.items()}
    digests = {pair: digest_pair(pair) for pairs in listings.values() for pair in pairs}
    notes = raw.same_frames(listings, digests)
    expected = [
        ("validation", "copy-b", "train", train[1].stem),
        ("test", "copy-a", "train", train[0].stem),
        ("test", "copy-c", "train", train[1].stem),
    ]
    assert len(notes) == len(expected), notes
    for note, (split, stem, earlier, original) in zip(notes, expected, strict=True):
        assert note.startswith(
            f"warning: {split} frame {stem}.png has the same image and label bytes as {earlier} frame {original}.png "
            f"({split}/images/{stem}.png and {earlier}/images/{original}.png), so {split} is not independent of train "
            f"(training data leaks into evaluation); expected each frame in one split only"
        ), note
    # Only frames with a hash are compared: the run's own hashes, nothing is read here.
    unhashed = {pair: digest for pair, digest in digests.items() if pair.stem != "copy-a"}
    assert len(raw.same_frames(listings, unhashed)) == 2
    assert raw.check_disjoint(dirs) == [], "other names: no clash of names"


def test_many_copies_are_counted_past_the_first_few(tree):
    dirs = raw.find_split_dirs(tree)
    train = raw.list_pairs(dirs["train"]).pairs
    for k, pair in enumerate(train):
        _copy_frame(tree, pair, "validation", f"copy-{k}")
    listings = {split: raw.list_pairs(folder).pairs for split, folder in dirs.items()}
    notes = raw.same_frames(listings, {pair: digest_pair(pair) for pairs in listings.values() for pair in pairs})
    shown_ = raw.SAME_FRAMES_SHOWN
    assert len(train) > shown_ and len(notes) == shown_ + 1, notes
    assert notes[-1] == (
        f"warning: train and validation: {len(train) - shown_} more frames of validation have the same image and "
        f"label bytes as a frame of train under another name ({len(train)} in all)"
    )
