"""Does a tuned VLM use its frames? Held-out loss per answer token with each window's own frames, with another
window's frames, and with noise frames.

    python -m bench.vlm_frames DATASET --model DIR [--windows 48] [--threads 1]

A model that reads the frames has a clearly lower loss with its own frames than with swapped ones. Equal
losses with swapped frames while noise frames raise the loss mean the image path is wired but the model
answers from the prior (what the tiny model tuned on a CPU does: issue 13's note).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from annotate.config import load_config
from annotate.vlm.sft import answer_loss, read_record
from annotate.vlm.sft_data import GatedWindow, gated_windows
from annotate.vlm.targets import TargetRule
from data_schema import Dataset, encode_png
from data_schema.risk import RiskRule


def with_frames(windows: list[GatedWindow], frames: list[tuple[bytes, ...]]) -> list[GatedWindow]:
    return [dataclasses.replace(w, frames=f) for w, f in zip(windows, frames)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--model", required=True, help="a model directory written by `pipeline vlm finetune`")
    parser.add_argument("--windows", type=int, default=48, help="held-out gated windows measured")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = read_record(args.model)
    if record is None:
        parser.error(f"{args.model}: no finetune.json (not written by `pipeline vlm finetune`)")
    settings = load_config()
    vlm = dataclasses.replace(settings.vlm, **record.request)
    corridor = settings.gate.corridor
    windows = gated_windows(Dataset.open(args.dataset), vlm.window, corridor, TargetRule(risk=RiskRule(corridor=corridor)),
                            episodes=record.held_out_episodes)[: args.windows]  # fmt: skip
    if len(windows) < 2:
        parser.error(f"{args.dataset}: {len(windows)} held-out gated windows; need 2 or more")
    processor = AutoProcessor.from_pretrained(args.model, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32, local_files_only=True).eval()
    shift = max(1, len(windows) // 3)
    swapped = with_frames(windows, [w.frames for w in windows[shift:] + windows[:shift]])
    rng = np.random.default_rng(0)
    side = vlm.max_image_side or 64
    noise = with_frames(windows, [tuple(encode_png(rng.integers(0, 256, (side, side, 3), np.uint8)) for _ in w.frames) for w in windows])
    print(f"{args.model} on {len(windows)} held-out gated windows of {args.dataset}: loss per answer token")
    for name, chosen in (("own frames", windows), ("another window's frames", swapped), ("noise frames", noise)):
        print(f"  {name:26} {answer_loss(model, processor, vlm, chosen):.5f}")


if __name__ == "__main__":
    main()
