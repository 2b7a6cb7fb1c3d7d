"""``pipeline evaluate`` (policies on fixed SUMO routes, VLM-RL metrics) and ``pipeline export`` (TorchScript)."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import click
import torch
from tqdm import tqdm

from collect import BUILTIN, FREE, SCENARIOS
from pipeline.commands.train import USER_ERRORS
from pipeline.evaluate import evaluate_policy, format_table
from pipeline.threads import COLLECTOR_THREADS, use_threads
from train import RunDir, export_torchscript, load_agent, measure_latency


def _policy_file(target: str, workdir: Path) -> str:
    """A built-in policy as is, a TorchScript file as is, or a run/checkpoint exported to TorchScript."""
    if target in BUILTIN or target.endswith(".pt"):
        return target
    checkpoint = RunDir(target).latest_checkpoint() if Path(target).is_dir() else Path(target)
    out = workdir / f"{uuid.uuid4().hex[:8]}.pt"
    export_torchscript(load_agent(checkpoint), out)
    return str(out)


@click.command("evaluate")
@click.argument("targets", nargs=-1, required=True)
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True, help="Episodes per policy.")
@click.option("--seed", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Episode i runs with seed + i (route and traffic): same seed, same routes for every policy.")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(list(SCENARIOS)), default=(FREE,), show_default=True,
              help="What the episodes play (see collect/scenarios); repeatable: over k scenarios episode i plays the "
                   "(i mod k)-th. Metrics are reported over all episodes and per scenario.")
@click.option("--max-steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Actions per episode before truncation.")
@click.option("--dataset", "dataset_dir", type=click.Path(file_okay=False), default=None,
              help="Keep the evaluation episodes in this dataset (reused on a rerun). Default: a temporary one.")
@click.option("--threads", type=click.IntRange(min=1), default=COLLECTOR_THREADS, show_default=True,
              help="torch threads of the rollouts (a policy network sees one observation at a time).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the metrics here. Default: RUN_DIR/evaluation-seed<S>-n<N>.json for each run directory, "
                   "else ./evaluation-seed<S>-n<N>.json (with -<scenario>+... before .json unless the scenario is free).")
def evaluate(
    targets: tuple[str, ...], episodes: int, seed: int, scenarios: tuple[str, ...], max_steps: int,
    dataset_dir: str | None, threads: int, json_path: str | None,
) -> None:  # fmt: skip
    """Evaluate policies on fixed SUMO routes: collision rate, route completion, speed, distance, success.

    Each TARGET is a run directory (its latest checkpoint), a checkpoint file (.d3), an exported TorchScript
    policy (.pt), or a built-in policy (`expert`, `random`, an expert variant); trained policies run as
    exported (deterministic). Metric definitions: see pipeline/evaluate.py.
    """
    use_threads(threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        data = dataset_dir or str(Path(tmp) / "episodes")
        for target in targets:
            bar = tqdm(total=episodes, desc=f"evaluate {target}", unit="episode", leave=False, disable=None)
            try:
                policy = _policy_file(target, Path(tmp))
                results[target] = evaluate_policy(
                    policy, data, episodes, seed, max_steps, on_episode=lambda _: bar.update(), scenarios=scenarios
                )
            except USER_ERRORS as e:
                raise click.ClickException(f"{target}: {e}") from None
            finally:
                bar.close()
    click.echo(format_table(results))
    played = [s for s in dict.fromkeys(scenarios) if all(s in m.by_scenario for m in results.values())]
    if len(played) > 1:
        for scenario in played:
            click.echo(f"\nscenario {scenario}\n" + format_table({t: m.by_scenario[scenario] for t, m in results.items()}))
    document = {
        "seed": seed, "episodes": episodes, "scenarios": list(scenarios), "max_steps": max_steps,
        "results": {t: m.as_dict() for t, m in results.items()},
    }  # fmt: skip
    name = f"evaluation-seed{seed}-n{episodes}{'' if scenarios == (FREE,) else '-' + '+'.join(scenarios)}.json"
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
