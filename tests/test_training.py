"""The training side: augmentations, IrisDataset on v1 and v2 data, seeding, the example."""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from openeds import raw, schema  # noqa: E402
from openeds.synthetic import render_eye  # noqa: E402
from preprocessing.augment import (  # noqa: E402
    TRAIN_AUGMENT,
    Compose,
    GaussianBlur,
    HorizontalFlip,
    LineAugment,
    Sample,
    Transform,
)
from preprocessing.targets import spatial_weights  # noqa: E402
from preprocessing.training import (  # noqa: E402
    DatasetFormatError,
    IrisDataset,
    add_preprocessed_argument,
    preprocessed_from_flag,
    to_normalized_tensor,
)
from tests import reference, zygote  # noqa: E402

pytestmark = pytest.mark.datasets_line

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = str(REPO / "examples" / "train_tiny.py")
#: the example's runs here and in tests/test_preemption.py: one thread everywhere (torch and the gather: the same
#: float sums in every run); one environment, so they are all forked from one torch zygote (tests/zygote.py)
EXAMPLE_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def assert_same_bits(got, want, msg: str) -> None:
    """float32 arrays or tensors equal bit for bit (v1 stored np.float32 of SciPy's float64 result)."""
    got, want = (np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32) for x in (got, want))
    assert got.shape == want.shape, f"{msg}: shape {got.shape} != {want.shape}"
    differ = got.view(np.uint32) != want.view(np.uint32)
    assert not differ.any(), f"{msg}: {int(differ.sum())} values differ, max {np.abs(got - want).max():.3g}"


def full_size_sample(seed: int = 0, channels: int = 2) -> Sample:
    """A random, left-right asymmetric sample with read-only arrays (so any in-place write fails)."""
    rng = np.random.default_rng(seed)
    h, w = schema.HEIGHT, schema.WIDTH
    sample = Sample(
        image=rng.integers(0, 256, (h, w), dtype=np.uint8),
        label=rng.integers(0, 2, (h, w), dtype=np.uint8),
        spatial_weights=rng.choice(np.array([0, 20], np.float32), (h, w)),
        dist_map=rng.standard_normal((channels, h, w), dtype=np.float32),
    )
    for array in sample:
        array.setflags(write=False)
    return sample


# --- augmentations -------------------------------------------------------------------

ALL_TRANSFORMS = {
    "line": LineAugment(p=1.0),
    "blur": GaussianBlur(p=1.0),
    "flip": HorizontalFlip(p=1.0),
    "all": Compose((LineAugment(p=1.0), GaussianBlur(p=1.0), HorizontalFlip(p=1.0))),
    "train": TRAIN_AUGMENT,
}


def test_train_augment_is_visionassists_pipeline():
    steps = [(type(t), t.p) for t in TRAIN_AUGMENT.transforms]
    assert steps == [(LineAugment, 0.2), (GaussianBlur, 0.2), (HorizontalFlip, 0.5)]


@pytest.mark.parametrize("transform", ALL_TRANSFORMS.values(), ids=ALL_TRANSFORMS.keys())
@pytest.mark.parametrize("channels", [2, 4])
def test_transforms_keep_dtypes_shapes_and_inputs(transform, channels):
    for seed in range(5):
        sample = full_size_sample(seed, channels)
        before = [a.copy() for a in sample]
        out = transform(sample, np.random.default_rng(seed))
        for name, a, b, original in zip(Sample._fields, sample, out, before, strict=True):
            assert (b.dtype, b.shape) == (a.dtype, a.shape), f"{transform}: {name} changed dtype or shape"
            np.testing.assert_array_equal(a, original, err_msg=f"{transform} modified its input {name}")


def test_flip_mirrors_image_label_and_distance_maps_and_recomputes_the_weights():
    sample = full_size_sample(channels=4)
    flipped = HorizontalFlip(p=1.0)(sample, np.random.default_rng(0))
    for name in ("image", "label", "dist_map"):
        np.testing.assert_array_equal(getattr(flipped, name), getattr(sample, name)[..., ::-1], err_msg=name)
    assert flipped.image.flags.c_contiguous and flipped.label.flags.c_contiguous
    np.testing.assert_array_equal(flipped.spatial_weights, spatial_weights(flipped.label, binary=False))
    pupil = full_size_sample(channels=2)
    np.testing.assert_array_equal(
        HorizontalFlip(p=1.0).apply(pupil).spatial_weights, spatial_weights(pupil.label[:, ::-1], binary=True)
    )
    assert HorizontalFlip(p=0.0)(sample, np.random.default_rng(0)) is sample


