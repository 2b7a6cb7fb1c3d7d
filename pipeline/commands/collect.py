"""``pipeline collect`` (simulator rollouts into raw shards) and ``pipeline info`` (what a dataset holds)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import click
from tqdm import tqdm

from collect import (
    BUILTIN,
    FREE,
    SCENARIOS,
    CarlaConfig,
    CarlaUnavailable,
    CollectSummary,
    EnvSpec,
    EpisodeLimits,
    EpisodeSummary,
    SumoConfig,
    collect_episodes,
)
from data_schema import Dataset, DatasetError
from pipeline.threads import COLLECTOR_THREADS, use_threads

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (DatasetError, ValueError, FileNotFoundError)


def _backend(sim: str, host: str, port: int, timeout: float) -> tuple[object, tuple[type[BaseException], ...]]:
    """The simulator's config and the errors by which it reports a problem the user has to fix."""
    if sim == "sumo":
        return SumoConfig(), ()
    if importlib.util.find_spec("carla") is None:
        raise click.ClickException("--sim carla needs the CARLA client: pip install 'drive-vlm-rl[carla]' (Python 3.11)")
    return CarlaConfig(host=host, port=port, timeout_s=timeout), (CarlaUnavailable,)


@click.command("collect")
@click.argument("dataset")
@click.option("--sim", type=click.Choice(["sumo", "carla"]), default="sumo", show_default=True,
              help="Simulator: embedded SUMO (bundled town), or a CARLA server you started (--host/--port).")
@click.option("--episodes", type=click.IntRange(min=0), required=True,
              help="Episodes the run should hold; a rerun collects only those not in the dataset yet.")
@click.option("--policy", default="expert", show_default=True,
              help=f"A built-in policy ({', '.join(BUILTIN)}: 'expert' follows its route and yields, its variants "
                   "each have one flaw, see collect/policies/variants.py), or the path of an exported TorchScript policy.")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(list(SCENARIOS)), default=(FREE,), show_default=True,
              help="What each episode plays: the free town, or a short route with a timed hazard (see "
                   "collect/scenarios). Repeatable: over k scenarios episode i plays the (i mod k)-th, so the same "
                   "command resumes; name one twice to give it twice the episodes. SUMO only.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Base seed: episode i runs with seed + i (route, traffic, policy noise).")
@click.option("--max-steps", type=click.IntRange(min=1), default=EpisodeLimits.max_steps, show_default=True,
              help="Actions per episode before it is truncated.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes, each with its own simulator, writing its own shards.")
@click.option("--threads", type=click.IntRange(min=1), default=COLLECTOR_THREADS, show_default=True,
              help="torch threads per worker (a policy network sees one observation at a time).")
@click.option("--run-id", default=None,
              help="Name of the run (episode ids are <run-id>-<index>). Default: a hash of the settings, so the "
                   "same command resumes.")
@click.option("--episodes-per-shard", type=click.IntRange(min=1), default=8, show_default=True,
              help="Whole episodes per shard; a crash loses at most the shards in progress.")
@click.option("--host", default="127.0.0.1", show_default=True, help="CARLA server host.")
@click.option("--port", type=int, default=2000, show_default=True, help="CARLA server port.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the CARLA server.")
def collect(
    dataset: str, sim: str, episodes: int, policy: str, scenarios: tuple[str, ...], seed: int, max_steps: int,
    workers: int, threads: int, run_id: str | None, episodes_per_shard: int, host: str, port: int, timeout: float,
) -> None:  # fmt: skip
    """Drive episodes with a policy and write them to the dataset DATASET as raw shards.

    DATASET is a directory or fsspec URL; it is created if needed. Episodes end on a collision, leaving the
    road, being stuck for 40 s, reaching the route's end, or --max-steps (a scenario's episode after 30 s at
    most). Shards are written atomically and hold whole episodes, so an interrupted run is resumed by running
    the same command again.

    \b
    Examples:
      pipeline collect data/town --episodes 200 --workers 2
      pipeline collect data/hazards --episodes 100 --scenario ped_crossing --scenario lead_brake --policy expert-reckless
      pipeline collect data/town --episodes 50 --policy runs/sac/policy.pt --seed 1000
      pipeline collect data/carla --sim carla --host 10.0.0.5 --episodes 20
    """
    bar: tqdm | None = None
    steps = 0

    def on_plan(owed: int, already: int) -> None:
        nonlocal bar
        if already:
            click.echo(f"{already} of {owed} episodes are in the dataset already; collecting the other {owed - already}")
        bar = tqdm(total=owed - already, unit="episode", dynamic_ncols=True, disable=None)

    def on_episode(summary: EpisodeSummary) -> None:
        nonlocal steps
        steps += summary.steps
        elapsed = bar.format_dict["elapsed"]
        bar.set_postfix(steps=steps, steps_per_s=f"{steps / elapsed:.0f}" if elapsed else "-", refresh=False)
        bar.update(1)

    errors = USER_ERRORS
    use_threads(threads)  # this process and the workers it starts
    try:
        backend, backend_errors = _backend(sim, host, port, timeout)
        errors += backend_errors
        env = EnvSpec(sim=sim, backend=backend, limits=EpisodeLimits(max_steps=max_steps), scenarios=scenarios)
        summary = collect_episodes(dataset, env, policy, episodes, seed, run_id, workers, episodes_per_shard, on_episode, on_plan)
    except errors as e:
        raise click.ClickException(str(e)) from None
    finally:
        if bar is not None:
            bar.close()
    click.echo(_describe(summary))


def _describe(summary: CollectSummary) -> str:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary.outcomes.items())) or "-"
    rate = summary.steps / summary.seconds if summary.seconds else 0.0
    lines = [
        f"run {summary.run_id}: {len(summary.episodes)} episodes collected, {summary.already_done} already present, "
        f"{summary.requested} owed",
        f"steps {summary.steps} in {summary.seconds:.1f} s ({rate:.0f} steps/s), shards written {len(summary.shards)}",
        f"outcomes: {outcomes}",
    ]
    scenarios = sorted({e.scenario for e in summary.episodes})
    if scenarios != [FREE] and scenarios:
        for scenario in scenarios:
            counts = Counter(e.outcome for e in summary.episodes if e.scenario == scenario)
            lines.append(f"  {scenario}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if summary.removed_leftovers:
        lines.append(f"removed {len(summary.removed_leftovers)} leftover tmp file(s) of an interrupted run")
    return "\n".join(lines)


@click.command("info")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--skip-bad", is_flag=True,
              help="Count around raw shards that cannot be read (corrupt or damaged files), listing them, instead of stopping.")
def info(dataset: str, as_json: bool, skip_bad: bool) -> None:
    """Summarise the dataset DATASET: episodes, steps, shards, label sets, schema version, size on disk.

    An episode found in two shards (a collector that ran twice) is an error naming both."""
    try:
        summary = Dataset.open(dataset, skip_bad).info()
    except DatasetError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    label_sets = ", ".join(f"{name} ({n} shards)" for name, n in summary["label_sets"].items()) or "none"
    click.echo(
        f"dataset         {summary['url']}\n"
        f"schema version  {summary['schema_version']}\n"
        f"episodes        {summary['episodes']}\n"
        f"steps           {summary['steps']}\n"
        f"shards          {summary['shards']}\n"
        f"label sets      {label_sets}\n"
        f"size            {_human_bytes(summary['bytes'])}"
    )
    for shard, why in summary["bad_shards"].items():
        click.echo(f"skipped unreadable shard {shard}: {why}")


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"
