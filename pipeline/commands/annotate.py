"""``pipeline annotate``: label a dataset's raw shards with CLIP / YOLO / VLM rewards under a named label set."""

from __future__ import annotations

import sys

import click
import yaml

from annotate.config import ConfigError, load_config, to_mapping
from annotate.model_weights import WeightsError
from annotate.run import ClusterError, RunOptions, annotate_dataset
from data_schema import DatasetError
from pipeline.threads import available_cores, thread_env, use_threads, worker_threads

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, DatasetError, WeightsError, FileNotFoundError, ConnectionError, TimeoutError, ValueError, ImportError)


@click.command("annotate")
@click.argument("dataset")
@click.option("--label-set", "label_set", required=True, metavar="NAME",
              help="Name of the label set (labels/NAME/ in the dataset), e.g. clg-v1. Rerunning the same name "
                   "with the same settings only labels shards that have no labels yet.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML or TOML file overriding the shipped defaults (annotate/default_config.yaml documents every key).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting after the config file, e.g. --set gate.source=scene --set "
                   "prompts.positive='An empty road'. Repeatable; values are checked against the setting's type.")
@click.option("--clip-checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="open_clip weights file for the static pathway (same as --set clip.pretrained=PATH); "
                   "use it on machines that cannot download weights.")
@click.option("--replace", is_flag=True,
              help="The label set exists with other settings: delete its label shards and relabel under the new ones.")
@click.option("--force", is_flag=True, help="Relabel shards whose labels are already up to date (caches are still used).")
@click.option("--scheduler", metavar="URL", default=None,
              help="Run on an existing dask cluster (tcp://HOST:8786) instead of a local one; workers need this "
                   "package and access to DATASET. Give GPU workers --resources GPU=1.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local cluster. Default: one per CPU core, or one per GPU for CUDA models.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per local worker. Default: the cores divided by the workers, at least 1.")
@click.option("--in-process", is_flag=True,
              help="Run the local workers as threads of this process: models load once; for debugging and small datasets.")
@click.option("--show-config", is_flag=True, help="Print the effective configuration as YAML and exit.")
@click.option("--skip-bad", is_flag=True,
              help="Leave raw shards that cannot be read (corrupt, non-finite values, undecodable frames) unlabelled and "
                   "list them, instead of counting them as failures.")
def annotate(
    dataset: str, label_set: str, config_file: str | None, overrides: tuple[str, ...], clip_checkpoint: str | None,
    replace: bool, force: bool, scheduler: str | None, workers: int | None, threads: int | None, in_process: bool,
    show_config: bool, skip_bad: bool,
) -> None:  # fmt: skip
    """Label every raw shard of DATASET and write the label set NAME beside it.

    Per shard: CLIP scores the BEV against the language goals (static pathway), a gate picks frames with
    safety-critical road users, a VLM describes their risk (dynamic pathway), and the reward is synthesised.
    Image embeddings and VLM answers are cached in the dataset, so a new prompt set re-scores quickly.
    Changed settings under an existing NAME are refused unless --replace is given.
    """
    items = list(overrides) + ([f"clip.pretrained={clip_checkpoint}"] if clip_checkpoint else [])
    try:
        config = load_config(config_file, items)
        if show_config:
            click.echo(yaml.safe_dump(to_mapping(config), sort_keys=False, width=110), nl=False)
            return
        threads = threads or worker_threads(workers or available_cores())
        use_threads(threads)  # in-process workers are this process's threads
        options = RunOptions(
            label_set=label_set, replace=replace, force=force, scheduler=scheduler, workers=workers,
            processes=not in_process, progress=sys.stderr.isatty(), worker_env=thread_env(threads), skip_bad=skip_bad,
        )
        summary = annotate_dataset(dataset, config, options)
    except (*USER_ERRORS, ClusterError) as error:
        raise click.ClickException(str(error)) from None
    for line in summary.lines():
        click.echo(line)
    if summary.failed:
        hint = "" if skip_bad else " (--skip-bad lists unreadable raw shards and goes on without them)"
        raise click.ClickException(f"{len(summary.failed)} shard(s) failed; rerun the same command to retry them{hint}")
