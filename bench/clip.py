"""The static pathway with random weights against the BEV CLIP the demo fine-tunes, on held-out SUMO episodes.

Run it as a module from the repository root:

    python -m bench.clip [--episodes 30] [--heldout-episodes 12] [--epochs 10] [--word-dropout 0.5] [--text-views 256]
                         [--text-view-dropout 0.8] [--seed 0] [--data DIR]

It collects the demo's data (``pipeline.commands.demo.DEMO_COLLECTION``: the expert, the random policy and the
reckless expert in hazard scenarios, ``--episodes`` each) and, with other seeds, a held-out dataset of the same
mix (``--heldout-episodes`` each) that the fine-tune never sees. It then fine-tunes with the demo's settings
(``DEMO_FINETUNE``; time, CPU time and samples/s) and evaluates on every held-out frame, for random weights and
for the fine-tuned model, reading texts through its text views and as written:

  AUROC of r_static = sim(positive) - sim(negative) for "any hazard", per prompt pair: the VLM-RL defaults, the
  demo's prompts, phrasings no caption template produces, and an out-of-vocabulary pair (goals: the demo's
  prompts >= 0.90, unseen phrasings >= 0.85, random weights about 0.5);
  AUROC per hazard kind for the VLM-RL defaults and the demo's prompts;
  text-to-image retrieval of the frames' own captions.

Words the fine-tuned text tower never learned are left out of the goals, and the table names them. The cost of
the text views is printed as texts encoded per second, through the views and as written, on the held-out frames'
lead caption sentences and on their whole captions (about as long as a VLM's description).

The machine's load average is printed before and after: timings on a shared machine are only comparable
with it. ``--data DIR`` keeps the datasets (and the fine-tune) there, so a rerun skips collection and training;
the histogram of the fine-tuned model's score per hazard class goes to ``--histogram`` (artifacts/).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from annotate.clip_data import EpisodeSplit, load_frames, scan
from annotate.clip_eval import BEV_PROMPTS, DEFAULT_PROMPTS, VLM_RL_PROMPTS, evaluate_clip
from annotate.clip_finetune import CHECKPOINT_FILE, finetune
from annotate.static_pathway import ClipConfig, StaticPathway
from annotate.word_dropout import TextViews
from collect import EnvSpec, EpisodeLimits, collect_episodes
from data_schema import Dataset
from data_schema.groundtruth import HAZARD_KINDS
from pipeline.commands.demo import DEMO_COLLECTION, DEMO_FINETUNE
from pipeline.threads import available_cores, use_threads

#: Seeds of the held-out dataset are this far from the training ones.
HELDOUT_SEED_OFFSET = 10_000
#: Whole captions the text-encoding figure times: nearly all of a long text's 256 copies are distinct, so they are the slow case.
TIMED_CAPTIONS = 200


def collect(root: Path, episodes: int, seed_offset: int, max_steps: int) -> None:
    for policy, scenarios, seed in DEMO_COLLECTION:
        env = EnvSpec(sim="sumo", limits=EpisodeLimits(max_steps=max_steps), scenarios=scenarios)
        collect_episodes(str(root), env, policy, episodes=episodes, seed=seed + seed_offset)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {available_cores()} cores"


def fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=30, help="training episodes per policy of the demo's mix")
    parser.add_argument("--heldout-episodes", type=int, default=12, help="held-out episodes per policy of the mix")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=DEMO_FINETUNE.epochs)
    parser.add_argument("--word-dropout", type=float, default=DEMO_FINETUNE.word_dropout, help="0 trains on whole sentences (the ablation)")
    parser.add_argument("--text-views", type=int, default=DEMO_FINETUNE.views.count, help="1 reads texts as written")
    parser.add_argument("--text-view-dropout", type=float, default=DEMO_FINETUNE.text_view_dropout)
    parser.add_argument("--threads", type=int, default=DEMO_FINETUNE.threads)
    parser.add_argument("--seed", type=int, default=DEMO_FINETUNE.seed, help="fine-tune seed (split, initial weights, sample order)")
    parser.add_argument("--data", type=Path, default=None, help="keep datasets and the fine-tune here (default: a temp dir)")
    parser.add_argument("--histogram", type=Path, default=Path("artifacts/clip_histogram.png"), help="where to write the PNG")
    args = parser.parse_args()
    use_threads(args.threads)
    root = args.data or Path(tempfile.mkdtemp(prefix="bench-clip-"))
    train_data, heldout_data = root / "train", root / "heldout"
    print(f"data in {root}; {load()}")

    started = time.perf_counter()
    collect(train_data, args.episodes, 0, args.max_steps)
    collect(heldout_data, args.heldout_episodes, HELDOUT_SEED_OFFSET, args.max_steps)
    print(f"collected (or found) both datasets in {time.perf_counter() - started:.0f} s")

    config = dataclasses.replace(
        DEMO_FINETUNE, epochs=args.epochs, threads=args.threads, seed=args.seed, word_dropout=args.word_dropout,
        text_views=args.text_views, text_view_dropout=args.text_view_dropout,
    )  # fmt: skip
    suffix = f"-v{config.views.count}-{config.views.dropout:g}" if config.views.count > 1 else ""
    tuned = root / f"clip-e{args.epochs}-s{args.seed}-wd{args.word_dropout:g}{suffix}"
    wall, cpu = time.perf_counter(), time.process_time()
    card = finetune(str(train_data), tuned, config, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    training = card["training"]
    data = card["dataset"]
    print(f"\nfine-tune ({config.model} from {config.init}, {training['epochs']} epochs, word dropout {config.word_dropout:g}, "
          f"{config.threads} thread(s)): "
          f"{training['samples']:,} samples in {training['seconds']:.0f} s of training "
          f"({training['samples_per_s']:.0f} samples/s); whole call {wall:.0f} s wall, {cpu:.0f} s CPU "
          "(a finished fine-tune found in --data costs nothing: rerun without it to time one)")  # fmt: skip
    print(f"  data: {data['frames']:,} frames of {data['episodes']} episodes ({data['heldout_episodes']} held out), "
          f"hazard share {data['hazard_share']['any']:.1%}; held-out contrastive loss "
          f"{training['heldout_loss'][0]:.3f} -> {training['heldout_loss'][-1]:.3f}; {load()}")  # fmt: skip

    dataset = Dataset.open(str(heldout_data))
    frames = load_frames(dataset, scan(dataset, EpisodeSplit(config.heldout_share, config.seed)))
    rows = range(len(frames))
    counts = ", ".join(f"{k} {int(frames.hazards[k].sum()):,}" for k in HAZARD_KINDS)
    print(f"\nheld-out dataset (seeds +{HELDOUT_SEED_OFFSET}, never trained on): {len(frames):,} frames; {counts}")
    results, pathways = {}, {}
    for label, weights, reading in (
        ("random", "none", None), ("fine-tuned", str(tuned / CHECKPOINT_FILE), None), ("as written", str(tuned / CHECKPOINT_FILE), TextViews()),
    ):  # fmt: skip
        clip = ClipConfig(model=card["model"], pretrained=weights, device=config.device, batch_size=256, seed=config.seed)
        pathways[label] = StaticPathway(clip, reading)
        results[label] = evaluate_clip(pathways[label], frames, rows, DEFAULT_PROMPTS, config.seed)

    views = pathways["fine-tuned"].text_views
    print(f"\nAUROC of r_static for any hazard          random  fine-tuned  (texts as written)   prompts; fine-tuned: texts read as "
          f"the mean of {views.count} copies, each word dropped with p {views.dropout:g}")  # fmt: skip
    for pair in DEFAULT_PROMPTS:
        values = [results[label].summary["prompts"][pair.name]["auroc"]["any"] for label in results]
        print(f"  {pair.name:<18} {pair.group:<20} {fmt(values[0])}      {fmt(values[1])}      ({fmt(values[2])})       "
              f"{pair.positive!r} vs {pair.negative!r}")  # fmt: skip
        unknown = results["fine-tuned"].summary["prompts"][pair.name]["unknown_words"]
        if unknown:
            print(f"  {'':<51} the fine-tuned CLIP never learned, and leaves out: {', '.join(unknown)}")
    for pair in (VLM_RL_PROMPTS, BEV_PROMPTS):
        print(f"\nper hazard kind, {pair.name} prompts        random  fine-tuned   frames")
        for kind in HAZARD_KINDS:
            values = [results[label].summary["prompts"][pair.name]["auroc"][kind] for label in ("random", "fine-tuned")]
            print(f"  {kind:<38} {fmt(values[0])}      {fmt(values[1])}   {int(frames.hazards[kind].sum()):,}")
    for label, result in results.items():
        retrieval = result.summary["retrieval"]
        print(f"\ntext-to-image retrieval, {label}: top-1 {fmt(retrieval['top1'])}, top-5 {fmt(retrieval['top5'])} "
              f"in groups of {retrieval['group']} (chance top-1 {retrieval['chance_top1']:.3f})")  # fmt: skip
    print()
    for what, texts in (
        ("lead caption sentences", sorted({caption[0].text for caption in frames.captions})),
        ("whole captions (as long as a VLM's description)", sorted({" ".join(s.text for s in caption) for caption in frames.captions})[:TIMED_CAPTIONS]),
    ):  # fmt: skip
        rates = {}
        for label in ("fine-tuned", "as written"):
            started = time.perf_counter()
            pathways[label].encode_texts(texts)
            rates[label] = len(texts) / (time.perf_counter() - started)
        words = sum(len(text.split()) for text in texts) / len(texts)
        print(f"text encoding, {len(texts):,} distinct {what}, {words:.0f} words on average: {rates['fine-tuned']:,.0f} texts/s "
              f"through the views, {rates['as written']:,.0f} texts/s as written ({rates['as written'] / rates['fine-tuned']:.0f}x)")
    theta = results["fine-tuned"].summary["prompts"][BEV_PROMPTS.name]["theta"]
    print(f"\ndemo prompts' theta range on these frames: {theta}; card's (fine-tune held-out): "
          f"{card['heldout']['prompts'][BEV_PROMPTS.name]['theta']}")
    args.histogram.parent.mkdir(parents=True, exist_ok=True)
    args.histogram.write_bytes(results["fine-tuned"].histogram_png())
    print(f"histogram of the fine-tuned model's r_static per hazard class: {args.histogram}; {load()}")
    if args.data is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
