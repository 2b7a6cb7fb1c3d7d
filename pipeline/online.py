"""The online round, readable top to bottom: it composes collect (driving with the current policy), annotate
(a background `pipeline annotate` pass) and train (replay and SAC updates) through the dataset on disk.

Round k:

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
from typing import Callable, Sequence

import numpy as np
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from collect import EnvSpec, EpisodeLimits, RolloutWriter
from data_schema import Dataset, LabelSet
from data_schema.naming import episode_index
from pipeline.background_annotation import BackgroundAnnotation
from pipeline.sac_driver import SacDriver
from pipeline.threads import online_budget
from train import (
    Agent, Echo, MetricsLog, ReplayBuffer, RunDir, RunResult, RunState, gradient_updates, ingest, loss_columns, reward_source, save_agent,
    start_run,
)  # fmt: skip

__all__ = ["train_online"]


def train_online(
    run: RunDir, echo: Echo = print, skip_bad: bool = False, on_checkpoint: Callable[[RunState, Agent], None] | None = None
) -> RunResult:
    """Rounds of collection (foreground), annotation (background) and updates; see the module docstring.

    The run holds its run id's lock (``data_schema.run_lock``) throughout: two ``--resume`` of one run at
    once would collect the same episodes twice. ``skip_bad``: shards that cannot be read stay out of replay
    (and background annotation passes skip them too). ``on_checkpoint(state, agent)`` runs after each round's
    checkpoint is committed (an experiment evaluates there)."""
    spec = run.spec()
    dataset = Dataset.create(spec.dataset, skip_bad=skip_bad)
    with dataset.run_lock(spec.run_id):
        return _rounds(run, dataset, echo, on_checkpoint)


def _rounds(run: RunDir, dataset: Dataset, echo: Echo, on_checkpoint: Callable[[RunState, Agent], None] | None) -> RunResult:
    spec = run.spec()
    config = spec.config
    if config.algo != "sac":
        raise ValueError(f"online rounds train SAC (it samples its own exploration); {config.algo} is an offline algorithm")
    labels = dataset.label_set(spec.label_set)
    threads = online_budget(config.torch_threads)
    echo(threads.describe())
    state, agent = start_run(run)
    state.env_steps, state.episodes = _collected_so_far(dataset, spec.run_id)  # exact after a kill mid-round

    buffer = ReplayBuffer(config.buffer_limit, seed=config.seed + state.round)
    # transitions of the run's own shards in the buffer: what updates are owed for
    consumed, own_labelled = _fill(buffer, dataset, labels, state.consumed, [], run)
    if state.consumed:
        echo(f"resumed at round {state.round}: buffer rebuilt with {len(buffer)} transitions from {len(state.consumed)} shard(s)")
    state.consumed = consumed
    annotate_args = (*spec.annotate_args, "--skip-bad") if dataset.skip_bad else spec.annotate_args
    annotation = BackgroundAnnotation(
        spec.dataset, spec.label_set, annotate_args, run.path / "annotate.log", threads.annotation_workers, threads.annotation_threads
    )
    if _unlabelled(dataset, labels):
        annotation.start()  # labels whatever earlier rounds (or a killed run) left unlabelled

    env = EnvSpec(limits=EpisodeLimits(max_steps=config.max_episode_steps)).build()
    driver = SacDriver(agent, name="", random_steps=max(0, config.learning_starts - state.env_steps), seed=config.seed)
    bar = tqdm(total=config.steps_per_round, desc="collect", unit="step", leave=False, disable=None)
    writer = RolloutWriter(dataset, env, driver, run_id=spec.run_id, base_seed=config.seed, on_episode=lambda e: bar.update(e.steps))
    log = MetricsLog(run.path, echo)
    try:
        for k in range(state.round, config.rounds):
            # 1. collect with the current policy; annotation of earlier shards runs meanwhile
            driver.name = f"sac-{spec.run_id}-round{k}"
            bar.reset(total=config.steps_per_round)
            torch.set_num_threads(threads.collector)
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
                _wait_for_labels(annotation, dataset, labels, spec.run_id)
            wait_s = time.perf_counter() - started
            # 3. labelled transitions enter the buffer as their labels arrive
            seen = set(state.consumed) | set(dataset.bad_shards)
            ready = [s for s in labels.labelled() if s not in seen]
            added, own = _fill(buffer, dataset, labels, ready, state.consumed, run)
            own_labelled += own
            state.consumed.extend(added)
            lags = [_lag_seconds(dataset, labels, s) for s in added]
            # 4. the updates owed for the run's labelled transitions past learning_starts
            owed = int(round(max(0, own_labelled - config.learning_starts) * config.updates_per_step)) - state.grad_steps
            n = max(0, owed) if len(buffer) >= max(config.learning_starts, 1) else 0
            torch.set_num_threads(threads.updates)
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
                "shards_annotated": len(added), "shards_pending": len(_pending(dataset, spec.run_id, state.consumed)),
                "buffer_size": len(buffer), "updates": n, "grad_steps": state.grad_steps, **loss_columns(losses, config.algo),
                "lag_mean_s": round(float(np.mean(lags)), 2) if lags else None,
                "lag_max_s": round(float(np.max(lags)), 2) if lags else None,
                "collect_s": round(collect_s, 2), "steps_per_s": round(collected / collect_s, 1),
                "label_wait_s": round(wait_s, 2), "update_s": round(update_s, 2),
                "annotation_passes": annotation.passes, "annotation_failures": annotation.failures,
            })  # fmt: skip
            if on_checkpoint is not None:
                on_checkpoint(state, agent)
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


def _fill(
    buffer: ReplayBuffer, dataset: Dataset, labels: LabelSet, shards: Sequence[str], held: Sequence[str], run: RunDir
) -> tuple[list[str], int]:
    """Add the transitions of labelled ``shards`` to replay (``held``: the shards in it already); returns the
    shards added and how many transitions came from the run's own shards."""
    if not shards:
        return [], 0  # the label set may not exist yet: the first annotation pass creates it
    spec = run.spec()
    own = set(dataset.run_shards(spec.run_id))
    reward = reward_source(labels.info(), spec.reward_from_components, spec.reward_overrides)
    added = ingest(buffer, dataset, labels, shards, spec.config, reward, held)
    return list(added), sum(n for shard, n in added.items() if shard in own)


