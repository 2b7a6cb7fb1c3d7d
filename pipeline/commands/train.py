"""``pipeline train`` (SAC on shards + a label set), ``pipeline evaluate`` and ``pipeline export``."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import click
import yaml
from tqdm import tqdm

from data_schema import DatasetError

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (DatasetError, ValueError, FileNotFoundError, RuntimeError)

#: TrainConfig fields a resumed run may change: how long it goes on, not how it learns.
RESUMABLE = {"rounds", "offline_steps"}


def _key_values(items: tuple[str, ...], option: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=option)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


@click.command("train")
@click.argument("dataset")
@click.option("--label-set", "label_set", required=True, metavar="NAME",
              help="Label set whose rewards train the agent; online runs annotate new shards into it.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: settings, checkpoints every round, metrics.csv and TensorBoard logs (tb/).")
@click.option("--offline", is_flag=True, help="Train on the labelled shards already in DATASET, collecting nothing.")
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
              help="Recompute rewards from the stored label components (annotate.reward) instead of the stored reward.")
@click.option("--reward", "reward_settings", multiple=True, metavar="KEY=VALUE",
              help="With --reward-from-components: change a reward parameter, e.g. --reward penalty=0 "
                   "--reward target_speed_kmh=30. Repeatable.")
@click.option("--annotate-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Online: the `pipeline annotate --config` file used to label new shards.")
@click.option("--annotate-set", multiple=True, metavar="KEY=VALUE",
              help="Online: `pipeline annotate --set` overrides used to label new shards. Repeatable.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint (a killed run); --rounds/--steps may be raised.")
def train(dataset: str, label_set: str, run_dir: str, offline: bool, offline_steps: int | None, rounds: int | None,
          steps_per_round: int | None, updates_per_step: float | None, learning_starts: int | None, batch_size: int | None,
          buffer_limit: int | None, gamma: float | None, tau: float | None, lr: float | None, seed: int | None,
          device: str | None, settings: tuple[str, ...], reward_from_components: bool, reward_settings: tuple[str, ...],
          annotate_config: str | None, annotate_set: tuple[str, ...], resume: bool) -> None:  # fmt: skip
    """Train a SAC driving policy on DATASET with the rewards of label set NAME.

    Online (default): rounds of collecting with the current policy on the SUMO town, annotating the new
    shards in the background (`pipeline annotate` with --annotate-config/--annotate-set) and updating on
    every labelled transition; unlabelled transitions never enter the buffer. Offline (--offline --steps N):
    N updates on the labelled shards already in DATASET. Either mode checkpoints every round, and --resume
    continues a killed run without losing or double-counting data.
    """
    from train.config import TrainConfig
    from train.loop import train_offline, train_online
    from train.run_dir import RunDir, RunSpec

    named = {"offline_steps": offline_steps, "rounds": rounds, "steps_per_round": steps_per_round,
             "updates_per_step": updates_per_step, "learning_starts": learning_starts, "batch_size": batch_size,
             "buffer_limit": buffer_limit, "gamma": gamma, "tau": tau, "seed": seed, "device": device}  # fmt: skip
    if lr is not None:
        named.update(actor_lr=lr, critic_lr=lr, temp_lr=lr)
    overrides = {**_key_values(settings, "--set"), **{k: v for k, v in named.items() if v is not None}}
    annotate_args = (("--config", annotate_config) if annotate_config else ()) + tuple(a for s in annotate_set for a in ("--set", s))
    run = RunDir(run_dir)
    try:
        if resume:
            given = {"reward_from_components": reward_from_components, "reward_overrides": _key_values(reward_settings, "--reward"),
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
                reward_overrides=_key_values(reward_settings, "--reward"),
                annotate_args=annotate_args,
            )
            if spec.reward_overrides and not reward_from_components:
                raise click.BadParameter("needs --reward-from-components", param_hint="--reward")
        run.write_spec(spec)
        echo = tqdm.write
        echo(f"run {run.path} ({spec.mode}), dataset {spec.dataset}, label set {spec.label_set}")
        state = (train_offline(run, echo) if spec.mode == "offline" else train_online(run, echo)).state
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"checkpoint {run.checkpoints / state.checkpoint} after {state.grad_steps} updates")


def _resumed_spec(run: Any, dataset: str, label_set: str, offline: bool, overrides: dict[str, Any], given: dict[str, Any]) -> Any:
    """The stored spec with the resumable settings changed; ``given`` reward/annotate options must match the run's."""
    from train.config import TrainConfig

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


def _policy_file(target: str, workdir: Path) -> str:
    """``random``/``expert`` as is, a TorchScript file as is, or a run/checkpoint exported to TorchScript."""
    if target in ("random", "expert") or target.endswith(".pt"):
        return target
    from train.agent import load_agent
    from train.export import export_torchscript
    from train.run_dir import RunDir

    checkpoint = RunDir(target).latest_checkpoint() if Path(target).is_dir() else Path(target)
    out = workdir / f"{uuid.uuid4().hex[:8]}.pt"
    export_torchscript(load_agent(checkpoint), out)
    return str(out)


@click.command("evaluate")
@click.argument("targets", nargs=-1, required=True)
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True, help="Episodes per policy.")
@click.option("--seed", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Episode i runs with seed + i (route and traffic): same seed, same routes for every policy.")
@click.option("--max-steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Actions per episode before truncation.")
@click.option("--dataset", "dataset_dir", type=click.Path(file_okay=False), default=None,
              help="Keep the evaluation episodes in this dataset (reused on a rerun). Default: a temporary one.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the metrics here. Default: RUN_DIR/evaluation-seed<S>-n<N>.json for each run directory, "
                   "else ./evaluation-seed<S>-n<N>.json.")
def evaluate(
    targets: tuple[str, ...], episodes: int, seed: int, max_steps: int, dataset_dir: str | None, json_path: str | None
) -> None:
    """Evaluate policies on fixed SUMO routes: collision rate, route completion, speed, distance, success.

    Each TARGET is a run directory (its latest checkpoint), a checkpoint file (.d3), an exported TorchScript
    policy (.pt), `random` or `expert`; trained policies run as exported (deterministic). Metric definitions:
    see train/evaluate.py.
    """
    from train.evaluate import evaluate_policy, format_table

    results = {}
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        data = dataset_dir or str(Path(tmp) / "episodes")
        for target in targets:
            bar = tqdm(total=episodes, desc=f"evaluate {target}", unit="episode", leave=False, disable=None)
            try:
                policy = _policy_file(target, Path(tmp))
                results[target] = evaluate_policy(policy, data, episodes, seed, max_steps, on_episode=lambda _: bar.update())
            except USER_ERRORS as e:
                raise click.ClickException(f"{target}: {e}") from None
            finally:
                bar.close()
    click.echo(format_table(results))
    document = {"seed": seed, "episodes": episodes, "max_steps": max_steps, "results": {t: m.as_dict() for t, m in results.items()}}
    name = f"evaluation-seed{seed}-n{episodes}.json"
    paths = [Path(json_path)] if json_path else [Path(t) / name for t in targets if Path(t).is_dir()]
    for path in paths or [Path(name)]:
        path.write_text(json.dumps(document, indent=2))
        click.echo(f"wrote {path}")


@click.command("export")
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["torchscript"]), default="torchscript", show_default=True,
              help="Deployment format (what the collector runs).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Output file. Default: RUN_DIR/policy.pt.")
@click.option("--bev-px", type=click.IntRange(min=16), default=128, show_default=True,
              help="BEV side the latency is measured at (the rendered size; the policy downsamples it).")
@click.option("--latency-runs", type=click.IntRange(min=1), default=200, show_default=True,
              help="Timed forward passes per device (after a warm-up of 20).")
def export(source: str, fmt: str, out: str | None, bev_px: int, latency_runs: int) -> None:
    """Export the policy of SOURCE (a run directory or a .d3 checkpoint) for deployment, and time it.

    The file needs only torch to run: forward(bev uint8[B,3,H,W], state float32[B,STATE_DIM]) returns
    float32[B,2] actions in [-1, 1] (tanh of the SAC mean). Per-step latency is measured on CPU, and on
    the GPU when there is one, and written beside the file as JSON.
    """
    import torch

    from train.agent import load_agent
    from train.export import export_torchscript, measure_latency
    from train.run_dir import RunDir

    try:
        is_run = Path(source).is_dir()
        checkpoint = RunDir(source).latest_checkpoint() if is_run else Path(source)
        path = Path(out) if out else (Path(source) / "policy.pt" if is_run else checkpoint.with_suffix(".pt"))
        export_torchscript(load_agent(checkpoint), path)
        latency = {"cpu": measure_latency(path, "cpu", bev_px, latency_runs)}
        if torch.cuda.is_available():
            latency["cuda"] = measure_latency(path, "cuda", bev_px, latency_runs)
    except USER_ERRORS as e:
        raise click.ClickException(str(e)) from None
    info = {"format": fmt, "checkpoint": str(checkpoint), "bev_px": bev_px, "latency": latency}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) from {checkpoint}")
    for device, figures in latency.items():
        click.echo(
            f"latency {device}: median {figures['median_ms']:.3f} ms, p90 {figures['p90_ms']:.3f} ms per step "
            f"(batch 1, {bev_px}x{bev_px} BEV)"
        )