def test_flip_needs_a_known_channel_count():
    sample = full_size_sample(channels=3)
    with pytest.raises(ValueError, match="dist_map has 3 channels; expected 2 \\(config pupil\\) or 4"):
        HorizontalFlip(p=1.0).apply(sample)


def vertical_edge_label() -> np.ndarray:
    """A raw 0..3 label whose pupil is a rectangle: its left and right edges are vertical steps."""
    label = np.zeros((schema.HEIGHT, schema.WIDTH), np.uint8)
    label[100:300, 150:500] = 1
    label[120:280, 250:400] = 2
    label[150:250, 300:341] = 3
    return label


FLIP_CASES = {
    # case: (raw label, what mirroring the stored targets gets wrong)
    "closed": (render_eye(np.random.default_rng(0), "closed")[1], "dist_map"),
    "border": (render_eye(np.random.default_rng(1), "border")[1], "spatial_weights"),
    "vertical_edge": (vertical_edge_label(), "spatial_weights"),
}


@pytest.mark.parametrize("config", schema.CONFIG_NAMES)
@pytest.mark.parametrize("case", FLIP_CASES)
def test_flip_equals_the_reference_on_the_mirrored_raw_label(config, case):
    raw_label, naive_error = FLIP_CASES[case]
    label, weights, dist = reference.targets(raw_label, config)
    stored = Sample(np.zeros_like(label), label, weights, dist.astype(np.float32))  # as v1 and v2 store them
    flipped = HorizontalFlip(p=1.0).apply(stored)
    expected = dict(
        zip(("label", "spatial_weights", "dist_map"), reference.targets(raw_label[:, ::-1], config), strict=True)
    )
    where = f"{config}/{case}"
    np.testing.assert_array_equal(flipped.label, expected["label"], err_msg=f"{where}: label")
    np.testing.assert_array_equal(flipped.spatial_weights, expected["spatial_weights"], err_msg=f"{where}: weights")
    assert_same_bits(flipped.dist_map, expected["dist_map"].astype(np.float32), where)
    # the case is one where mirroring the stored targets is wrong
    mirrored = getattr(stored, naive_error)[..., ::-1]
    assert not np.allclose(mirrored, expected[naive_error], rtol=0, atol=1e-6), f"{where}: {naive_error}"


def test_line_and_blur_change_only_the_image():
    sample = full_size_sample()
    for transform in (LineAugment(p=1.0), GaussianBlur(p=1.0)):
        out = transform(sample, np.random.default_rng(1))
        assert not np.array_equal(out.image, sample.image), transform
        assert out.label is sample.label and out.dist_map is sample.dist_map, transform
        assert out.spatial_weights is sample.spatial_weights, transform


def test_line_parameters_follow_visionassist_draws():
    rng = np.random.default_rng(0)
    counts = set()
    low, high = 0.3 * 640, 0.7 * 640  # centre xc = f * 640, f in [0.3, 0.7); |x1 - xc| <= 50, |x2 - xc| <= 200
    for _ in range(300):
        segments = LineAugment().get_params(rng, (400, 640))
        counts.add(len(segments))
        for (x1, _), (x2, _) in segments:
            assert low - 51 <= x1 <= high + 51 and low - 201 <= x2 <= high + 201
    assert counts == set(range(1, 10)), f"1..9 lines expected, saw {sorted(counts)}"
    sigmas = {GaussianBlur().get_params(rng, (400, 640)) for _ in range(300)}
    assert sigmas == {2, 3, 4, 5, 6}


def test_lines_are_white_and_4px_thick():
    image = np.zeros((400, 640), np.uint8)
    sample = Sample(image, image, image.astype(np.float32), image[None].astype(np.float32))
    out = LineAugment().apply(sample, [((100, 200), (500, 200))])
    rows = np.flatnonzero(out.image[:, 300])
    assert set(np.unique(out.image)) == {0, 255}
    assert 4 <= len(rows) <= 5 and rows.min() <= 200 <= rows.max()


class ScriptedDraws:
    """Stands in for a Generator: replays given uniform draws, and asks for one line."""

    def __init__(self, uniforms: list[float]) -> None:
        self._uniforms = iter(uniforms)

    def random(self) -> float:
        return next(self._uniforms)

    def integers(self, low: int, high: int) -> int:
        return low  # one line


