"""Suite-wide settings (offline model libraries, a headless matplotlib) and shared fixtures; the tables they
are built from live in episode_tables.py and train_data.py."""

from __future__ import annotations

import os
import tempfile

import pytest
from train_data import raw_episode, write_dataset

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def small_dataset(tmp_path):
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
