"""``pipeline demo``: the whole pipeline, small, on the embedded simulator — the README's main job.

No CLIP weights exist offline, and random ones make the static pathway noise (a policy trained on it stands
still). So unless it is given a checkpoint, the demo fine-tunes a small BEV CLIP on the frames it collected,
with captions from the simulator's ground truth (``pipeline clip finetune``), and annotates with it: with
the prompts the fine-tune was evaluated on and the theta range its card derives from the held-out scores,
so the semantic score spans [0, 1] and the reward's desired speed follows danger.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from annotate.clip_eval import BEV_PROMPTS
from annotate.clip_finetune import CARD_FILE, FinetuneConfig, read_card, static_pathway_settings
from pipeline.commands.annotate import annotate
from pipeline.commands.clip import run_finetune
from pipeline.commands.collect import collect, info
from pipeline.commands.evaluate import evaluate
from pipeline.commands.train import train
from pipeline.commands.vlm import eval_command as vlm_eval_command
from pipeline.commands.vlm import finetune_command as vlm_finetune_command

#: What the demo collects before training, per (policy, scenarios, seed): the expert's free driving, random
#: driving (it crashes and leaves the road) and the reckless expert in the staged hazard scenarios, so that
#: the CLIP fine-tune sees dangerous frames of every kind.
DEMO_COLLECTION = (
    ("expert", ("free",), 0),
    ("random", ("free",), 100),
    ("expert-reckless", ("ped_crossing", "cyclist_crossing", "lead_brake", "ped_behind_parked"), 200),
)
#: The demo's BEV CLIP fine-tune: the shipped BEV architecture from random weights, on one core. At 3 epochs it
#: was still underfit (held-out AUROC for any hazard 0.80 with the demo's prompts, 0.93 at 10; bench.clip), and
#: 10 epochs on the demo's 12k frames take under 3 minutes.
DEMO_FINETUNE = FinetuneConfig(threads=1)
#: Fine-tuning steps of the demo's tiny VLM: enough to learn the answer's form, about a minute on two free CPU cores.
DEMO_VLM_STEPS = 100
#: Held-out gated windows the demo's VLM is measured on, so its output says how well the VLM answers (seconds).
DEMO_VLM_EVAL_WINDOWS = 200
#: No vision warm-up in the demo: a tiny VLM that reads its frames needs the warm-up and about 3,000 steps (15
#: minutes on two cores, README), which do not fit the demo; 100 steps without it learn the answer's form.
DEMO_VLM_VISION_STEPS = 0


@click.command("demo")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--clip-checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="open_clip weights for the static pathway (with --clip-model), used as they are. Without it the demo "
                   "fine-tunes a BEV CLIP on the episodes it collected (OUT_DIR/clip).")
@click.option("--clip-model", default=DEMO_FINETUNE.model, show_default=True, help="open_clip architecture of --clip-checkpoint.")
@click.option("--clip-epochs", type=click.IntRange(min=1), default=DEMO_FINETUNE.epochs, show_default=True,
              help="Epochs of the BEV CLIP fine-tune.")
@click.option("--episodes", type=click.IntRange(min=1), default=30, show_default=True,
              help="Episodes collected before training by each of the expert, the random policy and the reckless expert "
                   "in hazard scenarios.")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True, help="Online training rounds.")
@click.option("--steps-per-round", type=click.IntRange(min=1), default=400, show_default=True,
              help="Environment steps collected per online round.")
@click.option("--eval-episodes", type=click.IntRange(min=1), default=3, show_default=True,
              help="Evaluation episodes per policy (random, expert, trained) on the same fixed routes.")
@click.option("--max-steps", type=click.IntRange(min=1), default=200, show_default=True, help="Steps per episode.")
@click.option("--vlm-steps", type=click.IntRange(min=0), default=DEMO_VLM_STEPS, show_default=True,
              help="Fine-tuning steps of the tiny Qwen3-VL that answers for the dynamic pathway (pipeline vlm finetune "
                   "on the collected gated windows); 0 runs without a VLM.")
@click.pass_context
def demo(ctx: click.Context, out_dir: str, clip_checkpoint: str | None, clip_model: str, clip_epochs: int, episodes: int,
         rounds: int, steps_per_round: int, eval_episodes: int, max_steps: int, vlm_steps: int) -> None:  # fmt: skip
    """Collect → fine-tune CLIP → tune the VLM → annotate → train → evaluate on the embedded SUMO town, in minutes on a CPU.

    Writes OUT_DIR/dataset (raw shards and the label set `demo`), OUT_DIR/clip (the BEV CLIP and its card),
    OUT_DIR/vlm (the tiny VLM tuned on the collected gated windows, whose answers give gated frames their
    r_dynamic) and OUT_DIR/run (checkpoints, metrics.csv, TensorBoard logs, evaluation JSON). Rerunning with
    the same OUT_DIR resumes collection, reuses the fine-tuned CLIP, finds the VLM tuned and skips what is
    already annotated; training starts afresh in OUT_DIR/run-2, -3, ...
    """
    out = Path(out_dir)
    dataset = str(out / "dataset")
    _stage("1/6 collect: the expert, the random policy and the reckless expert in hazard scenarios on the SUMO town")
    for policy, scenarios, seed in DEMO_COLLECTION:
        ctx.invoke(collect, dataset=dataset, sim="sumo", episodes=episodes, policy=policy, scenarios=scenarios, seed=seed, max_steps=max_steps)
    ctx.invoke(info, dataset=dataset)

    _stage("2/6 clip: fine-tune a BEV CLIP on the collected frames, captioned from the simulator's ground truth (pipeline clip finetune)")
    clip_settings = _clip_settings(out, dataset, clip_checkpoint, clip_model, clip_epochs)

    _stage("3/6 vlm: fine-tune a tiny Qwen3-VL on the gated windows' ground-truth answers (pipeline vlm finetune)")
    label_settings = (*clip_settings, "gate.source=scene", *_tuned_vlm(ctx, dataset, out / "vlm", vlm_steps))

    _stage("4/6 annotate: the fine-tuned CLIP's static pathway + scene gate + the tuned VLM's dynamic pathway (if tuned) into label set 'demo'")
    ctx.invoke(annotate, dataset=dataset, label_set="demo", overrides=label_settings, in_process=True)

    _stage("5/6 train: online SAC rounds, each round's shards annotated in the background")
    run_dir = _fresh(out / "run")
    ctx.invoke(
        train,
        dataset=dataset,
        label_set="demo",
        run_dir=str(run_dir),
        rounds=rounds,
        steps_per_round=steps_per_round,
        learning_starts=min(steps_per_round, 200),
        updates_per_step=0.5,
        batch_size=64,
        annotate_set=label_settings,
        settings=(f"max_episode_steps={max_steps}", "episodes_per_shard=2"),
    )

    _stage("6/6 evaluate: random, expert and the trained policy on the same fixed routes")
    ctx.invoke(evaluate, targets=("random", "expert", str(run_dir)), episodes=eval_episodes, seed=1000, max_steps=max_steps)


def _clip_settings(out: Path, dataset: str, checkpoint: str | None, model: str, epochs: int) -> tuple[str, ...]:
    """The label set's static-pathway settings: the given CLIP as it is, or one fine-tuned here (once; a rerun
    reuses it) with the demo's prompts and the theta range its card derived from the held-out frames."""
    if checkpoint:
        click.echo(f"CLIP: {model} with weights {checkpoint}, as given (no fine-tune)")
        return (f"clip.model={model}", f"clip.pretrained={checkpoint}")
    clip_dir = out / "clip"
    if (clip_dir / CARD_FILE).is_file():
        click.echo(f"reusing the BEV CLIP fine-tuned in {clip_dir}")
    else:
        run_finetune(dataset, str(clip_dir), dataclasses.replace(DEMO_FINETUNE, epochs=epochs))
    settings = static_pathway_settings(clip_dir, BEV_PROMPTS)
    bev = read_card(clip_dir / CARD_FILE)["heldout"]["prompts"][BEV_PROMPTS.name]
    if bev["theta"] is None:
        click.secho("the fine-tuned CLIP does not rank danger on the held-out frames; keeping the default theta range", fg="yellow")
    else:
        click.echo(
            f"static pathway: {BEV_PROMPTS.positive!r} vs {BEV_PROMPTS.negative!r}, held-out AUROC (any hazard) "
            f"{bev['auroc']['any']:.3f}; theta [{bev['theta']['theta_min']:.4f}, {bev['theta']['theta_max']:.4f}] from the held-out scores"
        )
    return settings