def test_line_end_points_follow_the_original_formula():
    # f = 0.5: centre (xc, yc) = (320, 200); one line at theta = pi / 4 (slope 1);
    # x1 = xc - 50 * 0.5 * (-1) (sign draw 0.9), x2 = xc - (150 * 0.5 + 50) * (+1) (sign draw 0.1)
    draws = ScriptedDraws([0.5, 0.25, 0.5, 0.9, 0.5, 0.1])
    assert LineAugment().get_params(draws, (400, 640)) == [((345, 225), (195, 75))]


def test_vertical_line_is_clipped_instead_of_overflowing():
    # f = 0.5, theta = 0.5 * pi (tan ~ 1.6e16), |dx1| = 25 (minus), |dx2| = 125 (plus)
    draws = ScriptedDraws([0.5, 0.5, 0.5, 0.9, 0.5, 0.1])
    segments = LineAugment().get_params(draws, (400, 640))
    image = np.zeros((400, 640), np.uint8)
    out = LineAugment().apply(Sample(image, image, image, image[None]), segments)
    assert (out.image[:, 320] == 255).all(), "the vertical line through the centre (320, 200) must be drawn"


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_probability_p(p):
    rng = np.random.default_rng(0)
    sample = Sample(*(array[..., :8, :8] for array in full_size_sample()))  # small: the flip recomputes weights
    hits = sum(HorizontalFlip(p=p)(sample, rng) is not sample for _ in range(2000))
    assert abs(hits / 2000 - p) < 0.04


def test_bad_probability_is_named():
    with pytest.raises(ValueError, match=r"p=1\.5 is outside \[0, 1\]"):
        LineAugment(p=1.5)


# --- IrisDataset ----------------------------------------------------------------------


def _totensor_then_normalize(image: np.ndarray) -> torch.Tensor:
    """torchvision's ToTensor then Normalize([0.5], [0.5]), spelled out in torch."""
    expected = torch.from_numpy(image[None].copy()).contiguous().to(torch.float32).div(255)
    mean = std = torch.as_tensor([0.5], dtype=torch.float32)
    return expected.sub_(mean[:, None, None]).div_(std[:, None, None])


def test_normalisation_equals_totensor_then_normalize():
    # every uint8 value, on its own and in a full-size frame (which torch's ops would split over threads)
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    threads = torch.get_num_threads()
    got = to_normalized_tensor(values)
    assert got.dtype == torch.float32 and got.shape == (1, 16, 16)
    assert torch.equal(got, _totensor_then_normalize(values))
    assert got.min() == -1 and got.max() == 1
    frame = np.random.default_rng(0).permutation(np.tile(np.arange(256, dtype=np.uint8), 1000)).reshape(400, 640)
    for name, image in (("frame", frame), ("mirrored view", frame[:, ::-1]), ("read-only", _read_only(frame))):
        got = to_normalized_tensor(image)
        assert got.shape == (1, 400, 640) and got.is_contiguous(), name
        assert torch.equal(got, _totensor_then_normalize(np.ascontiguousarray(image))), name
    assert torch.get_num_threads() == threads  # the table leaves torch's global thread count alone


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.setflags(write=False)
    return view


@pytest.mark.parametrize("config", schema.CONFIG_NAMES)
def test_v1_and_v2_yield_the_same_items(config, v1, v2, sample_dir):
    for split in v2[config]:
        old = IrisDataset(v1[config][split], split=split)
        new = IrisDataset(v2[config][split], split=split)
        assert (old.preprocessed, new.preprocessed) == (False, True)
        assert len(old) == len(new)
        for i in range(len(new)):
            a, b = old[i], new[i]
            case = f"{config}/{split}/{b[2]}"
            assert a[2] == b[2], case
            for name, x, y in zip(("image", "label", "spatial_weights"), a[:2] + a[3:4], b[:2] + b[3:4], strict=True):
                assert torch.equal(x, y), f"{case}: {name} differs between v1 and v2"
            # v1 rows come from tests/reference.py (SciPy, float64 cast to float32)
            assert_same_bits(a[4], b[4], f"{case}: dist_map")
    # and the image is the reference gamma + CLAHE, normalised
    pair = raw.list_pairs(raw.find_split_dirs(sample_dir)["test"]).pairs[0]
    image, _ = raw.read_pair(pair)
    assert torch.equal(
        IrisDataset(v1[config]["test"], split="test")[0][0], to_normalized_tensor(reference.image(image))
    )


