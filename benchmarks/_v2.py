"""The synthetic v2 train split the training-side benchmarks read: bench_training, its device run, bench_resume."""

from __future__ import annotations

from pathlib import Path

import datasets

from openeds.synthetic import write_sample
from openeds_precomputed import OpenEDSPrecomputed


def build_v2(work: Path, frames: int) -> datasets.Dataset:
    """The v2 train split of ``frames`` synthetic frames (raw files under ``work/raw``), saved to ``work/v2``."""
    write_sample(work / "raw", {"train": frames})
    builder = OpenEDSPrecomputed(config_name="pupil", data_dir=str(work / "raw"), cache_dir=str(work / "cache"))
    builder.download_and_prepare()
    builder.as_dataset(split="train").save_to_disk(str(work / "v2"))
    return datasets.load_from_disk(str(work / "v2"))


def repeated(dataset: datasets.Dataset, repeat: int) -> datasets.Dataset:
    return datasets.concatenate_datasets([dataset] * repeat)
