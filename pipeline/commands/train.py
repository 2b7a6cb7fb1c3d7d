"""``pipeline train``: SAC on shards + a label set, online in rounds (``pipeline.online``) or offline."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import click
from tqdm import tqdm

from data_schema import DatasetError
from data_schema.reward import RewardConfig
from data_schema.settings import overrides as parse_overrides
from pipeline.online import train_online
from pipeline.threads import available_cores, offline_update_threads, use_threads
from train import Echo, RunDir, RunSpec, RunState, TrainConfig, check_spec, train_offline
from train.algorithms import ALGORITHMS, OFFLINE_ONLY

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (DatasetError, ValueError, FileNotFoundError, RuntimeError)

#: TrainConfig fields a resumed run may change: how long it goes on and on how many threads, not how it learns.
RESUMABLE = {"rounds", "offline_steps", "torch_threads"}


@click.command("train")
@click.argument("dataset")
@click.option("--label-set", "label_set", required=True, metavar="NAME",
              help="Label set whose rewards train the agent; online runs annotate new shards into it.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: settings, checkpoints every round, metrics.csv and TensorBoard logs (tb/).")
@click.option("--offline", is_flag=True, help="Train on the labelled shards already in DATASET, collecting nothing.")
@click.option("--algo", type=click.Choice(ALGORITHMS), default=None,
              help="Learning algorithm (d3rlpy's, on the same encoder and replay): sac (default; online or offline), "
                   "or offline only: iql, td3+bc, cql, bc (behaviour cloning: rewards unused).")
@click.option("--steps", "offline_steps", type=click.IntRange(min=1), default=None,
              help="Offline: gradient updates in all (default 100000).")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Online: collection rounds (default 20).")
@click.option("--steps-per-round", type=click.IntRange(min=1), default=None,
              help="Online: environment steps collected per round (default 5000).")
@click.option("--updates-per-step", type=click.FloatRange(min=0), default=None,
              help="Online: gradient updates per collected step (default 1).")
@click.option("--learning-starts", type=click.IntRange(min=0), default=None,
              help="Labelled transitions needed before the first update; online, the first this many steps are "
                   "random actions (default 10000).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Mini-batch size (default 256).")
@click.option("--buffer-limit", type=click.IntRange(min=1), default=None,
              help="Replay capacity in transitions, oldest evicted first (default 100000).")
@click.option("--gamma", type=click.FloatRange(0, 1, min_open=True), default=None, help="Discount (default 0.99).")
@click.option("--tau", type=click.FloatRange(0, 1, min_open=True), default=None, help="Target update rate (default 0.005).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate of actor, critics and temperature (default 3e-4).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of networks, sampling and episodes (default 0).")
@click.option("--device", default=None, help="Torch device for training: cpu (default), cuda, cuda:1, ...")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any other training setting, e.g. --set bev_size=48 --set cnn_channels=[8,16] --set frame_codec=raw.")
@click.option("--reward-from-components", is_flag=True,
              help="Recompute rewards from the stored label components (data_schema.reward) instead of the stored reward.")
@click.option("--reward", "reward_settings", multiple=True, metavar="KEY=VALUE",
              help="With --reward-from-components: change a reward parameter, e.g. --reward penalty=0 "
                   "--reward target_speed_kmh=30. Repeatable.")
@click.option("--annotate-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Online: the `pipeline annotate --config` file used to label new shards.")
@click.option("--annotate-set", multiple=True, metavar="KEY=VALUE",
              help="Online: `pipeline annotate --set` overrides used to label new shards. Repeatable.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint (a killed run); --rounds/--steps may be raised.")
@click.option("--skip-bad", is_flag=True,
              help="Leave raw or label shards that cannot be read (corrupt, non-finite values, undecodable frames) out of "
                   "replay, naming each, instead of stopping.")
def train(dataset: str, label_set: str, run_dir: str, offline: bool, algo: str | None, offline_steps: int | None, rounds: int | None,
          steps_per_round: int | None, updates_per_step: float | None, learning_starts: int | None, batch_size: int | None,
          buffer_limit: int | None, gamma: float | None, tau: float | None, lr: float | None, seed: int | None,
          device: str | None, settings: tuple[str, ...], reward_from_components: bool, reward_settings: tuple[str, ...],
          annotate_config: str | None, annotate_set: tuple[str, ...], resume: bool, skip_bad: bool) -> None:  # fmt: skip
    """Train a driving policy on DATASET with the rewards of label set NAME (SAC by default, see --algo).

    Online (default): rounds of collecting with the current policy on the SUMO town, annotating the new
    shards in the background (`pipeline annotate` with --annotate-config/--annotate-set) and updating on
    every labelled transition; unlabelled transitions never enter the buffer. Offline (--offline --steps N):
    N updates on the labelled shards already in DATASET. Either mode checkpoints every round, and --resume
    continues a killed run without losing or double-counting data. Every setting, the dataset and the label
    set are checked before the run directory is written, so a start that fails leaves nothing behind.
    """
    named = {"offline_steps": offline_steps, "rounds": rounds, "steps_per_round": steps_per_round,
             "updates_per_step": updates_per_step, "learning_starts": learning_starts, "batch_size": batch_size,
             "buffer_limit": buffer_limit, "gamma": gamma, "tau": tau, "seed": seed, "device": device, "algo": algo}  # fmt: skip
    if lr is not None:
        named.update(actor_lr=lr, critic_lr=lr, temp_lr=lr)
    annotate_args = (("--config", annotate_config) if annotate_config else ()) + tuple(a for s in annotate_set for a in ("--set", s))
    run = RunDir(run_dir)
    try:
        overrides = {**parse_overrides(TrainConfig, settings), **{k: v for k, v in named.items() if v is not None}}
        reward_overrides = parse_overrides(RewardConfig, reward_settings, "--reward")
        if resume:
            given = {"reward_from_components": reward_from_components, "reward_overrides": reward_overrides,
                     "annotate_args": annotate_args}  # fmt: skip
            spec = _resumed_spec(run, dataset, label_set, offline, overrides, given)
        else:
            if run.exists():
                raise click.ClickException(f"{run_dir}: holds a run already; pass --resume to continue it, or choose another --out")
            spec = RunSpec(
                dataset=dataset,
                label_set=label_set,
                mode="offline" if offline else "online",
                config=TrainConfig.from_dict(overrides),
                run_id="" if offline else f"train-{uuid.uuid4().hex[:8]}",
                reward_from_components=reward_from_components,
                reward_overrides=reward_overrides,
                annotate_args=annotate_args,
            )
            if spec.reward_overrides and not reward_from_components:
                raise click.BadParameter("needs --reward-from-components", param_hint="--reward")
            if spec.mode == "online" and spec.config.algo in OFFLINE_ONLY:
                raise click.BadParameter(f"{spec.config.algo} learns from a fixed dataset: add --offline, or use sac", param_hint="--algo")
        check_spec(spec, skip_bad)
        run.write_spec(spec)
        echo = tqdm.write
        echo(f"run {run.path} ({spec.mode}), dataset {spec.dataset}, label set {spec.label_set}")
        try:
            state = _run(run, spec.mode, echo, skip_bad)
        except Exception:  # an error, not an interrupt: a run stopped by the user stays resumable
            if not resume:
                run.discard_unstarted()
            raise
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"checkpoint {run.checkpoints / state.checkpoint} after {state.grad_steps} updates")


def _run(run: RunDir, mode: str, echo: Echo, skip_bad: bool) -> RunState:
    """Train the run in ``run`` (online or offline) to its end; returns its state at the last checkpoint."""
    if mode == "online":
        return train_online(run, echo, skip_bad).state
    threads = offline_update_threads(run.spec().config.torch_threads)
    use_threads(threads)
    echo(f"threads ({available_cores()} cores): gradient updates {threads}")
    return train_offline(run, echo, skip_bad=skip_bad).state


def _resumed_spec(run: RunDir, dataset: str, label_set: str, offline: bool, overrides: dict[str, Any], given: dict[str, Any]) -> RunSpec:
    """The stored spec with the resumable settings changed; ``given`` reward/annotate options must match the run's."""
    spec = run.spec()
    if (spec.dataset, spec.label_set, spec.mode) != (dataset, label_set, "offline" if offline else "online"):
        raise click.ClickException(
            f"{run.path}: was started on {spec.dataset} --label-set {spec.label_set} ({spec.mode}); "
            "resume it with the same arguments"
        )
    changed = [name for name, value in given.items() if value and value != getattr(spec, name)]
    if changed:
        raise click.ClickException(f"--resume: {changed} differ from the run's ({run.path}/run.json); they are fixed when a run starts")
    wanted = TrainConfig.from_dict({**spec.config.to_dict(), **overrides})
    fixed = [
        f.name for f in dataclasses.fields(wanted) if f.name not in RESUMABLE and getattr(wanted, f.name) != getattr(spec.config, f.name)
    ]
    if fixed:
        raise click.ClickException(f"--resume: {fixed} are fixed when a run starts; only {sorted(RESUMABLE)} may change")
    return dataclasses.replace(spec, config=wanted)
