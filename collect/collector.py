"""Collecting a run of episodes into a dataset: resumable, in parallel worker processes.

A run is identified by its run id (by default a short hash of the settings that determine its data), and
owes episodes ``0 .. N-1``; over ``k`` scenarios, episode ``i`` plays the ``i mod k``-th. Whatever complete shards of the run already hold is skipped, so re-running the
same command after a crash, or with a larger ``episodes``, collects only what is missing.

One collector per run id at a time, enforced (``data_schema.run_lock``): the run holds the dataset's lock
of its run id while it plans, cleans its leftover tmp files and writes, so a second collector of the same
run fails at once. Worker processes die with the collector (even a SIGKILLed one) and hold the run's fence
while they live, so a rerun waits until the workers of a killed run are gone before it lists what the run
holds: no episode is collected by a survivor and by the rerun.

Each worker process owns one simulator (libsumo is one simulation per process), one policy and one
``RolloutWriter``, and writes its own shards; the parent only plans, reports progress and sums up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import multiprocessing.util as mp_util
import os
import queue
import signal
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow.compute as pc

from collect.env import EnvSpec
from collect.policies import make_policy
from collect.policies.base import Policy
from collect.rollout import EpisodeSummary, RolloutWriter, ShardSummary
from collect.scenarios import FREE, scenario_for
from data_schema import Dataset, DatasetError
from data_schema.naming import check_run_id, episode_index, shard_name_pattern
from data_schema.run_lock import die_with_parent, join_run

#: Settings that say how to reach a simulator, not what it simulates: they leave the default run id alone.
CONNECTION_FIELDS = frozenset({"host", "port", "timeout_s", "tm_port"})
#: Settings added after runs existed, left out of the run id while they hold the value those runs had, so
#: that such runs keep their id and resume.
ADDED_FIELDS = {"scenarios": (FREE,)}


def default_run_id(env: EnvSpec, policy_name: str, seed: int) -> str:
    """A short hash of everything that decides what episode ``i`` of the run contains.

    It is the same from any checkout or machine, so a rerun elsewhere resumes: a file (the SUMO network) counts
    by its content, how the simulator is reached (CARLA host, ports, timeout) does not count, and the
    scenarios count unless they are the free town alone (what every run was before scenarios existed).
    """
    key = json.dumps([_run_key(env), policy_name, seed], sort_keys=True, default=repr)
    return "r" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _run_key(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f.name for f in dataclasses.fields(value) if f.name not in CONNECTION_FIELDS]
        kept = [name for name in fields if name not in ADDED_FIELDS or getattr(value, name) != ADDED_FIELDS[name]]
        return {"type": type(value).__name__} | {name: _run_key(getattr(value, name)) for name in kept}
    if isinstance(value, Path):
        return hashlib.sha256(value.read_bytes()).hexdigest()
    if isinstance(value, (list, tuple)):
        return [_run_key(v) for v in value]
    return value


def completed_episodes(
    dataset: Dataset, run_id: str, policy_name: str, seed: int, scenarios: Sequence[str] = (FREE,)
) -> dict[int, str]:
    """Episode index -> shard for the episodes of ``run_id`` already on disk.

    Refuses a run whose episodes were collected with another policy, seed or scenario: mixing them under one
    run id would make episode ``i`` mean two different things.
    """
    done: dict[int, str] = {}
    columns = ("episode_id", "policy", "seed", "scenario")
    shards = dataset.run_shards(run_id)
    dataset.episode_index(shards)  # an episode in two of the run's shards is an error naming both
    for shard in shards:
        table = dataset.read_shard(shard, ["step", *columns]).filter(pc.field("step") == 0)
        for eid, policy, episode_seed, scenario in zip(*(table.column(c).to_pylist() for c in columns)):
            index = episode_index(run_id, eid)
            if policy != policy_name or episode_seed != seed + index:
                raise DatasetError(
                    f"{dataset.shard_path(shard)}: run {run_id!r} was collected with policy {policy!r} and base seed "
                    f"{episode_seed - index}, not {policy_name!r} and {seed}; choose another --run-id"
                )
            if scenario != scenario_for(scenarios, index):
                raise DatasetError(
                    f"{dataset.shard_path(shard)}: episode {index} of run {run_id!r} ran scenario {scenario!r}, but "
                    f"--scenario {' '.join(scenarios)} gives it {scenario_for(scenarios, index)!r}; choose another --run-id"
                )
            done[index] = shard
    return done


@dataclass(frozen=True)
class CollectSummary:
    run_id: str
    requested: int  # episodes the run owes (0 .. requested - 1)
    already_done: int  # of those, found in complete shards at start
    shards: tuple[ShardSummary, ...] = ()
    removed_leftovers: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def episodes(self) -> list[EpisodeSummary]:
        return [e for s in self.shards for e in s.episodes]

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.shards)

    @property
    def outcomes(self) -> Counter:
        return Counter(e.outcome for e in self.episodes)


def plan_shards(missing: Sequence[int], episodes_per_shard: int, workers: int) -> list[list[int]]:
    """Split the missing episode indices into shards, small enough that every worker gets work."""
    if not missing:
        return []
    size = max(1, min(episodes_per_shard, math.ceil(len(missing) / workers)))
    return [list(missing[i : i + size]) for i in range(0, len(missing), size)]


@dataclass(frozen=True)
class CollectJob:
    """Everything a worker needs to build its own simulator, policy and writer (picklable)."""

    dataset_url: str
    env: EnvSpec
    policy: str | Policy
    run_id: str
    seed: int
    progress: object = field(default=None, compare=False)  # multiprocessing queue of EpisodeSummary, or None
    fence: str = ""  # the run's worker fence (data_schema.run_lock), held by each worker while it lives
    parent_pid: int = 0  # the collector; its workers die with it

    def writer(self, on_episode: Callable[[EpisodeSummary], None] | None) -> RolloutWriter:
        policy = make_policy(self.policy, self.seed) if isinstance(self.policy, str) else self.policy
        return RolloutWriter(Dataset.open(self.dataset_url), self.env.build(), policy, self.run_id, self.seed, on_episode)


_job: CollectJob | None = None
_worker: RolloutWriter | None = None


def _init_worker(job: CollectJob) -> None:
    """Ties the worker's life to the collector's: it gets SIGTERM when the collector dies, however it dies,
    closes its simulator and exits; and it holds the run's fence, so a rerun waits for it to be gone."""
    global _job
    signal.signal(signal.SIGTERM, _on_collector_death)
    die_with_parent(job.parent_pid)
    join_run(job.fence)
    _job = job


