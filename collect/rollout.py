"""Running episodes with a policy and writing them as raw shards of whole episodes.

This is the in-process API: ``pipeline collect`` runs one ``RolloutWriter`` per worker process, and the
train stage uses one directly to collect with its latest policy.

Episode ``i`` of a run has the id ``<run_id>-<i:06d>``, the seed ``base_seed + i`` and the scenario
``env.scenario_for(i)`` (the ``i mod k``-th of the env's scenarios), so a rerun knows what it owes and the same
episode is the same episode wherever it is collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from collect.env import DrivingEnv, EnvStep
from collect.episode_rows import EpisodeRows, StepFlags
from collect.policies.base import Policy
from collect.scenarios import FREE
from data_schema import Dataset, episode_id, new_shard_name


@dataclass(frozen=True)
class EpisodeSummary:
    episode_id: str
    index: int
    seed: int
    steps: int  # actions taken; the episode has steps + 1 rows
    outcome: str
    scenario: str = FREE


@dataclass(frozen=True)
class ShardSummary:
    shard: str
    episodes: tuple[EpisodeSummary, ...]

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.episodes)


def drive(env: DrivingEnv, policy: Policy, seed: int, scenario: str = FREE) -> Iterator[tuple[EnvStep, np.ndarray | None]]:
    """One episode from ``env.reset(seed, scenario)`` to its end: each step with the policy's action from it, and
    the final step (``done``) with None. The one episode loop: what ends an episode is the env's rule alone."""
    policy.reset(seed)
    current = env.reset(seed, scenario)
    while not current.done:
        action = policy.act(current.obs, current.bev)
        yield current, action
        current = env.step(action)
    yield current, None


def run_episode(env: DrivingEnv, policy: Policy, episode_id: str, seed: int, scenario: str = FREE) -> tuple[pa.Table, str]:
    """Drive one episode from ``env.reset(seed, scenario)`` to its end; return its rows and why it ended."""
    rows = EpisodeRows(episode_id, seed, policy.name, env.backend.name, env.backend.map_name, scenario)
    for current, action in drive(env, policy, seed, scenario):
        if action is not None:
            rows.add(current.obs, current.bev, action)
    flags = StepFlags(stuck=current.stuck, terminated=current.terminated, truncated=current.truncated, is_last=True)
    rows.add(current.obs, current.bev, None, flags)
    return rows.table(), current.outcome


class RolloutWriter:
    """Collects the episodes of one run with one environment and policy, one shard at a time.

    ``on_episode`` is called after each finished episode (progress reporting). A shard is written only when
    all its episodes are done, atomically, so a crash loses at most the shard in progress.
    """

    def __init__(
        self,
        dataset: Dataset,
        env: DrivingEnv,
        policy: Policy,
        run_id: str,
        base_seed: int = 0,
        on_episode: Callable[[EpisodeSummary], None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.env = env
        self.policy = policy
        self.run_id = run_id
        self.base_seed = base_seed
        self.on_episode = on_episode

    def collect_shard(self, indices: Sequence[int]) -> ShardSummary:
        """Run the episodes ``indices`` of this run and write them as one shard."""
        if not indices:
            raise ValueError("collect_shard needs at least one episode index")
        return self._write([self._episode(index) for index in indices])

    def collect_steps(self, min_steps: int, first_episode: int, episodes_per_shard: int = 8) -> list[ShardSummary]:
        """Run episodes ``first_episode, first_episode + 1, ...`` until at least ``min_steps`` steps are written.

        For online collection in training: the caller keeps the next episode index (``first_episode`` plus
        the episodes returned) so that episode ids stay unique within the run.
        """
        if min_steps < 1 or episodes_per_shard < 1:
            raise ValueError(f"min_steps and episodes_per_shard must be >= 1, got {min_steps}, {episodes_per_shard}")
        shards: list[ShardSummary] = []
        pending: list[tuple[pa.Table, EpisodeSummary]] = []
        steps, index = 0, first_episode
        while steps < min_steps:
            pending.append(self._episode(index))
            steps += pending[-1][1].steps
            index += 1
            if len(pending) == episodes_per_shard or steps >= min_steps:
                shards.append(self._write(pending))
                pending = []
        return shards

    def _episode(self, index: int) -> tuple[pa.Table, EpisodeSummary]:
        eid, seed, scenario = episode_id(self.run_id, index), self.base_seed + index, self.env.scenario_for(index)
        table, outcome = run_episode(self.env, self.policy, eid, seed, scenario)
        summary = EpisodeSummary(eid, index, seed, table.num_rows - 1, outcome, scenario)
        if self.on_episode is not None:
            self.on_episode(summary)
        return table, summary

    def _write(self, episodes: list[tuple[pa.Table, EpisodeSummary]]) -> ShardSummary:
        summaries = tuple(summary for _, summary in episodes)
        shard = new_shard_name(self.run_id, summaries[0].index)
        self.dataset.write_episode_shard(shard, pa.concat_tables([table for table, _ in episodes]))
        return ShardSummary(shard, summaries)
