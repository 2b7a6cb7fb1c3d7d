"""``pipeline experiment SPEC.yaml --out DIR``: a reward-design experiment, reproducible and resumable."""

from __future__ import annotations

import sys

import click
from tqdm import tqdm

from annotate import ClusterError, ConfigError, WeightsError
from data_schema import DatasetError
from pipeline.experiment.run import run_experiment
from pipeline.experiment.spec import load_spec

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, DatasetError, WeightsError, ClusterError, FileNotFoundError, ValueError, RuntimeError)


@click.command("experiment")
@click.argument("spec_file", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Experiment directory: dataset, models, label sets, cells/, results (table.md, results.parquet, "
                   "results.json, curves.png, bars.png, report.html). Rerun the same command to resume.")
def experiment(spec_file: str, out: str) -> None:
    """Compare reward designs as SPEC describes: one shared dataset, a label set per reward variant, policies
    trained per variant, penalty and seed, each evaluated on held-out seeds of the evaluation scenarios.

    The spec (YAML or TOML) is checked before any work; see examples/experiments/ for a committed one. Each
    cell (variant, penalty, seed) runs as a dask task; a killed experiment resumes and redoes only unfinished
    cells. The table gives mean ± std over seeds of the VLM-RL metrics and DriveVLM-RL's TCF.
    """
    try:
        spec = load_spec(spec_file)
        result = run_experiment(spec, out, echo=tqdm.write, progress=sys.stderr.isatty())
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    for name, path in result.paths.items():
        click.echo(f"wrote {path}")
    if result.paths:
        click.echo(result.paths["table.md"].read_text())
    if result.failed:
        listing = "; ".join(f"{cell}: {error}" for cell, error in sorted(result.failed.items()))
        raise click.ClickException(f"{len(result.failed)} cell(s) failed ({listing}); rerun the same command to retry them")
