"""Shared fixtures: the synthetic OpenEDS sample, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from openeds.synthetic import write_sample


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The default synthetic sample (train 8, validation 3, test 3) in the Kaggle layout."""
    return write_sample(tmp_path_factory.mktemp("raw"))
