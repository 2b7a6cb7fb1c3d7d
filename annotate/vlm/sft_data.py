"""The fine-tune's examples: every scene-gated window of a dataset with its ground-truth answer, split by episode.

Windows are the ones annotation sends the VLM (:class:`~annotate.shard_frames.ShardFrames`: K+1 frames ending
at the frame, camera frames where a shard has them, else BEV), and a frame is gated when a critical road user
reaches into the corridor ahead (``gate.corridor``), the scene gate. Episodes, never frames, are split between
training and held-out: neighbouring frames of one episode are near copies of each other.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_schema import Dataset
from data_schema.groundtruth import Corridor, critical_in_corridor

from annotate.shard_frames import ShardFrames
from annotate.vlm.targets import TargetRule, answer_targets

__all__ = ["GatedWindow", "gated_windows", "split_episodes"]

_COLUMNS = ["episode_id", "step", "speed", "agents", "bev", "camera"]


@dataclass(frozen=True)
class GatedWindow:
    """One example: the encoded frames (oldest first) and the answer the VLM should give for them."""

    episode_id: str
    step: int
    frames: tuple[bytes, ...]
    target: dict[str, Any]


def gated_windows(
    dataset: Dataset, window: int, corridor: Corridor, rule: TargetRule, episodes: Iterable[str] | None = None
) -> list[GatedWindow]:
    """Every gated window of ``dataset`` (of ``episodes`` only, when given), shard by shard, in episode order.

    Only the gated windows' encoded frames are kept in memory.
    """
    wanted = None if episodes is None else set(episodes)
    found: list[GatedWindow] = []
    for shard in dataset.shards():
        table = dataset.read_shard(shard, _COLUMNS)
        frames = ShardFrames(table)
        gated = critical_in_corridor(table.column("agents"), corridor)
        if wanted is not None:
            gated &= np.isin(frames.episode_id, list(wanted))
        rows = [int(r) for r in frames.episodes.order if gated[r]]
        for row, target in zip(rows, answer_targets(table, rows, rule)):
            found.append(GatedWindow(str(frames.episode_id[row]), int(frames.step[row]), tuple(frames.window(row, window)), target))
    return found


def split_episodes(episode_ids: Sequence[str], holdout: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` episode ids: a ``holdout`` share (at least one episode when there are two or more)
    chosen by a seeded hash of each id, so adding episodes to a dataset does not move the others."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a share between 0 and 1, got {holdout}")
    ids = sorted(set(episode_ids))
    if len(ids) < 2:
        raise ValueError(f"splitting into training and held-out episodes needs at least 2 episodes with gated frames, got {len(ids)}")
    ranked = sorted(ids, key=lambda e: hashlib.sha256(f"{seed}:{e}".encode()).hexdigest())
    n_held = min(len(ids) - 1, max(1, math.floor(holdout * len(ids) + 0.5)))
    held = set(ranked[:n_held])
    return [e for e in ids if e not in held], [e for e in ids if e in held]
