"""The raw Kaggle-layout reader: finding splits, pairing files, and every bad-input error."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from openeds import raw

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
        r"has 3 channel\(s\) of uint8; expected 8-bit grayscale",
    ),
    (
        "16bit_png",
        lambda p: cv2.imwrite(str(p.image), np.zeros((400, 640), np.uint16)),
        r"has 1 channel\(s\) of uint16; expected 8-bit grayscale",
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
        r"label .*\.npy is not a readable \.npy array: ",
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
