"""Names on disk: runs, episodes, shards and label sets, built and parsed in one place.

* a run id names one collection run (``collect``, an online training run, an evaluation);
* episode ``i`` of run ``R`` is ``R-<i:06d>``;
* a shard of run ``R`` whose first episode is ``i`` is ``<UTC time>-R-e<i:06d>``: unique across concurrent
  writers, sortable by creation time, and attributable to its run (its tmp files start the same way, so a
  run cleans up only its own leftovers).

Names become file names, so they keep to a safe alphabet and are matched in full (a trailing newline is
not a valid name).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterable

from data_schema.errors import DatasetError

__all__ = [
    "check_name",
    "check_run_id",
    "episode_id",
    "episode_index",
    "new_shard_name",
    "run_shards",
    "shard_name_pattern",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TMP_SUFFIX = ".tmp"


def check_name(kind: str, name: str) -> str:
    """Shard, label-set and cache names become file names: keep them to a safe alphabet."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith(TMP_SUFFIX):
        raise DatasetError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' and '-' (max 128)")
    return name


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (max 64)")
    return run_id


def episode_id(run_id: str, index: int) -> str:
    """The id of episode ``index`` of run ``run_id``."""
    return f"{run_id}-{index:06d}"


def episode_index(run_id: str, episode: str) -> int:
    """The index of an episode of ``run_id`` from its id; an id of another run is an error naming both."""
    prefix = f"{run_id}-"
    tail = episode[len(prefix) :] if episode.startswith(prefix) else ""
    if not tail.isdigit():
        raise DatasetError(f"episode id {episode!r} is not an episode of run {run_id!r} ({prefix}<index>)")
    return int(tail)


def new_shard_name(run_id: str, first_episode: int) -> str:
    """A shard name unique across concurrent writers: creation time, run id, index of its first episode."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return check_name("shard", f"{stamp}-{run_id}-e{first_episode:06d}")


def shard_name_pattern(run_id: str) -> re.Pattern[str]:
    """Names of ``run_id``'s shards, and the start of their tmp files."""
    return re.compile(rf"\d{{8}}T\d{{6}}-{re.escape(run_id)}-e\d{{6,}}")


def run_shards(shards: Iterable[str], run_id: str) -> list[str]:
    """The shards of ``shards`` that belong to run ``run_id``, in the given order."""
    pattern = shard_name_pattern(run_id)
    return [s for s in shards if pattern.fullmatch(s)]
