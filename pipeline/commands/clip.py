"""``pipeline clip finetune`` and ``pipeline clip eval``: a static pathway that reads the dataset's own BEV."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from annotate.clip_data import EpisodeSplit, load_frames, scan
from annotate.clip_eval import DEFAULT_PROMPTS, PromptPair, evaluate_clip
from annotate.clip_finetune import CARD_FILE, DEFAULT_MODEL, RANDOM_INIT_TEXT_VIEWS, FinetuneConfig, finetune, read_card
from annotate.model_weights import WeightsError
from annotate.static_pathway import ClipConfig, StaticPathway
from data_schema import Dataset, DatasetError
from data_schema.storage import atomic_write_bytes, atomic_write_text, filesystem

#: Errors that carry a message for the user; anything else is a bug and keeps its traceback.
USER_ERRORS = (DatasetError, WeightsError, ValueError, FileNotFoundError)
_DEFAULTS = FinetuneConfig()


@click.group("clip", context_settings={"max_content_width": 110})
def clip() -> None:
    """Fine-tune CLIP on a dataset's BEV frames with captions from the simulator's ground truth, and measure it.

    \b
    Offline (random initial weights, the shipped BEV architecture):
      pipeline clip finetune data/town --out models/bev-clip
      pipeline clip eval data/town --clip-checkpoint models/bev-clip/model.safetensors
      pipeline annotate data/town --label-set bev --clip-checkpoint models/bev-clip/model.safetensors \\
          --set clip.model=BEV-ViT-T-8-64
    With internet and a GPU, start from a pretrained tag instead:
      pipeline clip finetune data/carla --out models/carla-clip --model ViT-B-32 --init laion2b_s34b_b79k --device cuda
    """


@clip.command("finetune")
@click.argument("dataset")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for model.safetensors (for --clip-checkpoint) and card.json; an interrupted run there "
                   "resumes after its last complete epoch when rerun with the same settings.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="open_clip architecture (open_clip.list_models()); BEV-ViT-T-8-64 is a small ViT shipped for BEV frames "
                   "(downsampled to 64 px) that trains in minutes on a CPU.")
@click.option("--init", default=_DEFAULTS.init, show_default=True,
              help="Initial weights: a pretrained tag of --model (downloaded on first use), a checkpoint file, or "
                   "'none' for random weights (all there is without internet).")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs, show_default=True,
              help="Passes over as many samples as there are training frames.")
@click.option("--batch-size", type=click.IntRange(min=2), default=_DEFAULTS.batch_size, show_default=True,
              help="(frame, caption) pairs per contrastive batch.")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, help="Peak AdamW learning rate (warm-up, then cosine decay).")
@click.option("--weight-decay", type=float, default=_DEFAULTS.weight_decay, show_default=True)
@click.option("--hazard-share", type=float, default=_DEFAULTS.hazard_share, show_default=True,
              help="Share of each epoch's samples drawn from frames with a hazard (they are a minority).")
@click.option("--leave-out", default=",".join(_DEFAULTS.leave_out), show_default=True,
              help="Caption slots (annotate/captions.py TEMPLATES) left out of the training text, comma-separated: by default "
                   "the ego's speed, which one frame does not show, and road users that are no hazard.")
@click.option("--word-dropout", type=float, default=_DEFAULTS.word_dropout, show_default=True,
              help="Share of each training sentence's words dropped, common words more often than rare ones, so the text "
                   "tower learns what the telling words mean rather than the templates' syntax, and language goals phrased "
                   "anew rank danger (0 trains on whole sentences).")
@click.option("--text-views", type=click.IntRange(min=1), default=None,
              help="The static pathway reads a language goal (or VLM description) as the mean embedding of this many copies "
                   "with words dropped at random: a text tower trained from random weights on templates reads a new sentence "
                   "through its word order, which differs from seed to seed, and the mean rests on the words. Written into "
                   f"the checkpoint; 1 reads texts as written. [default: {RANDOM_INIT_TEXT_VIEWS} with --init none, else 1]")
@click.option("--text-view-dropout", type=float, default=_DEFAULTS.text_view_dropout, show_default=True,
              help="Probability that a word is dropped from each of the --text-views copies.")
@click.option("--mirror/--no-mirror", default=_DEFAULTS.mirror, show_default=True,
              help="Mirror half the samples left to right, the frame and the sides its caption names.")
@click.option("--heldout-share", type=float, default=_DEFAULTS.heldout_share, show_default=True,
              help="Share of each policy's episodes held out for the card's metrics.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True, help="Episode split, sample order, random initial weights.")
@click.option("--device", default=_DEFAULTS.device, show_default=True, help="auto (first CUDA device, else cpu), cpu, cuda:1, ...")
@click.option("--threads", type=click.IntRange(min=1), default=_DEFAULTS.threads, show_default=True,
              help="torch CPU threads; more than the idle cores slows training down.")
def finetune_command(dataset: str, out_dir: str, model: str, init: str, epochs: int, batch_size: int, lr: float, weight_decay: float,
                     hazard_share: float, leave_out: str, word_dropout: float, text_views: int | None, text_view_dropout: float, mirror: bool,
                     heldout_share: float, seed: int, device: str, threads: int) -> None:  # fmt: skip
    """Contrastive fine-tuning of CLIP (open_clip's ClipLoss) on DATASET's BEV frames and their captions.

    Captions are made from each frame's ground truth (road users in the corridor ahead, vehicles within braking
    distance, collisions and leaving the road, the ego's lane keeping), with varied phrasing. Episodes are split
    into training and held-out ones; the card reports the held-out AUROC of the static pathway's score per hazard
    kind and the theta range that makes its semantic score span [0, 1].
    """
    try:
        slots = tuple(slot.strip() for slot in leave_out.split(",") if slot.strip())
        config = FinetuneConfig(
            model=model, init=init, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, hazard_share=hazard_share,
            leave_out=slots, word_dropout=word_dropout, text_views=text_views, text_view_dropout=text_view_dropout, mirror=mirror,
            heldout_share=heldout_share, seed=seed, device=device, threads=threads,
        )  # fmt: skip
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    run_finetune(dataset, out_dir, config)


def run_finetune(dataset: str, out_dir: str, config: FinetuneConfig) -> dict:
    """Fine-tune as ``pipeline clip finetune`` does (progress bar, summary, user errors as click's); the card."""
    try:
        card = finetune(dataset, out_dir, config, progress=sys.stderr.isatty())
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    training = card["training"]
    click.echo(f"wrote {Path(out_dir) / card['checkpoint']} ({card['model']}) and {Path(out_dir) / CARD_FILE}")
    click.echo(
        f"{training['epochs']} epoch(s), {training['samples']:,} samples in {training['seconds']:.0f} s "
        f"({training['samples_per_s']:.0f}/s); held-out contrastive loss {training['heldout_loss'][0]:.3f} -> {training['heldout_loss'][-1]:.3f}"
    )
    _echo_summary(card["heldout"])
    return card


@clip.command("eval")
@click.argument("dataset")
@click.option("--clip-checkpoint", required=True,
              help="Weights to evaluate: a checkpoint file (its card.json, if beside it, names the model and the split), "
                   "a pretrained tag, or 'none' for random weights (the baseline).")
@click.option("--clip-model", default=None, help=f"open_clip architecture. Default: the card's, else {DEFAULT_MODEL}.")
@click.option("--prompts", "extra_prompts", type=(str, str), multiple=True, metavar="POSITIVE NEGATIVE",
              help="A pair of language goals to evaluate besides the defaults (VLM-RL's, the demo's, unseen phrasings). Repeatable.")
@click.option("--label-set", "label_set", default=None, help="Also evaluate the prompts of this label set of DATASET.")
@click.option("--episodes", type=click.Choice(["heldout", "all"]), default="heldout", show_default=True,
              help="heldout: the episodes the fine-tuner held out (same split); all: every episode (a dataset it never saw).")
@click.option("--heldout-share", type=float, default=None, help="Split of --episodes heldout. Default: the card's, else 0.2.")
@click.option("--seed", type=int, default=None, help="Split seed. Default: the card's, else 0.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write eval.json and the histogram of the score per hazard class (histogram.png) here.")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch CPU threads.")
def eval_command(dataset: str, clip_checkpoint: str, clip_model: str | None, extra_prompts: tuple[tuple[str, str], ...], label_set: str | None,
                 episodes: str, heldout_share: float | None, seed: int | None, out_dir: str | None, device: str, threads: int) -> None:  # fmt: skip
    """How well the static pathway's score separates dangerous frames of DATASET from clear ones.

    Per pair of language goals: AUROC of r_static = sim(positive) - sim(negative) for each hazard kind (a critical
    road user in the corridor, a vehicle within braking distance, a collision or leaving the road within 1 s, any)
    and per kind of critical road user (pedestrian, cyclist, ...: a prompt naming one kind is judged on its frames),
    its quantiles on safe and dangerous frames, and text-to-image retrieval accuracy of the frames' own captions.
    """
    import torch

    torch.set_num_threads(threads)
    try:
        card = _card_beside(clip_checkpoint)
        settings = card.get("settings", {})
        model = clip_model or card.get("model") or DEFAULT_MODEL
        split = EpisodeSplit(heldout_share or settings.get("heldout_share", 0.2), settings.get("seed", 0) if seed is None else seed)
        pairs = DEFAULT_PROMPTS + _label_set_prompts(dataset, label_set) + tuple(
            PromptPair(f"user-{i + 1}", positive, negative) for i, (positive, negative) in enumerate(extra_prompts)
        )
        pathway = StaticPathway(ClipConfig(model=model, pretrained=clip_checkpoint, device=device, batch_size=256, seed=split.seed))
        ds = Dataset.open(dataset)
        data = scan(ds, split, progress=sys.stderr.isatty())
        rows = data.test if episodes == "heldout" else range(len(data))
        result = evaluate_clip(pathway, load_frames(ds, data, progress=sys.stderr.isatty()), rows, pairs, split.seed)
    except USER_ERRORS as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{model} with {pathway.weights_id}: {result.summary['frames']:,} frames ({episodes} episodes)")
    _echo_summary(result.summary)
    if out_dir:
        fs, path = filesystem(out_dir)
        fs.makedirs(path, exist_ok=True)
        atomic_write_bytes(fs, f"{path}/histogram.png", result.histogram_png())
        atomic_write_text(Path(out_dir) / "eval.json", json.dumps({"model": model, "weights_id": pathway.weights_id, **result.summary}, indent=2))
        click.echo(f"wrote {Path(out_dir) / 'eval.json'} and {Path(out_dir) / 'histogram.png'}")


def _card_beside(checkpoint: str) -> dict:
    path = Path(checkpoint).expanduser()
    card = path.parent / CARD_FILE
    return read_card(card) if path.is_file() and card.is_file() else {}


def _label_set_prompts(dataset: str, label_set: str | None) -> tuple[PromptPair, ...]:
    if label_set is None:
        return ()
    prompts = Dataset.open(dataset).label_set(label_set).info().section("prompts")
    if not {"positive", "negative"} <= set(prompts):
        raise DatasetError(f"label set {label_set!r} records no static-pathway prompts")
    return (PromptPair(f"label-set {label_set}", prompts["positive"], prompts["negative"], "label set"),)


def _echo_summary(summary: dict) -> None:
    hazards = summary["hazard_frames"]
    click.echo(
        f"held-out frames {summary['frames']:,}: " + ", ".join(f"{kind} {count:,}" for kind, count in hazards.items())
    )
    views = summary.get("text_views")
    if views and views["count"] > 1:
        click.echo(f"texts read as the mean of {views['count']} copies, each word dropped with p {views['dropout']:g} (the checkpoint's text views)")
    if summary.get("road_user_frames"):
        click.echo("  critical road users in the corridor: " + ", ".join(f"{kind} {count:,}" for kind, count in summary["road_user_frames"].items()))
    click.echo(f"{'AUROC of r_static':<28} {'critical_agent':>14} {'vehicle_close':>14} {'event_soon':>11} {'any':>7}   prompts")
    for name, pair in summary["prompts"].items():
        values = " ".join(f"{_num(pair['auroc'][k]):>{w}}" for k, w in (("critical_agent", 14), ("vehicle_close", 14), ("event_soon", 11), ("any", 7)))
        click.echo(f"{name:<28} {values}   {pair['positive']!r} vs {pair['negative']!r}")
        by_user = pair.get("auroc_by_road_user", {})
        if by_user:
            click.echo(f"{'':<28} by road user in the corridor: " + ", ".join(f"{kind} {_num(value)}" for kind, value in by_user.items()))
        if pair.get("unknown_words"):
            click.echo(f"{'':<28} left out, never learned: " + ", ".join(pair["unknown_words"]))
    retrieval = summary["retrieval"]
    click.echo(
        f"text-to-image retrieval in groups of {retrieval['group']}: top-1 {_num(retrieval['top1'])}, top-5 {_num(retrieval['top5'])} "
        f"(chance top-1 {_num(retrieval['chance_top1'])})"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