def _tuned_vlm(ctx: click.Context, dataset: str, out: Path, steps: int) -> tuple[str, ...]:
    """The annotate settings of the dynamic pathway: the tiny VLM tuned on ``dataset``, or none when there is
    nothing to tune it on (too few episodes with gated frames) or ``steps`` is 0."""
    if steps == 0:
        click.echo("VLM: off (--vlm-steps 0); gated frames get no dynamic term")
        return ("vlm.backend=none",)
    try:
        ctx.invoke(vlm_finetune_command, dataset=dataset, base="tiny", out_dir=str(out), steps=steps, batch_size=8, learning_rate=None,
                   method="auto", lora_rank=16, holdout=0.2, vision_steps=DEMO_VLM_VISION_STEPS, seed=0, device="cpu", threads=None, config_file=None,
                   overrides=("gate.source=scene",))  # fmt: skip
    except click.ClickException as error:
        click.secho(f"VLM: not tuned ({error.message}); annotating without the dynamic pathway", fg="yellow")
        return ("vlm.backend=none",)
    ctx.invoke(vlm_eval_command, dataset=dataset, model_dir=str(out), out_dir=None, max_windows=DEMO_VLM_EVAL_WINDOWS, examples=6,
               threads=None, config_file=None, overrides=("gate.source=scene",))  # fmt: skip
    return ("vlm.backend=transformers", f"vlm.model={out}", "vlm.device=cpu", "vlm.batch_size=16")


def _stage(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def _fresh(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... if a run is there already."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate
