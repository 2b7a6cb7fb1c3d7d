"""``pipeline experiment``: the stages of a reward-design experiment, each resumable.

1. the shared raw dataset: collected from the spec's scenarios and behaviours (or given);
2. the reward models, fine-tuned on that dataset's own ground truth unless given;
3. offline: one label set per (variant, penalty), annotated on the one shared dataset: re-annotation, with
   the CLIP embeddings and VLM answers of earlier label sets coming from annotate's caches;
4. the cells, (variant, penalty, seed), each a dask task that trains (offline on the shared label set, or in
   online rounds on its own dataset, annotated in the background with the same settings) and evaluates on
   held-out seeds of the evaluation scenarios (``pipeline.experiment.cells``);
5. the results: table, curves, bars, HTML (``pipeline.experiment.results``).

A killed experiment is resumed by running the same command: collection, annotation and training resume
where they stopped and finished cells are not run again. Another spec in the same ``--out`` is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dask.distributed import Client, LocalCluster, as_completed
from tqdm.auto import tqdm

from annotate import RunOptions, annotate_dataset, load_config
from collect import EnvSpec, EpisodeLimits, collect_episodes
from data_schema import Dataset
from data_schema.naming import check_name
from data_schema.run_lock import RunLock
from data_schema.settings import overrides, to_mapping
from data_schema.storage import atomic_write_text
from pipeline.experiment.cells import CellTask, read_result, run_cell
from pipeline.experiment.models import reward_models
from pipeline.experiment.results import write_results
from pipeline.experiment.spec import ExperimentSpec
from train import TrainConfig

__all__ = ["ExperimentRun", "label_set_name", "run_experiment"]

Echo = Callable[[str], None]
SPEC_FILE = "experiment.json"


@dataclass(frozen=True)
class ExperimentRun:
    out: Path
    cells: list[dict[str, Any]]
    failed: dict[str, str]
    paths: dict[str, Path]


def label_set_name(variant: str, penalty: float) -> str:
    """``full-p10`` for variant ``full`` with penalty -10."""
    return check_name("label set", f"{variant}-p{abs(penalty):g}")


def run_experiment(spec: ExperimentSpec, out: str | Path, echo: Echo = print, progress: bool = True) -> ExperimentRun:
    out = Path(out)
    _claim(out, spec)
    with RunLock(out, "experiment"):  # one live run per --out; its cells' own locks fence a killed run's survivors
        return _run(spec, out, echo, progress)


def _run(spec: ExperimentSpec, out: Path, echo: Echo, progress: bool) -> ExperimentRun:
    dataset = _dataset(spec, out, echo)
    shared = reward_models(spec, out, dataset, echo, progress)
    settings = {
        (variant.name, penalty): (*shared, *spec.annotate, *variant.settings, f"reward.penalty={penalty}")
        for variant in spec.variants for penalty in spec.penalties
    }  # fmt: skip
    if not spec.algorithm.online:  # one shared dataset, re-annotated per variant; online cells annotate their own
        for (variant, penalty), items in settings.items():
            _annotate(dataset, label_set_name(variant, penalty), items, spec.workers, echo, progress)
    tasks = [
        CellTask(
            out=str(out), variant=variant.name, penalty=penalty, seed=seed, label_set=label_set_name(variant.name, penalty),
            dataset=dataset, config=_train_config(spec, seed), scenarios=spec.evaluation.scenarios,
            episodes=spec.evaluation.episodes, eval_seed=spec.evaluation.seed, max_steps=spec.evaluation.max_steps,
            online=spec.algorithm.online, annotate=settings[variant.name, penalty],
        )
        for penalty in spec.penalties for variant in spec.variants for seed in spec.seeds
    ]  # fmt: skip
    failed = _run_cells(tasks, spec.workers, echo, progress)
    cells = [c for t in tasks if (c := read_result(out, t.label_set, t.seed)) is not None]
    paths = write_results(out, spec, cells) if cells else {}
    return ExperimentRun(out, cells, failed, paths)


def _claim(out: Path, spec: ExperimentSpec) -> None:
    """Record the spec in ``out`` (a rerun must use the same one)."""
    path = out / SPEC_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        if recorded.get("digest") != spec.digest():
            raise ValueError(f"{path}: holds experiment {recorded.get('name')!r} with another spec; choose another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"name": spec.name, "digest": spec.digest(), "spec": to_mapping(spec)}, indent=2))


def _dataset(spec: ExperimentSpec, out: Path, echo: Echo) -> str:
    if spec.dataset.path:
        return str(Dataset.open(spec.dataset.path).url)
    url = str(out / "dataset")
    for run in spec.dataset.collect:
        env = EnvSpec(limits=EpisodeLimits(max_steps=run.max_steps), scenarios=run.scenarios)
        summary = collect_episodes(url, env, run.policy, run.episodes, run.seed, workers=spec.workers)
        echo(f"dataset: {run.policy} x {run.episodes} episodes over {list(run.scenarios)}: {summary.steps} new steps")
    return url


def _annotate(dataset: str, name: str, settings: tuple[str, ...], workers: int, echo: Echo, progress: bool) -> None:
    summary = annotate_dataset(dataset, load_config(None, settings), RunOptions(label_set=name, workers=workers, progress=progress))
    if summary.failed:
        raise RuntimeError(f"annotating {name} failed for {len(summary.failed)} shard(s): {next(iter(summary.failed.values()))}")
    echo(f"label set {name}: {summary.done} shard(s) labelled, {summary.skipped} up to date")


def _train_config(spec: ExperimentSpec, seed: int) -> TrainConfig:
    """The cells' training settings: the spec's ``algorithm.train`` items, its budget, the cell's seed, one
    torch thread per cell (cells run side by side in worker processes) and one checkpoint (offline) or round
    (online) per evaluation."""
    algorithm = spec.algorithm
    settings = overrides(TrainConfig, algorithm.train, "algorithm.train")
    budget = {"algo": algorithm.name, "seed": seed, "torch_threads": 1}
    if algorithm.online:  # one round per evaluation
        rounds = spec.evaluation.checkpoints
        budget |= {"rounds": rounds, "steps_per_round": -(-algorithm.steps // rounds), "max_episode_steps": spec.evaluation.max_steps}
    else:
        budget |= {"offline_steps": algorithm.steps, "checkpoint_every": -(-algorithm.steps // spec.evaluation.checkpoints)}
    return TrainConfig.from_dict({**settings, **budget}, "algorithm.train")


def _run_cells(tasks: list[CellTask], workers: int, echo: Echo, progress: bool) -> dict[str, str]:
    """Run the unfinished cells as dask tasks; a failed cell is reported, the others go on."""
    todo = [t for t in tasks if read_result(t.out, t.label_set, t.seed) is None]
    echo(f"cells: {len(tasks) - len(todo)} of {len(tasks)} finished already")
    failed: dict[str, str] = {}
    if not todo:
        return failed
    with LocalCluster(n_workers=min(workers, len(todo)), threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            futures = {client.submit(run_cell, t, key=f"cell-{t.label_set}-seed{t.seed}", pure=False): t for t in todo}
            with tqdm(total=len(futures), desc="cells", unit="cell", disable=not progress) as bar:
                for future in as_completed(futures):
                    task = futures[future]
                    try:
                        future.result()
                    except Exception as error:  # one failed cell is reported; the others go on
                        failed[f"{task.label_set}/seed{task.seed}"] = f"{type(error).__name__}: {error}"
                    bar.update()
    return failed
