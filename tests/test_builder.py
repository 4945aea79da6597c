"""The `openeds_precomputed` builder: schema, rows equal to the reference, parallelism, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from openeds import raw, schema
from openeds_precomputed import OpenEDSConfig, OpenEDSPrecomputed
from tests import reference

pytestmark = pytest.mark.datasets_line

REPO = Path(__file__).resolve().parents[1]
SCRIPTS_RUN = datasets.__version__.startswith("3.")


def build(data_dir: Path, config: str, cache_dir: Path, num_proc: int | None = None) -> datasets.DatasetDict:
    builder = OpenEDSPrecomputed(config_name=config, data_dir=str(data_dir), cache_dir=str(cache_dir))
    builder.download_and_prepare(num_proc=num_proc)
    return builder.as_dataset()


@pytest.fixture(params=schema.CONFIG_NAMES)
def built(request, v2):
    """``(config, the builder's build of sample_dir)``: conftest's session ``v2`` (the same build, made once)."""
    return request.param, v2[request.param]


def test_features_are_the_v2_schema(built):
    config, dsd = built
    assert list(dsd) == ["train", "validation", "test"]
    for split in dsd.values():
        assert split.features == schema.features_for(config)
        assert split.features["dist_map"].shape == (schema.DIST_CHANNELS[config], 400, 640)


def test_every_row_matches_the_reference(built, sample_dir):
    config, dsd = built
    for split, folder in raw.find_split_dirs(sample_dir).items():
        pairs = raw.list_pairs(folder).pairs
        rows = dsd[split].with_format("numpy", dtype=None)
        assert list(rows["filename"]) == [p.stem for p in pairs], f"{split}: order or keys differ"
        for pair, row in zip(pairs, rows, strict=True):
            image, raw_label = raw.read_pair(pair)
            label, weights, dist = reference.targets(raw_label, config)
            case = f"{config}/{split}/{pair.stem}"
            assert row["image"].dtype == np.uint8 and row["spatial_weights"].dtype == np.float32
            np.testing.assert_array_equal(row["image"], reference.image(image), err_msg=case)
            np.testing.assert_array_equal(row["label"], label, err_msg=case)
            np.testing.assert_array_equal(row["spatial_weights"], weights, err_msg=case)
            # v1 stored np.float32 of SciPy's float64 result; v2 equals it bit for bit.
            np.testing.assert_array_equal(
                row["dist_map"].view(np.uint32), dist.astype(np.float32).view(np.uint32), err_msg=f"{case}: dist_map"
            )
            assert row["preprocessed"]


def test_num_proc_2_equals_num_proc_1(sample_dir, v2, tmp_path):
    """Against ``v2``, built in one process (``num_proc`` left at its default)."""
    one = v2["pupil"]
    two = build(sample_dir, "pupil", tmp_path / "two", num_proc=2)
    assert list(one) == list(two)
    for split in one:
        assert one[split].data.table.equals(two[split].data.table), split


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="unknown config 'iris'"):
        OpenEDSConfig(name="iris")
    with pytest.raises(ValueError, match="on_missing_label='ignore'"):
        OpenEDSConfig(name="pupil", on_missing_label="ignore")


def test_skip_unlabeled_images(sample_dir, tmp_path):
    import shutil

    tree = Path(shutil.copytree(sample_dir, tmp_path / "raw"))
    next((tree / "openEDS/openEDS/test/labels").iterdir()).unlink()
    builder = OpenEDSPrecomputed(
        config_name="pupil", data_dir=str(tree), cache_dir=str(tmp_path / "c"), on_missing_label="skip"
    )
    builder.download_and_prepare()
    assert builder.as_dataset()["test"].num_rows == 2


def test_labels_without_an_image_are_a_warning(sample_dir, tmp_path, caplog):
    import shutil

    tree = Path(shutil.copytree(sample_dir, tmp_path / "raw"))
    image = sorted((tree / "openEDS/openEDS/test/images").iterdir())[0]
    image.unlink()
    builder = OpenEDSPrecomputed(config_name="pupil", data_dir=str(tree), cache_dir=str(tmp_path / "c"))
    builder.download_and_prepare()
    assert builder.as_dataset()["test"].num_rows == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"test: ignored 1 labels without an image (e.g. labels/{image.stem}.npy)" in warnings


def test_the_same_frame_in_two_splits_is_refused(sample_dir, tmp_path):
    import shutil

    tree = Path(shutil.copytree(sample_dir, tmp_path / "raw"))
    splits = tree / "openEDS/openEDS"
    image = sorted((splits / "train/images").iterdir())[0]
    shutil.copy(image, splits / "validation/images")
    builder = OpenEDSPrecomputed(config_name="pupil", data_dir=str(tree), cache_dir=str(tmp_path / "c"))
    with pytest.raises(raw.RawDataError, match=f"image {image.name} is in both train and validation with the same"):
        builder.download_and_prepare()


@pytest.mark.skipif(not SCRIPTS_RUN, reason=f"datasets {datasets.__version__} removed loading scripts (4.0)")
def test_datasets_cli_test_runs_the_script(sample_dir, tmp_path):
    """`datasets-cli test` on a fresh HF_HOME, exactly as the README shows it."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_DATASETS_OFFLINE": "1"}
    cli = Path(sys.executable).with_name("datasets-cli")
    result = subprocess.run(
        [
            str(cli),
            "test",
            "openeds_precomputed.py",
            "--data_dir",
            str(sample_dir),
            "--trust_remote_code",
            "--all_configs",
            "--cache_dir",
            str(tmp_path / "cache"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test successful" in result.stdout + result.stderr
