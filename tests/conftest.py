"""Shared fixtures: the local Hub server and the synthetic OpenEDS sample.

huggingface_hub and datasets read HF_ENDPOINT when they are imported, so the Hub
environment is set up here, before anything imports them.
"""

from __future__ import annotations

from tests.hub_server import configure_hub_environment, hub, hub_server  # noqa: F401 (fixtures)

configure_hub_environment()  # before anything imports huggingface_hub or datasets

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from openeds.synthetic import write_sample  # noqa: E402


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The default synthetic sample (train 8, validation 3, test 3) in the Kaggle layout."""
    return write_sample(tmp_path_factory.mktemp("raw"))
