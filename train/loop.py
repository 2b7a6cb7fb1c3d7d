"""The training loops, readable top to bottom: offline on an existing dataset, and online in rounds.

Online round k:

1. collect ``steps_per_round`` steps with the current policy (SAC samples: its own exploration noise;
   uniform random actions for the run's first ``learning_starts`` steps) into new shards of the dataset;
2. start a background annotation pass unless one is running (it labels these shards and any earlier ones
   still unlabelled, while round k+1 collects); only the last round waits for its labels;
3. add to the buffer every labelled shard of the dataset not in it yet (the run's own, and any the dataset
   held already); unlabelled transitions never enter it;
4. run the gradient updates owed: ``updates_per_step`` per labelled transition the run collected beyond
   its first ``learning_starts``. Updates follow the labels, so a slow annotator delays them without
   changing their number;
5. checkpoint (networks, optimisers, state.json) and log the round.

A killed run resumes from its last checkpoint: the buffer is rebuilt from the shards listed as consumed,
shards labelled since are added in the next round, and the episode counter continues after the last
episode on disk, so no data is lost or counted twice.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow.compute as pc
import torch
from d3rlpy.algos import SAC
from tqdm.auto import tqdm

from data_schema import Dataset, DatasetError, LabelSet
from train.agent import SacDriver, create_agent, load_agent, save_agent
from train.annotation import BackgroundAnnotation
from train.config import TrainConfig
from train.metrics_log import MetricsLog
from train.replay import STORED_REWARD, ReplayBuffer, RewardSource, read_shard_transitions
from train.run_dir import RunDir, RunState

Echo = Callable[[str], None]


@dataclass
class RunResult:
    """A finished (or interrupted-and-resumed) run: its state at the last checkpoint and its replay buffer."""

    state: RunState
    buffer: ReplayBuffer
    agent: SAC


def reward_source(labels: LabelSet, from_components: bool, overrides: dict[str, Any]) -> RewardSource:
    """Stored label rewards, or rewards recomputed by ``annotate.reward`` from the stored components."""
    if not from_components:
        if overrides:
            raise ValueError("reward overrides need --reward-from-components")
        return STORED_REWARD
    from annotate.config import build
    from annotate.reward import COMPONENT_COLUMNS, RAW_COLUMNS, RewardConfig, synthesize

    stored = labels.spec().get("spec", {}).get("reward")
    if not isinstance(stored, dict):
        raise DatasetError(f"{labels.path}/label_set.json: holds no reward parameters (spec.reward); cannot recompute rewards")
    config = build(RewardConfig, {**stored, **overrides}, "--reward")
    return RewardSource(
        label_columns=tuple(COMPONENT_COLUMNS),
        raw_columns=tuple(c for c in RAW_COLUMNS if c not in ("episode_id", "step")),
        compute=lambda joined: synthesize(joined, config)["reward"],
    )


def ingest(
    buffer: ReplayBuffer, dataset: Dataset, labels: LabelSet, shards: Sequence[str], config: TrainConfig, reward: RewardSource
) -> None:
    for shard in tqdm(shards, desc="replay", unit="shard", leave=False, disable=None):
        buffer.add(read_shard_transitions(dataset, labels, shard, config.bev_size, config.frame_codec, reward))


def gradient_updates(agent: SAC, buffer: ReplayBuffer, n: int, batch_size: int) -> dict[str, float]:
    """``n`` SAC updates on uniform mini-batches; the mean of each loss d3rlpy reports."""
    totals: dict[str, float] = defaultdict(float)
    for _ in tqdm(range(n), desc="updates", unit="update", leave=False, disable=None):
        for key, value in agent.update(buffer.sample(batch_size)).items():
            totals[key] += value
    return {key: value / n for key, value in totals.items()}


def _loss_columns(losses: dict[str, float]) -> dict[str, float | None]:
    return {key: losses.get(key) for key in ("critic_loss", "actor_loss", "temp", "temp_loss")}


def _start(run: RunDir) -> tuple[RunState, SAC]:
    """The run's state and agent: fresh, or from the last checkpoint."""
    if run.spec().config.torch_threads:
        torch.set_num_threads(run.spec().config.torch_threads)
    state = run.state()
    if state is None:
        return RunState(), create_agent(run.spec().config)
    return state, load_agent(run.latest_checkpoint(), device=run.spec().config.device)


