"""Transformers VLM backend throughput: windows per second, one window per generate call against batches.

    python -m bench.vlm [--model PATH] [--windows 16] [--batch 8] [--max-new-tokens 32] [--frame-size 96x128]

Without ``--model`` it builds the tests' tiny random Qwen3-VL (tests/annotate/vlm_fixtures.py) in a temp
dir, so the figures show the backend's own overhead (processor, chat template, generate loop, parsing)
more than model compute. Random weights never stop early, so every window costs ``--max-new-tokens``
tokens. Each pass assesses the same windows with ``retries = 0``; the two settings alternate for three
rounds (best of three) so load from other work hits both alike. Rates are per wall second and per
CPU-second of this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from annotate.vlm import VlmConfig, make_vlm_backend

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "annotate" / "vlm_fixtures.py"


def _fixtures():
    spec = importlib.util.spec_from_file_location("vlm_fixtures", FIXTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _measure(backend, windows) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    backend.assess(windows)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="saved image-text-to-text model directory (default: tiny random Qwen3-VL)")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--frame-size", default="96x128", help="HxW of the random frames")
    args = parser.parse_args(argv)
    fixtures = _fixtures()
    height, width = (int(v) for v in args.frame_size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(fixtures.build_tiny_qwen3_vl(Path(tmp) / "tiny_qwen3_vl"))
        rng = np.random.default_rng(0)
        windows = [fixtures.random_window(rng, size=(height, width)) for _ in range(args.windows)]
        common = {"backend": "transformers", "model": model, "retries": 0, "device": "cpu",
                  "max_new_tokens": args.max_new_tokens, "prompt": fixtures.TEST_PROMPT}
        backends = {
            "batch 1": make_vlm_backend(VlmConfig(**common, batch_size=1)),
            f"batch {args.batch}": make_vlm_backend(VlmConfig(**common, batch_size=args.batch)),
        }
        for backend in backends.values():  # warm-up: first calls pay one-off costs
            backend.assess(windows[:2])
        best = {name: (float("inf"), float("inf")) for name in backends}
        for _ in range(3):
            for name, backend in backends.items():
                wall, cpu = _measure(backend, windows)
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    print(f"model: {args.model or 'tiny random Qwen3-VL'}; {args.windows} windows of 4 frames {args.frame_size}, "
          f"{args.max_new_tokens} new tokens each, CPU")
    baseline = best["batch 1"][0]
    for name, (wall, cpu) in best.items():
        print(f"{name:>9}: {wall / args.windows:7.3f} s/window wall, {args.windows / cpu:6.2f} windows/CPU-s, "
              f"{args.windows * args.max_new_tokens / wall:7.1f} tokens/s, speed-up vs batch 1: {baseline / wall:4.2f}x")


if __name__ == "__main__":
    sys.exit(main())