@pytest.mark.parametrize("config", schema.CONFIG_NAMES)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_item_dtypes_and_shapes(config, version, v1, v2):
    data = {"v1": v1, "v2": v2}[version][config]["train"]
    channels = schema.DIST_CHANNELS[config]
    dataset = IrisDataset(data, transform=TRAIN_AUGMENT, seed=0)
    assert dataset.num_classes == channels
    for image, label, filename, weights, dist in (dataset[i] for i in (0, -1)):
        assert (image.dtype, tuple(image.shape)) == (torch.float32, (1, 400, 640))
        assert (label.dtype, tuple(label.shape)) == (torch.int64, (400, 640))
        assert (weights.dtype, tuple(weights.shape)) == (torch.float32, (400, 640))
        assert (dist.dtype, tuple(dist.shape)) == (torch.float32, (channels, 400, 640))
        assert isinstance(filename, str) and -1 <= image.min() and image.max() <= 1
        assert int(label.max()) < channels


def test_flip_in_the_dataset_equals_the_precompute_of_the_mirrored_frame(v2, sample_dir):
    data = v2["full"]["train"]
    plain, flipped = IrisDataset(data), IrisDataset(data, transform=HorizontalFlip(p=1.0))
    raw_labels = {
        pair.stem: raw.read_pair(pair)[1] for pair in raw.list_pairs(raw.find_split_dirs(sample_dir)["train"]).pairs
    }
    for i in range(len(data)):  # includes a pupil cut by the left border, and a closed eye
        (image, *_), (mirrored, label, name, weights, dist) = plain[i], flipped[i]
        ref_label, ref_weights, ref_dist = reference.targets(raw_labels[name][:, ::-1], "full")
        # the image went through CLAHE before the flip (CLAHE is not exactly mirror-symmetric)
        assert torch.equal(mirrored, image.flip(-1)), name
        assert torch.equal(label, torch.from_numpy(ref_label).long()), name
        assert torch.equal(weights, torch.from_numpy(ref_weights)), name
        assert_same_bits(dist, ref_dist.astype(np.float32), name)


def test_transform_runs_on_the_train_split_only(v2):
    data = v2["pupil"]["train"]
    assert torch.equal(
        IrisDataset(data, split="validation", transform=HorizontalFlip(p=1.0))[0][0], IrisDataset(data)[0][0]
    )


def epoch(dataset: IrisDataset) -> list[torch.Tensor]:
    return [dataset[i][0] for i in range(len(dataset))]