def train_offline(run: RunDir, echo: Echo = print) -> RunResult:
    """``offline_steps`` gradient updates on the dataset's labelled shards, checkpointed every ``checkpoint_every``."""
    spec = run.spec()
    config = spec.config
    dataset = Dataset.open(spec.dataset)
    labels = dataset.label_set(spec.label_set)
    labels.spec()
    reward = reward_source(labels, spec.reward_from_components, spec.reward_overrides)
    state, agent = _start(run)

    labelled = set(labels.shards())
    shards = state.consumed or [s for s in dataset.shards() if s in labelled]
    buffer = ReplayBuffer(config.buffer_limit, seed=config.seed + state.round)
    ingest(buffer, dataset, labels, shards, config, reward)
    state.consumed = list(shards)
    if len(buffer) == 0:
        raise DatasetError(f"{labels.path}: no labelled transitions in {dataset.url}; run `pipeline annotate` first")
    echo(f"replay: {len(buffer)} transitions from {len(shards)} shard(s), {buffer.nbytes / len(buffer):.0f} bytes per transition")

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
                **_loss_columns(losses), "update_s": round(seconds, 3), "updates_per_s": round(n / seconds, 3),
            })  # fmt: skip
    finally:
        log.close()
    return RunResult(state, buffer, agent)


def _collected_so_far(dataset: Dataset, run_id: str) -> tuple[int, int]:
    """(environment steps, next episode index) of the run's shards on disk, a killed round's included."""
    from collect.collector import run_shards

    steps, next_episode = 0, 0
    prefix = f"{run_id}-"
    for shard in run_shards(dataset, run_id):
        table = dataset.read_shard(shard, ["episode_id", "is_last"])
        steps += table.num_rows - pc.sum(table.column("is_last")).as_py()
        indices = [int(e[len(prefix):]) for e in pc.unique(table.column("episode_id")).to_pylist()]
        next_episode = max([next_episode, *(i + 1 for i in indices)])
    return steps, next_episode


def _labelled_ready(dataset: Dataset, labels: LabelSet, consumed: set[str]) -> list[str]:
    """Raw shards, oldest first, whose current label shard exists and that are not in the buffer yet."""
    if not labels.exists():
        return []
    digest = labels.hash
    labelled = set(labels.shards())
    return [s for s in dataset.shards() if s not in consumed and s in labelled and labels.shard_hash(s) == digest]


def _unlabelled(dataset: Dataset, labels: LabelSet) -> list[str]:
    done = set(labels.shards()) if labels.exists() else set()
    return [s for s in dataset.shards() if s not in done]


def _lag_seconds(dataset: Dataset, labels: LabelSet, shard: str) -> float:
    """Seconds between a raw shard's write and its label shard's write."""
    raw = dataset.fs.modified(dataset.shard_path(shard))
    lab = dataset.fs.modified(labels.shard_path(shard))
    return (lab - raw).total_seconds()


