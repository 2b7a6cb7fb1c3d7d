"""``pipeline vlm finetune|eval``: adapt the dynamic pathway's VLM to a dataset from its ground truth, and measure it."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click
from transformers.utils import logging as transformers_logging

from annotate.config import ConfigError, load_config
from annotate.vlm import make_vlm_backend
from annotate.vlm.evaluation import evaluate, examples_png
from annotate.vlm.sft import FinetuneConfig, finetune_on_dataset, read_record
from annotate.vlm.sft_data import gated_windows
from annotate.vlm.targets import TargetRule
from annotate.vlm.vision_warmup import probe_summary
from data_schema import Dataset, DatasetError
from data_schema.risk import RiskRule
from data_schema.storage import atomic_write_text
from pipeline.threads import available_cores, use_threads

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, DatasetError, FileNotFoundError, ValueError, ImportError)

_config_option = click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Annotate settings file (YAML or TOML): the VLM prompt, window and max_image_side, and the gate corridor.",
)  # fmt: skip
_set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override one annotate setting, e.g. --set vlm.max_image_side=96 --set gate.corridor_length=30. Repeatable.",
)  # fmt: skip
_threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: every core this process may use)."
)


@click.group("vlm")
def vlm() -> None:
    """Fine-tune the dynamic pathway's VLM on a dataset's gated windows, and measure it against ground truth.

    The answers a VLM should give are built from the simulator's agents (annotate/vlm/targets.py states the
    rule): hazard, risk from time to collision and distance, a one-sentence description, an action.
    """


@vlm.command("finetune")
@click.argument("dataset")
@click.option("--base", default="tiny", show_default=True,
              help="'tiny' (a small Qwen3-VL built here with random weights: trains on a CPU in minutes) or a "
                   "saved model directory such as a downloaded Qwen3-VL-2B-Instruct.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to write; load it with --set vlm.backend=transformers --set vlm.model=OUT.")
@click.option("--steps", type=click.IntRange(min=1), default=FinetuneConfig.steps, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=FinetuneConfig.batch_size, show_default=True)
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate. Default: 1e-3 for whole training, 2e-4 for LoRA.")
@click.option("--method", type=click.Choice(["auto", "full", "lora"]), default="auto", show_default=True,
              help="full: train every weight; lora: LoRA adapters on every linear layer, merged at the end; "
                   "auto: full for --base tiny, lora for a model directory.")
@click.option("--lora-rank", type=click.IntRange(min=1), default=FinetuneConfig.lora_rank, show_default=True)
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=FinetuneConfig.holdout,
              show_default=True, help="Share of episodes held out for measuring (never trained on).")
@click.option("--vision-steps", type=click.IntRange(min=0), default=None,
              help="Steps that warm the vision tower up on the answers' fields (hazard, risk, action, the road user's kind "
                   "and distance) before the fine-tune, which then keeps it frozen. Default: 1500 for --base tiny, whose "
                   "tower starts random; 0 for a model directory, whose tower already reads images.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@_threads_option
@_config_option
@_set_option
def finetune_command(dataset: str, base: str, out_dir: str, steps: int, batch_size: int, learning_rate: float | None,
                     method: str, lora_rank: int, holdout: float, vision_steps: int | None, seed: int, device: str, threads: int | None,
                     config_file: str | None, overrides: tuple[str, ...]) -> None:  # fmt: skip
    """Supervised fine-tuning of a VLM on DATASET's scene-gated windows, with the project's prompt.

    Episodes are split into training and held-out ones; the loss counts only the answer's tokens. Progress
    is checkpointed in OUT/train_state: rerunning the same command after a kill resumes, and rerunning it
    after it finished does nothing.
    """
    _set_threads(threads)
    try:
        settings = load_config(config_file, overrides)
        config = FinetuneConfig(base=base, method=method, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                                lora_rank=lora_rank, holdout=holdout, vision_steps=vision_steps, seed=seed, device=device)  # fmt: skip
        record = finetune_on_dataset(Dataset.open(dataset), Path(out_dir), config, settings, progress=sys.stderr.isatty(), log=click.echo)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"held-out loss per answer token: {record.held_out_loss_before:.4f} before, {record.held_out_loss_after:.4f} after")
    if record.vision_warmup is not None:
        click.echo(probe_summary(record.vision_warmup))
    click.echo(f"fine-tuning took {record.seconds:.0f} s; model in {out_dir}")
    click.echo(f"measure it:  pipeline vlm eval {dataset} --model {out_dir}")
    click.echo(f"use it:      pipeline annotate DATASET --label-set NAME --set vlm.backend=transformers --set vlm.model={out_dir}")


@vlm.command("eval")
@click.argument("dataset")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model directory (from `pipeline vlm finetune`, or any saved image-text-to-text model).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where eval.json and examples.png go. Default: MODEL/eval.")
@click.option("--windows", "max_windows", type=click.IntRange(min=1), default=None,
              help="Measure on at most this many windows (an even spread). Default: all.")
@click.option("--examples", type=click.IntRange(min=1), default=6, show_default=True, help="Windows drawn in examples.png.")
@_threads_option
@_config_option
@_set_option
def eval_command(dataset: str, model_dir: str, out_dir: str | None, max_windows: int | None, examples: int,
                 threads: int | None, config_file: str | None, overrides: tuple[str, ...]) -> None:  # fmt: skip
    """Answer DATASET's held-out gated windows with a VLM and score it against ground truth.

    Held-out windows are those of the episodes the fine-tune held out (all of DATASET's episodes when it
    has none of them, as for a dataset the model never saw). The request (prompt, window, max_image_side)
    is the one the model was tuned on; --set changes how it runs (vlm.structured_output, vlm.batch_size,
    vlm.max_new_tokens, vlm.device).
    """
    _set_threads(threads)
    out = Path(out_dir) if out_dir else Path(model_dir) / "eval"
    try:
        settings = load_config(config_file, overrides)
        record = read_record(model_dir)
        vlm_config = dataclasses.replace(settings.vlm, backend="transformers", model=str(model_dir),
                                         **(record.request if record else {}))  # fmt: skip
        data = Dataset.open(dataset)
        rule = TargetRule(risk=RiskRule(corridor=settings.gate.corridor))
        held = set(record.held_out_episodes) if record else set()
        windows = gated_windows(data, vlm_config.window, settings.gate.corridor, rule)
        chosen = [w for w in windows if w.episode_id in held]
        scope = "held-out episodes"
        if not chosen:
            chosen, scope = windows, "all episodes (none of the fine-tune's held-out episodes are in this dataset)"
        if max_windows is not None and len(chosen) > max_windows:
            picks = sorted({int(i) for i in _spread(len(chosen), max_windows)})
            chosen = [chosen[i] for i in picks]
        click.echo(f"{data.url}: {len(chosen)} gated windows from {scope}")
        backend = make_vlm_backend(vlm_config)
        evaluation, answers = evaluate(chosen, backend, progress=sys.stderr.isatty())
        backend.close()
        out.mkdir(parents=True, exist_ok=True)
        report = {"model": str(model_dir), "dataset": data.url, "scope": scope, **evaluation.as_dict()}
        atomic_write_text(out / "eval.json", _json(report))
        png = examples_png(out / "examples.png", chosen, answers, examples)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    for line in evaluation.lines():
        click.echo(line)
    click.echo(f"wrote {out / 'eval.json'} and {png}")


def _spread(n: int, count: int) -> list[float]:
    return [i * (n - 1) / max(count - 1, 1) for i in range(count)]


def _json(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def _set_threads(threads: int | None) -> None:
    """An explicit torch thread count (the pipeline's thread budget); transformers' own load and save bars are
    hidden behind ours."""
    transformers_logging.disable_progress_bar()
    use_threads(threads or available_cores())

