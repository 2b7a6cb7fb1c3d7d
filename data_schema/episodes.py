"""Rows of a table put in episode order: the one place that sorts rows by ``(episode_id, step)``.

Shards keep rows in any order; rules that look along an episode (a rolling window over the last N steps,
the VLM's window of frames before a gated one) read it through :class:`EpisodeOrder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EpisodeOrder"]


@dataclass(frozen=True)
class EpisodeOrder:
    """Rows sorted by ``(episode_id, step)``.

    ``order[p]`` is the row at sorted position ``p``; ``position[r]`` is the sorted position of row ``r``;
    ``episode_start[p]`` is the sorted position where the episode of position ``p`` begins, so
    ``p - episode_start[p]`` is how many rows of its episode come before it.
    """

    order: np.ndarray
    position: np.ndarray
    episode_start: np.ndarray

    @classmethod
    def of(cls, episode_id: np.ndarray, step: np.ndarray) -> "EpisodeOrder":
        episode_id, step = np.asarray(episode_id), np.asarray(step)
        n = len(step)
        codes = np.unique(episode_id, return_inverse=True)[1].reshape(-1) if n else np.zeros(0, np.int64)
        order = np.lexsort((step, codes))
        sorted_codes = codes[order]
        starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1] if n else np.zeros(0, np.int64)
        episode_start = np.repeat(starts, np.diff(np.r_[starts, n]))
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        return cls(order, position, episode_start)

    def window(self, row: int, k: int) -> list[int]:
        """The K+1 rows ending at ``row`` within its episode, oldest first; the episode's first row pads the start."""
        pos = int(self.position[row])
        start = int(self.episode_start[pos])
        return [int(self.order[max(pos - k + j, start)]) for j in range(k + 1)]

    def rows_before(self) -> np.ndarray:
        """Per sorted position: how many earlier rows its episode has."""
        return np.arange(len(self.order)) - self.episode_start