def train_online(run: RunDir, echo: Echo = print) -> RunResult:
    """Rounds of collection (foreground), annotation (background) and updates; see the module docstring."""
    from collect.collector import run_shards
    from collect.env import EnvSpec, EpisodeLimits
    from collect.rollout import EpisodeSummary, RolloutWriter

    spec = run.spec()
    config = spec.config
    dataset = Dataset.create(spec.dataset)
    labels = dataset.label_set(spec.label_set)
    state, agent = _start(run)
    state.env_steps, state.episodes = _collected_so_far(dataset, spec.run_id)  # exact after a kill mid-round

    buffer = ReplayBuffer(config.buffer_limit, seed=config.seed + state.round)
    own_labelled = 0  # transitions of this run's own shards that entered the buffer: what updates are owed for

    def add(shards: Sequence[str]) -> None:
        nonlocal own_labelled
        if not shards:
            return  # the label set may not exist yet: the first annotation pass creates it
        own = set(run_shards(dataset, spec.run_id))
        reward = reward_source(labels, spec.reward_from_components, spec.reward_overrides)
        for shard in tqdm(shards, desc="replay", unit="shard", leave=False, disable=None):
            chunk = read_shard_transitions(dataset, labels, shard, config.bev_size, config.frame_codec, reward)
            buffer.add(chunk)
            own_labelled += len(chunk) if shard in own else 0

    def add_labelled() -> tuple[int, list[float]]:
        """Move newly labelled shards into the buffer; returns their count and collection->annotation lags."""
        ready = _labelled_ready(dataset, labels, set(state.consumed))
        add(ready)
        state.consumed.extend(ready)
        return len(ready), [_lag_seconds(dataset, labels, s) for s in ready]

    if state.consumed:
        add(state.consumed)
        echo(f"resumed at round {state.round}: buffer rebuilt with {len(buffer)} transitions from {len(state.consumed)} shard(s)")
    annotation = BackgroundAnnotation(spec.dataset, spec.label_set, spec.annotate_args, run.path / "annotate.log")
    if _unlabelled(dataset, labels):
        annotation.start()  # labels whatever earlier rounds (or a killed run) left unlabelled

    def wait_for_labels() -> None:
        """The last round: wait until every shard this run collected is labelled (passes that began earlier
        may have missed the newest shards, so start another until none is pending)."""
        for attempt in range(3):
            failures = annotation.failures
            annotation.wait()
            unlabelled = set(_unlabelled(dataset, labels))
            if not [s for s in run_shards(dataset, spec.run_id) if s in unlabelled]:
                return
            if annotation.failures > failures or attempt == 2:
                break
            annotation.start()
        raise RuntimeError(f"background annotation left shards unlabelled; see {annotation.log_path}")

    env = EnvSpec(limits=EpisodeLimits(max_steps=config.max_episode_steps)).build()
    driver = SacDriver(agent, name="", random_steps=max(0, config.learning_starts - state.env_steps), seed=config.seed)
    bar = tqdm(total=config.steps_per_round, desc="collect", unit="step", leave=False, disable=None)

    def on_episode(summary: EpisodeSummary) -> None:
        bar.update(summary.steps)

    writer = RolloutWriter(dataset, env, driver, run_id=spec.run_id, base_seed=config.seed, on_episode=on_episode)
    log = MetricsLog(run.path, echo)
    try:
        for k in range(state.round, config.rounds):
            # 1. collect with the current policy; annotation of earlier shards runs meanwhile
            driver.name = f"sac-{spec.run_id}-round{k}"
            bar.reset(total=config.steps_per_round)
            started = time.perf_counter()
            shards = writer.collect_steps(config.steps_per_round, state.episodes, config.episodes_per_shard)
            collect_s = time.perf_counter() - started
            collected = sum(s.steps for s in shards)
            state.env_steps += collected
            state.episodes += sum(len(s.episodes) for s in shards)
            # 2. hand them to the annotator (a new pass unless one is still running); the last round waits
            annotation.start()
            started = time.perf_counter()
            if k == config.rounds - 1:
                wait_for_labels()
            wait_s = time.perf_counter() - started
            # 3. labelled transitions enter the buffer as their labels arrive
            annotated, lags = add_labelled()
            # 4. the updates owed for the run's labelled transitions past learning_starts
            owed = int(round(max(0, own_labelled - config.learning_starts) * config.updates_per_step)) - state.grad_steps
            n = max(0, owed) if len(buffer) >= max(config.learning_starts, 1) else 0
            started = time.perf_counter()
            losses = gradient_updates(agent, buffer, n, config.batch_size) if n else {}
            update_s = time.perf_counter() - started
            state.grad_steps += n
            # 5. checkpoint and log
            state.round = k + 1
            run.commit(state, lambda path: save_agent(agent, path))
            log.log(state.grad_steps, {
                "round": state.round, "env_steps": state.env_steps, "steps_collected": collected,
                "episodes": sum(len(s.episodes) for s in shards), "shards_collected": len(shards),
                "shards_annotated": annotated, "shards_pending": len(_pending(dataset, spec.run_id, state.consumed)),
                "buffer_size": len(buffer), "updates": n, "grad_steps": state.grad_steps, **_loss_columns(losses),
                "lag_mean_s": round(float(np.mean(lags)), 2) if lags else None,
                "lag_max_s": round(float(np.max(lags)), 2) if lags else None,
                "collect_s": round(collect_s, 2), "steps_per_s": round(collected / collect_s, 1),
                "label_wait_s": round(wait_s, 2), "update_s": round(update_s, 2),
                "annotation_passes": annotation.passes, "annotation_failures": annotation.failures,
            })  # fmt: skip
        echo(f"done: {state.round} rounds, {state.env_steps} steps collected, buffer {len(buffer)} transitions, "
             f"{state.grad_steps} updates")  # fmt: skip
    except BaseException:
        annotation.stop()
        raise
    finally:
        bar.close()
        log.close()
        env.close()
    return RunResult(state, buffer, agent)


def _pending(dataset: Dataset, run_id: str, consumed: Sequence[str]) -> list[str]:
    """The run's shards whose transitions are not in the buffer yet (waiting for labels)."""
    from collect.collector import run_shards

    done = set(consumed)
    return [s for s in run_shards(dataset, run_id) if s not in done]