def _wait_for_labels(annotation: BackgroundAnnotation, dataset: Dataset, labels: LabelSet, run_id: str) -> None:
    """The last round: wait until every shard of the run is labelled (passes that began earlier may have missed
    the newest shards, so start another until none is pending)."""
    for attempt in range(3):
        failures = annotation.failures
        annotation.wait()
        if not _unlabelled(dataset, labels, dataset.run_shards(run_id)):
            return
        if annotation.failures > failures or attempt == 2:
            break
        annotation.start()
    raise RuntimeError(f"background annotation left shards unlabelled; see {annotation.log_path}")


def _collected_so_far(dataset: Dataset, run_id: str) -> tuple[int, int]:
    """(environment steps, next episode index) of the run's shards on disk, a killed round's included."""
    steps, next_episode = 0, 0
    for shard in dataset.run_shards(run_id):
        table = dataset.read_shard(shard, ["episode_id", "is_last"])
        steps += table.num_rows - pc.sum(table.column("is_last")).as_py()
        indices = [episode_index(run_id, e) for e in pc.unique(table.column("episode_id")).to_pylist()]
        next_episode = max([next_episode, *(i + 1 for i in indices)])
    return steps, next_episode


def _unlabelled(dataset: Dataset, labels: LabelSet, shards: Sequence[str] | None = None) -> list[str]:
    """Raw shards (of ``shards``, default all) without a current label shard."""
    wanted = list(shards) if shards is not None else dataset.shards()
    done = set(labels.labelled(wanted))
    return [s for s in wanted if s not in done]


def _lag_seconds(dataset: Dataset, labels: LabelSet, shard: str) -> float:
    """Seconds between a raw shard's write and its label shard's write."""
    raw = dataset.fs.modified(dataset.shard_path(shard))
    lab = dataset.fs.modified(labels.shard_path(shard))
    return (lab - raw).total_seconds()


def _pending(dataset: Dataset, run_id: str, consumed: Sequence[str]) -> list[str]:
    """The run's shards whose transitions are not in the buffer yet (waiting for labels)."""
    done = set(consumed)
    return [s for s in dataset.run_shards(run_id) if s not in done]