def test_seed_reproduces_epochs_and_epochs_differ(v2):
    data = v2["pupil"]["train"]
    first, again = (
        IrisDataset(data, transform=TRAIN_AUGMENT, seed=0),
        IrisDataset(data, transform=TRAIN_AUGMENT, seed=0),
    )
    epoch_1, epoch_2 = epoch(first), epoch(first)
    assert all(torch.equal(a, b) for a, b in zip(epoch_1, epoch(again), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(epoch_2, epoch(again), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epoch_1, epoch_2, strict=True))
    other = epoch(IrisDataset(data, transform=TRAIN_AUGMENT, seed=1))
    assert not all(torch.equal(a, b) for a, b in zip(epoch_1, other, strict=True))


class StampDraws(Transform):
    """Writes 16 random bytes from the dataset's generator into the image's first row."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample.image.copy()
        image[0, :16] = rng.integers(0, 256, 16, dtype=np.uint8)
        return sample._replace(image=image)


def stamps(loader: torch.utils.data.DataLoader) -> list[bytes]:
    return [image[0, 0, 0, :16].numpy().tobytes() for image, *_ in loader]


def test_dataloader_workers_draw_different_reproducible_streams(v2):
    # the same frame 8 times: any repeat of a stream between workers would repeat a stamp
    dataset = IrisDataset(v2["pupil"]["train"].select([0] * 8), transform=StampDraws(), seed=0)

    def loader(seed: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(seed)
        )

    reference_loader = loader(0)
    epoch_1, epoch_2 = stamps(reference_loader), stamps(reference_loader)
    assert len(set(epoch_1)) == 8, "workers repeated each other's draws"
    assert set(epoch_1).isdisjoint(epoch_2), "the next epoch repeated draws"
    assert stamps(loader(0)) == epoch_1, "the same seeds must reproduce the epoch"
    assert stamps(loader(1)) != epoch_1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_dataloader_with_two_workers_batches(version, v1, v2):
    data = {"v1": v1, "v2": v2}[version]["full"]["train"]
    loader = torch.utils.data.DataLoader(
        IrisDataset(data, transform=TRAIN_AUGMENT, seed=0), batch_size=4, num_workers=2
    )
    batches = list(loader)
    image, label, _, weights, dist = batches[0]
    assert tuple(image.shape) == (4, 1, 400, 640) and label.dtype == torch.int64
    assert tuple(weights.shape) == (4, 400, 640) and tuple(dist.shape) == (4, 4, 400, 640)
    assert [f for batch in batches for f in batch[2]] == data["filename"]


def test_select_and_shuffle_are_followed(v2):
    data = v2["pupil"]["train"]
    for view in (
        data.shuffle(seed=3),
        data.select([5, 1, 1]),
        data.select(range(2, 6)),
        data.train_test_split(0.25, seed=0)["test"],
    ):
        dataset = IrisDataset(view)
        assert [dataset[i][2] for i in range(len(dataset))] == view["filename"]
        assert torch.equal(dataset[0][4], torch.from_numpy(view.with_format("numpy")[0]["dist_map"]))


def test_fixed_size_list_columns_read_the_same(v1):
    data = v1["pupil"]["test"]
    fixed = data.cast_column("image", datasets.Sequence(datasets.Value("uint8"), length=400 * 640))
    assert pa.types.is_fixed_size_list(fixed.data.schema.field("image").type)
    for plain, sized in ((data, fixed), (data.select(range(1, 3)), fixed.select(range(1, 3)))):
        a, b = IrisDataset(plain), IrisDataset(sized)
        assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))


def test_pickles_without_the_arrow_buffers(v2):
    dataset = IrisDataset(v2["pupil"]["train"])
    item = dataset[3]
    payload = pickle.dumps(dataset)
    assert len(payload) < 100_000, f"{len(payload)} bytes: the row views were pickled"
    assert torch.equal(pickle.loads(payload)[3][4], item[4])


def test_index_out_of_range(v2):
    dataset = IrisDataset(v2["pupil"]["test"])
    with pytest.raises(IndexError, match="index 3 is out of range for an IrisDataset of 3 rows"):
        dataset[3]


# --- preprocessed flag and errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], None),
        (["--preprocessed", "auto"], None),
        (["--preprocessed", "yes"], True),
        (["--preprocessed", "no"], False),
    ],
)
def test_preprocessed_flag(argv, expected):
    parser = argparse.ArgumentParser()
    add_preprocessed_argument(parser)
    assert preprocessed_from_flag(parser.parse_args(argv).preprocessed) is expected


def test_preprocessed_flag_rejects_other_values(capsys):
    parser = argparse.ArgumentParser()
    add_preprocessed_argument(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--preprocessed", "maybe"])
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--preprocessed 'true'; expected one of auto, yes, no"):
        preprocessed_from_flag("true")


def test_yes_on_v1_data_is_a_clear_error(v1):
    with pytest.raises(DatasetFormatError) as info:
        IrisDataset(v1["pupil"]["train"], preprocessed=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("preprocessed=True (--preprocessed yes), but the dataset has no 'preprocessed' column")
    assert "v1 data with raw images. Use --preprocessed auto" in message


def test_explicit_flags_that_agree_are_accepted(v1, v2):
    assert IrisDataset(v1["pupil"]["train"], preprocessed=False).preprocessed is False
    assert IrisDataset(v2["pupil"]["train"], preprocessed=True).preprocessed is True


def test_no_on_v2_data_is_an_error(v2):
    with pytest.raises(DatasetFormatError, match=r"preprocessed=False \(--preprocessed no\), .* column is True"):
        IrisDataset(v2["pupil"]["train"], preprocessed=False)


def test_mixed_preprocessed_column_is_an_error(v2):
    mixed = v2["pupil"]["test"].map(lambda row, i: {"preprocessed": i == 0}, with_indices=True, writer_batch_size=1)
    with pytest.raises(DatasetFormatError, match="'preprocessed' column mixes True and False"):
        IrisDataset(mixed)


def test_wrong_inputs_are_named(v1, v2):
    with pytest.raises(TypeError, match="hf_dataset is a DatasetDict; expected one split"):
        IrisDataset(v2["pupil"])
    with pytest.raises(TypeError, match="transform is a .*Compose.*drop the torchvision pipeline"):
        IrisDataset(v2["pupil"]["train"], transform=_TorchvisionLikeCompose())
    with pytest.raises(DatasetFormatError, match="lacks column\\(s\\) dist_map, filename"):
        IrisDataset(v2["pupil"]["train"].remove_columns(["dist_map", "filename"]))
    as_int64 = v1["pupil"]["test"].cast_column("image", datasets.Sequence(datasets.Value("int64")))
    with pytest.raises(DatasetFormatError, match="column 'image' holds int64 values; expected non-null uint8"):
        IrisDataset(as_int64)[0]


class _TorchvisionLikeCompose:
    """What old training code passed as ``transform``: a torchvision Compose([ToTensor(), Normalize(...)])."""

    def __call__(self, image):
        return image


def test_truncated_v1_row_is_named(v1):
    data = v1["pupil"]["test"].map(lambda row: {"label": row["label"][:-1]}, writer_batch_size=1)
    with pytest.raises(DatasetFormatError, match=r"column 'label', row 0 has 255999 values; expected 256000"):
        IrisDataset(data)[0]


@pytest.mark.datasets_independent("imports in a fresh interpreter: decided by our modules, not by datasets")
def test_import_preprocessing_does_not_import_torch():
    code = "import sys, preprocessing, preprocessing.augment; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    # the pure core loads none of the I/O side either, and the training side nothing of openeds
    code = (
        "import sys, preprocessing, preprocessing.augment, preprocessing.shapes\n"
        "assert not {'torch', 'datasets', 'pyarrow', 'openeds'} & set(sys.modules), sorted(sys.modules)\n"
        "import preprocessing.training\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'openeds']"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- the example ------------------------------------------------------------------------


def load_example():
    spec = importlib.util.spec_from_file_location("train_tiny", REPO / "examples" / "train_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_trains_one_step_on_the_sample(v2, tmp_path):
    folder = tmp_path / "v2-full"
    v2["full"]["train"].to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    argv = [sys.executable, EXAMPLE, str(folder), "--max-steps", "1", "--cache-dir", str(tmp_path / "cache")]
    done = zygote.run(argv, env=EXAMPLE_ENV, preload=zygote.TORCH, timeout=300)  # a process of its own, as a user's
    assert done.returncode == 0, done.stderr
    assert "8 rows, 4 classes, preprocessed" in done.stdout
    assert "step 1: loss" in done.stdout


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, as in the example's own runs (``EXAMPLE_ENV``): a training step of the
    tiny net on two 400x640 frames costs about 0.2 CPU-s on one thread and 0.75 on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_example_on_v1_data_and_the_yes_error(v1, tmp_path, capsys, one_torch_thread):
    folder = tmp_path / "v1"
    v1["pupil"]["train"].to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    main = load_example().main
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main([str(folder), "--max-steps", "1", "--batch-size", "2", *cache]) == 0
    assert "raw images: gamma + CLAHE on the CPU\nstep 1: loss" in capsys.readouterr().out
    assert main([str(folder), "--max-steps", "2", "--batch-size", "2", "--dataloader", *cache]) == 0
    assert "step 2: loss" in capsys.readouterr().out
    # A streamed folder without a card has no row count, unless a map-style load wrote one
    # into the same cache (datasets reads the cached dataset_info.json).
    fresh = ["--cache-dir", str(tmp_path / "stream-cache")]
    for feed in ([], ["--dataloader"]):
        assert main([str(folder), "--max-steps", "2", "--batch-size", "2", "--streaming", *feed, *fresh]) == 0
        assert "an unknown number of rows, 2 classes, raw images" in capsys.readouterr().out
    assert main([str(folder), "--max-steps", "1", "--batch-size", "2", "--streaming", *cache]) == 0
    assert "8 rows, 2 classes, raw images" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(folder), "--dataloader", "--num-threads", "2", *cache])
    assert "--num-threads is IrisLoader's; with --dataloader use --num-workers" in capsys.readouterr().err
    assert main([str(folder), "--preprocessed", "yes", *cache]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: preprocessed=True (--preprocessed yes), but the dataset has no 'preprocessed' column")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--config", "iris"], "has no config 'iris'; expected one of default (--config)"),
        (["--split", "nosuch"], "has no split 'nosuch'; expected one of train (--split)"),
    ],
)
def test_example_names_the_choices_of_a_bad_config_or_split(v1, tmp_path, capsys, flags, message):
    folder = tmp_path / "v1"
    v1["pupil"]["train"].to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    capsys.readouterr()  # to_parquet's progress bar
    assert load_example().main([str(folder), *flags, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "cache").exists(), "the dataset was prepared before the bad name was found"
