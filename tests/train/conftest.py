"""Fixtures of the train tests; the dataset builders live in ``train_data`` (importable by the test modules)."""

from __future__ import annotations

import pytest
from train_data import raw_episode, write_dataset

from data_schema import Dataset


@pytest.fixture
def small_dataset(tmp_path) -> Dataset:
    """Three shards: two labelled (a terminated and a truncated episode each), one without labels."""
    return write_dataset(
        str(tmp_path / "ds"),
        {
            "s0": [raw_episode(1, 5, "terminated"), raw_episode(2, 4, "truncated")],
            "s1": [raw_episode(3, 6, "truncated"), raw_episode(4, 3, "terminated")],
            "s2": [raw_episode(5, 7, "terminated")],
        },
        labelled={"s0", "s1"},
    )
