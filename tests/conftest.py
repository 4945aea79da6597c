"""Shared fixtures: the local Hub server and the synthetic OpenEDS sample.

huggingface_hub and datasets read HF_ENDPOINT when they are imported, so the Hub
environment is set up here, before anything imports them.
"""

from __future__ import annotations

from tests.hub_server import configure_hub_environment, hub, hub_server  # noqa: F401 (fixtures)

configure_hub_environment()  # before anything imports huggingface_hub or datasets

from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import pytest  # noqa: E402

from openeds import raw, schema  # noqa: E402
from openeds.synthetic import write_sample  # noqa: E402
from openeds_precomputed import OpenEDSPrecomputed  # noqa: E402
from tests.v1data import v1_split  # noqa: E402


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The default synthetic sample (train 8, validation 3, test 3) in the Kaggle layout."""
    return write_sample(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def v2(sample_dir, tmp_path_factory) -> dict[str, datasets.DatasetDict]:
    """The sample built by the v2 builder, per config (memory-mapped Arrow files)."""
    built = {}
    for config in schema.CONFIG_NAMES:
        builder = OpenEDSPrecomputed(
            config_name=config, data_dir=str(sample_dir), cache_dir=str(tmp_path_factory.mktemp(f"v2-{config}"))
        )
        builder.download_and_prepare()
        built[config] = builder.as_dataset()
    return built


@pytest.fixture(scope="session")
def v1(sample_dir) -> dict[str, datasets.DatasetDict]:
    """The same sample in the v1 layout, per config (in-memory Arrow tables)."""
    return {
        config: datasets.DatasetDict(
            {
                split: v1_split(raw.list_pairs(folder).pairs, config)
                for split, folder in raw.find_split_dirs(sample_dir).items()
            }
        )
        for config in schema.CONFIG_NAMES
    }