def _on_collector_death(signum: int, frame: object) -> None:
    """SIGTERM in a worker: leave without writing anything more (a shard being written stays a tmp file)."""
    if _worker is not None:
        _worker.env.close()  # CARLA goes back to asynchronous mode, SUMO closes
    os._exit(128 + signum)


def _collect_shard(indices: list[int]) -> ShardSummary:
    """Run in a worker: the simulator is started by the first task, not the pool initializer, so that a
    failure to start (no CARLA server) reaches the parent as its own exception instead of a broken pool."""
    global _worker
    assert _job is not None, "worker not initialised"
    if _worker is None:
        _worker = _job.writer(_job.progress.put if _job.progress is not None else None)
        # pool workers leave through os._exit: a multiprocessing finalizer is what still runs then (CARLA
        # must be put back into asynchronous mode, SUMO closed)
        mp_util.Finalize(_worker, _worker.env.close, exitpriority=10)
    return _worker.collect_shard(indices)


def collect_episodes(
    dataset_url: str,
    env: EnvSpec,
    policy: str | Policy,
    episodes: int,
    seed: int = 0,
    run_id: str | None = None,
    workers: int = 1,
    episodes_per_shard: int = 8,
    on_episode: Callable[[EpisodeSummary], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> CollectSummary:
    """Make sure episodes ``0 .. episodes-1`` of the run are in the dataset, collecting the missing ones.

    ``policy`` is a spec for ``make_policy`` (``random``, ``expert``, a TorchScript path) or a Policy object
    (picklable when ``workers > 1``). ``on_plan(owed, already_done)`` is called once before collecting and
    ``on_episode`` after each finished episode, in this process.
    """
    if episodes < 0 or workers < 1 or episodes_per_shard < 1:
        raise ValueError(f"need episodes >= 0, workers >= 1, episodes_per_shard >= 1; got {episodes}, {workers}, {episodes_per_shard}")
    started = time.perf_counter()
    policy_obj = make_policy(policy, seed) if isinstance(policy, str) else policy
    run_id = check_run_id(run_id) if run_id is not None else default_run_id(env, policy_obj.name, seed)
    dataset = Dataset.create(dataset_url)
    with dataset.run_lock(run_id) as lock:
        removed = tuple(dataset.remove_leftovers(owner=shard_name_pattern(run_id)))
        done = completed_episodes(dataset, run_id, policy_obj.name, seed, env.scenarios)
        missing = [i for i in range(episodes) if i not in done]
        already = episodes - len(missing)
        if on_plan is not None:
            on_plan(episodes, already)
        chunks = plan_shards(missing, episodes_per_shard, workers)
        if not chunks:
            shards: list[ShardSummary] = []
        elif workers == 1 or len(chunks) == 1:
            job = CollectJob(dataset_url, env, policy_obj, run_id, seed)
            writer = job.writer(on_episode)
            try:
                shards = [writer.collect_shard(chunk) for chunk in chunks]
            finally:
                writer.env.close()
        else:
            job = CollectJob(dataset_url, env, policy, run_id, seed, fence=str(lock.fence), parent_pid=os.getpid())
            shards = _collect_in_workers(job, chunks, workers, on_episode)
    return CollectSummary(run_id, episodes, already, tuple(shards), removed, time.perf_counter() - started)


def _collect_in_workers(
    job: CollectJob, chunks: list[list[int]], workers: int, on_episode: Callable[[EpisodeSummary], None] | None
) -> list[ShardSummary]:
    context = mp.get_context("spawn")
    progress = context.Queue()
    job = dataclasses.replace(job, progress=progress)
    shards: list[ShardSummary] = []

    def drain() -> None:
        while True:
            try:
                summary = progress.get_nowait()
            except queue.Empty:
                return
            if on_episode is not None:
                on_episode(summary)

    # workers are started by ``submit`` in this (the main) thread: their death signal follows this thread
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context, initializer=_init_worker, initargs=(job,)) as pool:
        pending: set[Future] = {pool.submit(_collect_shard, chunk) for chunk in chunks}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                shards.extend(f.result() for f in finished)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    drain()
    return sorted(shards, key=lambda s: s.episodes[0].index)
