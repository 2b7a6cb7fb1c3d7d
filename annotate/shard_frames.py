"""A raw shard's frames as the annotate models see them: the rows' images, and the VLM's windows over them.

Shard tasks label with it, and ``pipeline vlm finetune`` / ``vlm eval`` build their training and test windows
from it, so a fine-tuned VLM sees exactly the windows annotation will send it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from data_schema.episodes import EpisodeOrder

__all__ = ["ShardFrames"]


class ShardFrames:
    """The columns ``episode_id``, ``step``, ``bev`` and ``camera`` of a shard, converted once."""

    def __init__(self, table: pa.Table) -> None:
        self.episode_id = np.asarray(table.column("episode_id").to_pylist(), dtype=object)
        self.step = table.column("step").to_numpy()
        self.bev = table.column("bev").to_pylist()
        self.camera = table.column("camera").to_pylist()
        self.has_camera = len(self.camera) > 0 and all(c is not None for c in self.camera)
        self.episodes = EpisodeOrder.of(self.episode_id, self.step)

    def __len__(self) -> int:
        return len(self.step)

    def frame(self, row: int) -> bytes:
        """The encoded image the dynamic pathway sees: the camera frame, else the BEV."""
        return self.camera[row] if self.has_camera else self.bev[row]

    def window(self, row: int, k: int) -> list[bytes]:
        """K+1 frames ending at ``row`` within its episode, oldest first; the episode's first frame pads the start."""
        return [self.frame(r) for r in self.episodes.window(row, k)]
