"""What a transform returns is checked where every feed passes (items.prepare): the four feeds accept and
refuse the same transforms, with the same one-line error naming the array, what was found and what was expected."""

from __future__ import annotations

from collections.abc import Callable

import datasets
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from preprocessing.augment import SAMPLE_DTYPES, Sample, Transform  # noqa: E402
from preprocessing.training import (  # noqa: E402
    IrisDataset,
    IrisIterableDataset,
    IrisLoader,
    TransformOutputError,
    to_normalized_tensor,
)
from tests.test_streaming import parts, stream_of, write_folder  # noqa: E402

pytestmark = pytest.mark.datasets_line

ROWS = 4


class Returns(Transform):
    """A transform that returns ``make(sample)``: deterministic, so every feed must give the same values."""

    def __init__(self, make: Callable[[Sample], object]) -> None:
        self.make = make

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return self.make(sample)  # type: ignore[return-value]


# -- the feeds, each giving the items of the train split in row order: (image, label, filename, weights, dist) --


def _items_of_dataset(data: datasets.Dataset, folder: str, transform: Transform) -> list[tuple]:
    dataset = IrisDataset(data, split="train", transform=transform, seed=0)
    return [dataset[i] for i in range(len(dataset))]


def _items_of_iterable(data: datasets.Dataset, folder: str, transform: Transform) -> list[tuple]:
    return list(IrisIterableDataset(stream_of(folder), split="train", transform=transform, seed=0, shuffle=False))


def _unstacked(loader: IrisLoader) -> list[tuple]:
    with loader:
        return [
            (image[k].clone(), label[k].clone(), names[k], weights[k].clone(), dist[k].clone())
            for image, label, names, weights, dist in loader
            for k in range(len(names))
        ]


def _items_of_loader(data: datasets.Dataset, folder: str, transform: Transform) -> list[tuple]:
    return _unstacked(IrisLoader(data, batch_size=3, transform=transform, seed=0, shuffle=False, num_threads=2))


def _items_of_stream_loader(data: datasets.Dataset, folder: str, transform: Transform) -> list[tuple]:
    return _unstacked(IrisLoader(stream_of(folder), batch_size=3, transform=transform, seed=0, shuffle=False))


FEEDS = {
    "IrisDataset": _items_of_dataset,
    "IrisIterableDataset": _items_of_iterable,
    "IrisLoader": _items_of_loader,
    "IrisLoader-streamed": _items_of_stream_loader,
}


@pytest.fixture(scope="module")
def train(v2, tmp_path_factory) -> tuple[datasets.Dataset, str]:
    """The first rows of the sample's train split, map-style and as a local folder to stream (two shards)."""
    data = v2["pupil"]["train"].select(range(ROWS))
    return data, write_folder(tmp_path_factory.mktemp("transform-outputs"), {"train": parts(data, 2, 2)})


# -- transforms the feeds refuse: (id, what it returns, the error) ---------------------------------------------------

REFUSED = [
    (
        "label-int64",
        lambda s: s._replace(label=s.label.astype(np.int64)),
        r"returned label of dtype int64; expected a ",
    ),
    (
        "weights-transposed",
        lambda s: s._replace(spatial_weights=s.spatial_weights.T),
        r"returned spatial_weights of shape \(640, 400\); expected a float32 array of shape \(400, 640\), the stored",
    ),
    (
        "image-list",
        lambda s: s._replace(image=s.image.tolist()),
        r"returned image as a builtins\.list; expected a uint8",
    ),
    (
        "dist-missing",
        lambda s: s._replace(dist_map=None),
        r"returned dist_map as None; expected a float32 array of shape",
    ),
    (
        "dist-one-channel",
        lambda s: s._replace(dist_map=s.dist_map[:1]),
        r"returned dist_map of shape \(1, 400, 640\); expected a float32 array of shape \(2, 400, 640\)",
    ),
    (
        "weights-big-endian",
        lambda s: s._replace(spatial_weights=s.spatial_weights.astype(">f4")),
        r"returned spatial_weights of dtype >f4; expected a float32 array",
    ),
    (
        "image-tensor",
        lambda s: s._replace(image=torch.from_numpy(s.image.copy())),
        r"returned image as a torch\.Tensor; expected a uint8 array",
    ),
    # the two seen in issue 22: a crop (IrisLoader handed out zeros) and float64 (IrisDataset converted it)
    ("image-cropped", lambda s: s._replace(image=s.image[100:300]), r"returned image of shape \(200, 640\); expected"),
    ("image-float64", lambda s: s._replace(image=s.image / 1.0), r"returned image of dtype float64; expected a uint8"),
    ("image-padded", lambda s: s._replace(image=np.pad(s.image, 1)), r"returned image of shape \(402, 642\); expected"),
    ("plain-tuple", lambda s: tuple(s), r"returned a builtins\.tuple; expected a preprocessing\.augment\.Sample"),
    ("none", lambda s: None, r"transform Returns returned None; expected a preprocessing\.augment\.Sample"),
    (
        "weights-float16-and-cropped",
        lambda s: s._replace(spatial_weights=s.spatial_weights[:9].astype(np.float16)),
        r"returned spatial_weights of dtype float16; expected a float32 array of shape \(400, 640\)",
    ),
]

# -- transforms they accept: views of any strides, fresh arrays, the sample itself ----------------------------------

ACCEPTED = [
    ("unchanged", lambda s: s),
    (
        "strided-views",  # upside down, mirrored, Fortran-ordered, turned half round: none of them C-contiguous
        lambda s: Sample(
            s.image[::-1], s.label[:, ::-1], np.asfortranarray(s.spatial_weights), s.dist_map[:, ::-1, ::-1]
        ),
    ),
    ("fresh-arrays", lambda s: s._replace(image=255 - s.image, label=np.ascontiguousarray(s.label[::-1]))),
]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(("make", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_every_feed_refuses_the_same_transform_outputs_with_one_line(train, feed, make, message):
    with pytest.raises(TransformOutputError, match=message) as info:
        FEEDS[feed](*train, Returns(make))
    text = str(info.value)
    assert "\n" not in text and text.startswith("transform Returns returned "), text
    assert "Fix the transform" in text, text


@pytest.mark.parametrize("make", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_every_feed_accepts_what_keeps_shape_and_dtype_and_gives_its_values(train, make):
    data, folder = train
    rows = data.with_format("numpy", dtype=None)
    expected = {}
    for i in range(ROWS):
        row = rows[i]
        sample = make(Sample(row["image"], row["label"], row["spatial_weights"], row["dist_map"]))
        expected[row["filename"]] = sample
    for feed, items_of in FEEDS.items():
        items = items_of(data, folder, Returns(make))
        assert sorted(item[2] for item in items) == sorted(expected), feed
        for image, label, name, weights, dist in items:
            want = expected[name]
            assert torch.equal(image, to_normalized_tensor(want.image)), f"{feed} {name}: image"
            assert label.dtype == torch.int64 and np.array_equal(label.numpy(), want.label), f"{feed} {name}: label"
            for got, wanted, what in ((weights, want.spatial_weights, "weights"), (dist, want.dist_map, "dist_map")):
                assert got.dtype == torch.float32, f"{feed} {name}: {what}"
                assert np.array_equal(got.numpy().view(np.uint32), wanted.view(np.uint32)), f"{feed} {name}: {what}"


def test_the_documented_dtypes_are_the_stored_columns(train):
    data, _ = train
    row = data.with_format("numpy", dtype=None)[0]
    assert {name: row[name].dtype for name in SAMPLE_DTYPES} == SAMPLE_DTYPES
