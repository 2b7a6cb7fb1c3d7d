"""The transformers VLM backend and the VLM fine-tune: answers/s with and without constrained decoding, and
batched against one window per call; with ``--dataset``, the fine-tune's time and its held-out figures.

    python -m bench.vlm [--model PATH] [--windows 16] [--batch 8] [--max-new-tokens 160] [--threads 1]
    python -m bench.vlm --dataset DS [--steps 3000] [--eval-windows 300] [--out DIR]

Without ``--model`` the backend figures use a tiny random Qwen3-VL (``annotate.vlm.tiny``), so they show the
backend's own overhead (processor, chat template, generate loop, grammar masks, parsing) more than model
compute; random weights stop only where the grammar closes the answer, or at ``--max-new-tokens``. The
settings alternate for three rounds (best of three) so load from other work hits them alike; rates are per
wall second and per CPU-second of this process, and each setting's tokens per answer are printed, since
constrained decoding changes how long an answer is.

With ``--dataset`` it runs ``pipeline vlm finetune --base tiny`` (into ``--out``, default a temp dir), then
measures the tuned model on the held-out windows with and without constrained decoding, and the backend
figures on the tuned model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from annotate.config import load_config
from annotate.vlm import VlmConfig, make_vlm_backend
from annotate.vlm.evaluation import evaluate
from annotate.vlm.sft import read_record
from annotate.vlm.sft_data import gated_windows
from annotate.vlm.targets import TargetRule
from annotate.vlm.vision_warmup import probe_summary
from annotate.vlm.tiny import build_tiny_qwen3_vl
from data_schema import Dataset, encode_png
from data_schema.risk import RiskRule

PROMPT = "Assess the hazard in these frames and answer with the JSON object."


def _random_windows(count: int, side: int) -> list[list[bytes]]:
    rng = np.random.default_rng(0)
    return [[encode_png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(4)] for _ in range(count)]


def _backend_figures(model: str, prompt: str, windows: list[list[bytes]], args: argparse.Namespace) -> None:
    common = {"backend": "transformers", "model": model, "retries": 0, "device": "cpu", "max_new_tokens": args.max_new_tokens,
              "prompt": prompt}  # fmt: skip
    backends = {
        "constrained, batch 1": make_vlm_backend(VlmConfig(**common, batch_size=1)),
        f"constrained, batch {args.batch}": make_vlm_backend(VlmConfig(**common, batch_size=args.batch)),
        f"free, batch {args.batch}": make_vlm_backend(VlmConfig(**common, batch_size=args.batch, structured_output=False)),
    }
    tokenizer = next(iter(backends.values()))._processor.tokenizer
    for backend in backends.values():  # warm-up: first calls pay one-off costs
        backend.assess(windows[:2])
    best = {name: (float("inf"), float("inf")) for name in backends}
    tokens: dict[str, float] = {}
    valid: dict[str, float] = {}
    for _ in range(3):
        for name, backend in backends.items():
            wall, cpu = time.perf_counter(), time.process_time()
            answers = backend.assess(windows)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
            tokens[name] = float(np.mean([len(tokenizer(a.raw or "")["input_ids"]) for a in answers]))
            valid[name] = float(np.mean([a.ok for a in answers]))
    n = len(windows)
    print(f"backend: {n} windows of 4 frames, up to {args.max_new_tokens} new tokens, CPU, {torch.get_num_threads()} torch thread(s)")
    for name, (wall, cpu) in best.items():
        print(f"  {name:>22}: {n / wall:6.2f} answers/s wall, {n / cpu:6.2f} answers/CPU-s, {tokens[name]:5.1f} tokens/answer, "
              f"{n * tokens[name] / wall:7.1f} tokens/s, valid {valid[name]:.0%}")  # fmt: skip
    constrained, free = best[f"constrained, batch {args.batch}"][0], best[f"free, batch {args.batch}"][0]
    per_token = (free / tokens[f"free, batch {args.batch}"]) / (constrained / tokens[f"constrained, batch {args.batch}"])
    print(f"  constrained / free at batch {args.batch}: {free / constrained:.2f}x answers/s, {per_token:.2f}x tokens/s")
    print(f"  batch {args.batch} / batch 1 (constrained): {best['constrained, batch 1'][0] / constrained:.2f}x answers/s")


def _finetune(args: argparse.Namespace, out: Path) -> None:
    command = [sys.executable, "-m", "pipeline", "vlm", "finetune", args.dataset, "--out", str(out), "--steps", str(args.steps),
               "--threads", str(args.threads)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    record = read_record(out)
    print(f"fine-tune: {args.steps} steps in {record.seconds:.0f} s of training ({time.perf_counter() - start:.0f} s with data "
          f"and loss checks); {record.train_windows} training windows from {len(record.train_episodes)} episodes; held-out "
          f"loss per answer token {record.held_out_loss_before:.3f} -> {record.held_out_loss_after:.3f}")  # fmt: skip
    if record.vision_warmup is not None:
        print(probe_summary(record.vision_warmup))
    settings = load_config()
    corridor = settings.gate.corridor
    windows = gated_windows(Dataset.open(args.dataset), record.request["window"], corridor, TargetRule(risk=RiskRule(corridor=corridor)),
                            episodes=record.held_out_episodes)  # fmt: skip
    if args.eval_windows and len(windows) > args.eval_windows:
        picks = np.linspace(0, len(windows) - 1, args.eval_windows).round().astype(int)
        windows = [windows[i] for i in sorted(set(picks.tolist()))]
    for structured in (True, False):
        config = VlmConfig(backend="transformers", model=str(out), device="cpu", structured_output=structured, retries=0,
                           max_new_tokens=args.max_new_tokens, **record.request)  # fmt: skip
        evaluation, _ = evaluate(windows, make_vlm_backend(config), progress=False)
        print("held-out evaluation:")
        for line in evaluation.lines():
            print(f"  {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="saved image-text-to-text model directory (default: tiny random Qwen3-VL)")
    parser.add_argument("--dataset", help="fine-tune the tiny model on this dataset first, and measure it")
    parser.add_argument("--steps", type=int, default=3000, help="fine-tuning steps (with --dataset)")
    parser.add_argument("--eval-windows", type=int, default=300, help="held-out windows measured (with --dataset)")
    parser.add_argument("--out", help="where the tuned model goes (with --dataset; default a temp dir)")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset:
            out = Path(args.out) if args.out else Path(tmp) / "tuned"
            _finetune(args, out)
            record = read_record(out)
            held = gated_windows(Dataset.open(args.dataset), record.request["window"], load_config().gate.corridor, TargetRule(),
                                 episodes=record.held_out_episodes[:2])  # fmt: skip
            _backend_figures(str(out), record.request["prompt"], [list(w.frames) for w in held[: args.windows]], args)
            return
        model = args.model or str(build_tiny_qwen3_vl(Path(tmp) / "tiny", [PROMPT]))
        _backend_figures(model, PROMPT, _random_windows(args.windows, 128), args)


if __name__ == "__main__":
    sys.exit(main())
