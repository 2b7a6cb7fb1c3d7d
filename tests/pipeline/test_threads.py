"""The thread budget: each part of the pipeline gets an explicit torch thread count, the parts that run at
once never ask for more than the cores, and child processes really run with theirs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from thread_probe import ThreadProbe

from collect import EnvSpec, EpisodeLimits, collect_episodes
from pipeline.background_annotation import BackgroundAnnotation
from pipeline.threads import COLLECTOR_THREADS, available_cores, online_budget, thread_env, use_threads, worker_threads


@pytest.mark.parametrize("cores, workers", [(c, w) for c in (2, 3, 4, 8, 16, 64) for w in (1, 2) if w < c])  # each needs a core
def test_the_online_round_never_oversubscribes_its_cores(cores, workers):
    budget = online_budget(annotation_workers=workers, cores=cores)
    # collection and updates take turns in the trainer; the annotation pass runs beside either
    assert max(budget.collector, budget.updates) + budget.annotation_workers * budget.annotation_threads <= cores
    assert budget.collector == COLLECTOR_THREADS and budget.updates >= 1 and budget.annotation_threads >= 1
    assert budget.updates + workers * budget.annotation_threads >= cores - workers  # and leaves little idle
    assert f"gradient updates {budget.updates}" in budget.describe()


def test_update_threads_can_be_fixed_and_the_pass_gets_the_rest():
    budget = online_budget(update_threads=6, cores=8)
    assert (budget.updates, budget.annotation_threads) == (6, 2)
    assert online_budget(update_threads=8, cores=8).annotation_threads == 1  # never 0: the pass must run
    assert online_budget(cores=1) == online_budget(cores=1, update_threads=1)
    assert worker_threads(3, cores=8) == 2 and worker_threads(16, cores=8) == 1


@pytest.mark.skipif(available_cores() < 2, reason="one thread is torch's default on one core: nothing to tell apart")
def test_collect_worker_processes_run_with_the_budget(tmp_path, monkeypatch):
    for name in thread_env(1):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    before = torch.get_num_threads()
    try:
        use_threads(1)  # what `pipeline collect` does before it starts its workers (torch would start one per core)
        assert torch.get_num_threads() == 1
        env = EnvSpec(limits=EpisodeLimits(max_steps=4))
        collect_episodes(str(tmp_path / "ds"), env, ThreadProbe(tmp_path / "probe"), episodes=2, workers=2, episodes_per_shard=1)
    finally:
        torch.set_num_threads(before)
    reports = [json.loads(p.read_text()) for p in (tmp_path / "probe").glob("*.json")]
    assert len(reports) == 2 and os.getpid() not in {r["pid"] for r in reports}  # both episodes ran in worker processes
    # (one worker may take both: the pool hands out episodes as workers free up)
    assert {r["threads"] for r in reports} == {1}


def test_the_background_pass_is_started_with_its_workers_and_threads(tmp_path):
    annotation = BackgroundAnnotation("data/ds", "clg", ["--set", "gate.source=scene"], tmp_path / "a.log", workers=2, threads=3)
    assert annotation.command[-4:] == ["--workers", "2", "--threads", "3"]
    assert annotation._thread_env == thread_env(3)
    own = BackgroundAnnotation("data/ds", "clg", ["--threads=5", "--scheduler", "tcp://h:8786"], tmp_path / "a.log", threads=3)
    assert "--workers" not in own.command and own.command.count("--threads=5") == 1 and "3" not in own.command
