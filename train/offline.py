"""Training on labelled data, readable top to bottom: the offline loop, and the pieces the online round
(``pipeline.online``) shares with it: starting or resuming a run, filling replay, and gradient updates.

Offline: ``offline_steps`` updates of ``config.algo`` on the dataset's labelled shards, checkpointed every
``checkpoint_every`` updates; a killed run resumes from its last checkpoint with the same shards in replay.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from data_schema import Dataset, DatasetError, LabelSet
from train.agent import create_agent, load_agent, save_agent
from train.algorithms import Agent
from train.config import TrainConfig
from train.metrics_log import MetricsLog
from train.replay import ReplayBuffer, RewardSource, read_shard_transitions, reward_source
from train.run_dir import RunDir, RunSpec, RunState

__all__ = ["RunResult", "check_spec", "gradient_updates", "ingest", "loss_columns", "start_run", "train_offline"]

Echo = Callable[[str], None]
#: The losses each algorithm's update reports (d3rlpy 2.8), in the run log's column order.
LOSSES = {
    "sac": ("critic_loss", "actor_loss", "temp", "temp_loss"),
    "iql": ("critic_loss", "q_loss", "v_loss", "actor_loss"),
    "td3+bc": ("critic_loss", "actor_loss", "bc_loss"),
    "cql": ("critic_loss", "conservative_loss", "actor_loss", "temp", "temp_loss", "alpha"),
    "bc": ("loss",),
}


@dataclass
class RunResult:
    """A finished (or interrupted-and-resumed) run: its state at the last checkpoint and its replay buffer."""

    state: RunState
    buffer: ReplayBuffer
    agent: Agent


def ingest(
    buffer: ReplayBuffer, dataset: Dataset, labels: LabelSet, shards: Sequence[str], config: TrainConfig, reward: RewardSource,
    held: Sequence[str] = (),
) -> dict[str, int]:
    """Add the transitions of ``shards`` to replay; returns the transitions added per shard, in order.

    No episode may be in two of ``shards`` and the shards already ``held`` (it would be replayed twice).
    With ``dataset.skip_bad``, a shard that cannot be read is left out and listed in ``dataset.bad_shards``.
    """
    dataset.episode_index([*held, *shards])
    bar = tqdm(shards, desc="replay", unit="shard", leave=False, disable=None)
    added: dict[str, int] = {}
    read = functools.partial(read_shard_transitions, dataset, labels, bev_size=config.bev_size, frame_codec=config.frame_codec, reward=reward)
    for shard, chunk in dataset.readable(bar, read):
        buffer.add(chunk)
        added[shard] = len(chunk)
    return added


def gradient_updates(agent: Agent, buffer: ReplayBuffer, n: int, batch_size: int) -> dict[str, float]:
    """``n`` updates on uniform mini-batches; the mean of each loss d3rlpy reports."""
    totals: dict[str, float] = defaultdict(float)
    for _ in tqdm(range(n), desc="updates", unit="update", leave=False, disable=None):
        for key, value in agent.update(buffer.sample(batch_size)).items():
            totals[key] += value
    return {key: value / n for key, value in totals.items()}


def loss_columns(losses: dict[str, float], algo: str) -> dict[str, float | None]:
    """The losses an algorithm reports, as log columns; empty (None) before its first update."""
    return {key: losses.get(key) for key in LOSSES[algo]}


def start_run(run: RunDir) -> tuple[RunState, Agent]:
    """The run's state and agent: fresh, or from the last checkpoint."""
    config = run.spec().config
    state = run.state()
    if state is None:
        return RunState(), create_agent(config)
    return state, load_agent(run.latest_checkpoint(), device=config.device)


def check_spec(spec: RunSpec, skip_bad: bool = False) -> None:
    """What can be checked before a run's ``run.json`` is written: the dataset opens, the label set exists
    (offline; an online run's first annotation pass may create it) with a spec matching its hash, and the
    reward source builds. A run that fails here leaves nothing behind."""
    dataset = Dataset(spec.dataset, skip_bad)
    if spec.mode == "online" and not dataset.fs.exists(f"{dataset.path}/dataset.json"):
        return  # the first round creates the dataset
    dataset = Dataset.open(spec.dataset, skip_bad)
    labels = dataset.label_set(spec.label_set)
    if spec.mode == "offline" or labels.exists():
        reward_source(labels.info(), spec.reward_from_components, spec.reward_overrides)


def train_offline(
    run: RunDir, echo: Echo = print, on_checkpoint: Callable[[RunState, Agent], None] | None = None, skip_bad: bool = False
) -> RunResult:
    """``offline_steps`` gradient updates on the dataset's labelled shards, checkpointed every ``checkpoint_every``.

    ``on_checkpoint(state, agent)`` runs after each checkpoint is committed (an experiment evaluates there).
    ``skip_bad``: raw or label shards that cannot be read are left out of replay and named.
    """
    spec = run.spec()
    config = spec.config
    dataset = Dataset.open(spec.dataset, skip_bad)
    labels = dataset.label_set(spec.label_set)
    reward = reward_source(labels.info(), spec.reward_from_components, spec.reward_overrides)
    state, agent = start_run(run)

    if state.consumed:
        shards = state.consumed
    else:
        everything = dataset.shards()
        shards = labels.labelled(everything)
        if len(shards) < len(everything):
            echo(f"{len(everything) - len(shards)} of {len(everything)} raw shard(s) have no current labels in label set "
                 f"{spec.label_set!r} and are left out; `pipeline annotate` labels them")  # fmt: skip
    buffer = ReplayBuffer(config.buffer_limit, seed=config.seed + state.round)
    added = ingest(buffer, dataset, labels, shards, config, reward)
    state.consumed = list(added)
    for shard, why in dataset.bad_shards.items():
        echo(f"skipped unreadable shard {shard}: {why}")
    if len(buffer) == 0:
        raise DatasetError(f"{labels.path}: no labelled transitions in {dataset.url}; run `pipeline annotate` first")
    echo(f"replay: {len(buffer)} transitions from {len(added)} shard(s), {buffer.nbytes / len(buffer):.0f} bytes per transition")

    log = MetricsLog(run.path, echo)
    try:
        while state.grad_steps < config.offline_steps:
            n = min(config.checkpoint_every, config.offline_steps - state.grad_steps)
            started = time.perf_counter()
            losses = gradient_updates(agent, buffer, n, config.batch_size)
            seconds = time.perf_counter() - started
            state.grad_steps += n
            state.round += 1
            run.commit(state, lambda path: save_agent(agent, path))
            log.log(state.grad_steps, {
                "round": state.round, "grad_steps": state.grad_steps, "buffer_size": len(buffer), "updates": n,
                **loss_columns(losses, config.algo), "update_s": round(seconds, 3), "updates_per_s": round(n / seconds, 3),
            })  # fmt: skip
            if on_checkpoint is not None:
                on_checkpoint(state, agent)
    finally:
        log.close()
    return RunResult(state, buffer, agent)
