"""One cell of an experiment: a policy trained on one label set with one seed, evaluated along its training
(offline on the shared dataset's label set, or online in rounds on a dataset of its own).

A cell is idempotent and resumable, so dask may run it again and a killed experiment redoes only what is
missing: training resumes from the run's last checkpoint, an evaluation already written for a checkpoint is
not run again (its episodes are reused too), and the cell's ``result.json`` is written last, atomically;
its presence is what "finished" means.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from data_schema.storage import atomic_write_text
from pipeline.evaluate import evaluate_policy
from pipeline.online import train_online
from train import Agent, RunDir, RunSpec, RunState, TrainConfig, export_torchscript, train_offline

__all__ = ["CellTask", "cell_dir", "exclusive", "read_result", "run_cell"]

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs for one cell (small and picklable)."""

    out: str  # the experiment's output directory
    variant: str
    penalty: float
    seed: int
    label_set: str
    dataset: str
    config: TrainConfig  # offline: offline_steps and checkpoint_every; online: rounds (one evaluation each)
    scenarios: tuple[str, ...]
    episodes: int  # per scenario
    eval_seed: int
    max_steps: int
    online: bool = False  # online rounds into the cell's own dataset, annotated in the background with `annotate`
    annotate: tuple[str, ...] = ()  # the label set's settings (`pipeline annotate --set` items)


def cell_dir(out: str | Path, label_set: str, seed: int) -> Path:
    return Path(out) / "cells" / label_set / f"seed{seed}"


def read_result(out: str | Path, label_set: str, seed: int) -> dict[str, Any] | None:
    """A finished cell's result, or None."""
    path = cell_dir(out, label_set, seed) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block; waits while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def run_cell(task: CellTask) -> dict[str, Any]:
    """Train the cell's policy, evaluate it at each checkpoint, write and return the result.

    A worker of a killed experiment may still be running the same cell: the cell's lock makes this one wait
    for it, then find its result.
    """
    here = cell_dir(task.out, task.label_set, task.seed)
    with exclusive(here / "cell.lock"):
        done = read_result(task.out, task.label_set, task.seed)
        return done if done is not None else _train_and_evaluate(task, here)


def _train_and_evaluate(task: CellTask, here: Path) -> dict[str, Any]:
    torch.set_num_threads(task.config.torch_threads or 1)
    run = RunDir(here / "run")
    if not run.exists():
        if task.online:
            annotate_args = tuple(arg for item in task.annotate for arg in ("--set", item))
            spec = RunSpec(str(here / "dataset"), task.label_set, "online", task.config, run_id=f"seed{task.seed}", annotate_args=annotate_args)
        else:
            spec = RunSpec(task.dataset, task.label_set, "offline", task.config)
        run.write_spec(spec)

    def evaluate(state: RunState, agent: Agent) -> None:
        point = here / f"curve-{state.grad_steps:09d}.json"
        if point.is_file():
            return
        policy = export_torchscript(agent, here / "policies" / f"policy-{state.grad_steps}.pt")
        episodes = task.episodes * len(task.scenarios)  # episode i plays scenario i mod k
        metrics = evaluate_policy(str(policy), str(here / "evaluation"), episodes, task.eval_seed, task.max_steps, scenarios=task.scenarios)
        atomic_write_text(point, json.dumps({"grad_steps": state.grad_steps, **metrics.as_dict()}))

    train = train_online if task.online else train_offline
    result = train(run, echo=lambda line: None, on_checkpoint=evaluate)
    if not (here / f"curve-{result.state.grad_steps:09d}.json").is_file():  # finished before a kill, not yet evaluated
        evaluate(result.state, result.agent)
    curve = [json.loads(p.read_text()) for p in sorted(here.glob("curve-*.json"))]
    cell = {
        "variant": task.variant, "penalty": task.penalty, "seed": task.seed, "label_set": task.label_set,
        "algorithm": task.config.algo, "curve": curve, "final": curve[-1],
    }  # fmt: skip
    atomic_write_text(here / RESULT_FILE, json.dumps(cell, indent=2))
    return cell
