"""Annotate throughput and gate quality, every figure measured in one run on the same SUMO frames.

Run it as a module from the repository root:

    python -m bench.annotate [--clip-model ViT-B-32] [--clip-checkpoint PATH] [--episodes 6] [--steps 40]
                             [--gate-episodes 12] [--gate-steps 150] [--yolo-weights PATH] [--repeats 3]

It collects a small SUMO dataset (expert policy, one episode per shard; pedestrians and cyclists in the
bundled town), then measures:

  static pathway   raw batched CLIP forward on pre-processed frames (the model alone) against the pipeline's
                   shard task with a cold cache (Parquet read, PNG decode, pre-processing, forward, embedding
                   cache and label shard writes): frames/s and their ratio (goal >= 0.9)
  re-annotation    the cold shard tasks against the same shards under a new prompt set (embeddings from the
                   cache): seconds and ratio (goal >= 50x); each pass uses new prompts, so text encoding counts
  YOLO gate        CameraGate.detect on camera photos (ultralytics' bus.jpg / zidane.jpg): frames/s
  gate quality     the scene gate on a larger SUMO dataset: share of frames sent to the VLM (goal <= 25 %) and
                   recall against the ground-truth corridor (goal >= 0.95)
  dask             ``annotate_dataset`` with a local cluster of 1 then 2 worker processes on cold copies:
                   wall seconds and labelling seconds (after the cluster and the first model are up); the
                   speed-up of the labelling phase (goal >= 1.7x)

In-process phases run with ``--torch-threads`` (default 1, like each dask worker process) and alternate for
``--repeats`` rounds and report the best, so load from other work on the
machine hits them alike; rates are per wall second, with per CPU-second of this process beside them.
Without a checkpoint CLIP runs with random weights: the same compute as trained ones, meaningless scores.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from annotate import model_cache
from annotate.config import load_config
from annotate.gate import CameraGate, GateConfig
from annotate.label_set import ModelIds, build_spec, prepare
from annotate.model_weights import cache_dir
from annotate.run import RunOptions, annotate_dataset
from annotate.shard_task import ShardTask, annotate_shard
from collect import EnvSpec, EpisodeLimits, collect_episodes
from data_schema import Dataset, decode_image
from data_schema.groundtruth import critical_in_corridor


def collect(root: Path, episodes: int, steps: int, seed: int) -> Dataset:
    collect_episodes(str(root), EnvSpec(sim="sumo", limits=EpisodeLimits(max_steps=steps)), "expert", episodes=episodes, seed=seed, episodes_per_shard=1)
    return Dataset.open(str(root))


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def raw_forward(pathway, pixels: torch.Tensor) -> Clock:
    """The CLIP image tower alone on pre-processed batches, as the static pathway batches them."""
    cuda = pathway.device.type == "cuda"
    size = pathway.config.batch_size
    with Clock() as clock, torch.inference_mode(), torch.autocast(pathway.device.type, dtype=torch.bfloat16, enabled=cuda):
        for start in range(0, len(pixels), size):
            out = pathway.model.encode_image(pixels[start : start + size].to(pathway.device, non_blocking=True))
        out.float().cpu()
    return clock


def label_all(dataset: Dataset, name: str, config, pathway) -> tuple[Clock, int, int]:
    """The shard tasks of every shard in this process; returns the clock, frames and images encoded."""
    labels, digest = prepare(dataset, name, build_spec(config, ModelIds(pathway.model_id, pathway.weights_id, None)), replace=True)
    frames = encoded = 0
    with Clock() as clock:
        for shard in dataset.shards():
            stats = annotate_shard(ShardTask(dataset.url, shard, name, digest, config, force=True))
            frames += stats.frames
            encoded += stats.images_encoded
    return clock, frames, encoded


def yolo_weights(path: str | None) -> Path | None:
    candidate = Path(path) if path else cache_dir() / "weights" / "yolov8n.pt"
    return candidate if candidate.is_file() else None


def camera_photos(n: int) -> list[np.ndarray]:
    spec = importlib.util.find_spec("ultralytics")
    assets = Path(spec.submodule_search_locations[0]) / "assets"
    photos = [np.asarray(Image.open(assets / name).convert("RGB")) for name in ("bus.jpg", "zidane.jpg")]
    return [photos[i % 2] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--clip-checkpoint", default="none", help="open_clip weights file; 'none' = random weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--episodes", type=int, default=6, help="episodes (= shards) of the timing dataset")
    parser.add_argument("--steps", type=int, default=40, help="steps per episode of the timing dataset")
    parser.add_argument("--gate-episodes", type=int, default=12)
    parser.add_argument("--gate-steps", type=int, default=150)
    parser.add_argument("--yolo-weights", default=None, help="ultralytics yolov8n.pt (default: the tests' cached copy)")
    parser.add_argument("--yolo-frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="annotate setting for every phase, as in `pipeline annotate --set` (e.g. gate.corridor_half_width=1.75)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of the in-process phases (dask workers run one thread each)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    tmp = Path(tempfile.mkdtemp(prefix="bench-annotate-"))
    overrides = [f"clip.model={args.clip_model}", f"clip.pretrained={args.clip_checkpoint}", f"clip.device={args.device}",
                 "gate.source=scene", "vlm.backend=none", *args.overrides]
    config = load_config(None, overrides)
    try:
        t0 = time.perf_counter()
        dataset = collect(tmp / "ds", args.episodes, args.steps, args.seed)
        print(f"dataset: {len(dataset.shards())} SUMO shards, {dataset.info()['steps']} frames, collected in {time.perf_counter() - t0:.1f} s")
        pathway = model_cache.static_pathway(config.clip)
        print(f"CLIP {pathway.model_id} ({pathway.weights_id}) on {pathway.device}, batch {config.clip.batch_size}, torch threads {torch.get_num_threads()}")

        frames = [decode_image(b) for _, t in dataset.iter_steps(["bev"]) for b in t.column("bev").to_pylist()]
        cfg = pathway.model.visual.preprocess_cfg
        import open_clip

        preprocess = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                               resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"])
        pixels = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
        raw_forward(pathway, pixels[: config.clip.batch_size])  # warm-up

        raw, cold, warm = [], [], []
        for r in range(args.repeats):
            raw.append(raw_forward(pathway, pixels))
            shutil.rmtree(f"{dataset.path}/cache", ignore_errors=True)
            clock, n, encoded = label_all(dataset, "cold", config, pathway)
            assert n == len(frames) and encoded == n
            cold.append(clock)
            fresh = load_config(None, [*overrides, f"prompts.positive=An empty road, take {r}", f"prompts.negative=A crash, take {r}"])
            clock, n, encoded = label_all(dataset, "new-prompts", fresh, pathway)
            assert encoded == 0, "re-annotation ran the image encoder"
            warm.append(clock)
        n = len(frames)
        best_raw = min(raw, key=lambda c: c.wall)
        best_cold = min(cold, key=lambda c: c.wall)
        best_warm = min(warm, key=lambda c: c.wall)
        print("\nstatic pathway (best of %d)" % args.repeats)
        print(f"  raw CLIP forward      {n / best_raw.wall:8.1f} frames/s  ({n / best_raw.cpu:.1f} per CPU-s)")
        print(f"  pipeline shard tasks  {n / best_cold.wall:8.1f} frames/s  ({n / best_cold.cpu:.1f} per CPU-s)")
        print(f"  ratio pipeline/raw    {best_raw.wall / best_cold.wall:8.2f}  (goal >= 0.9; per CPU-s {best_raw.cpu / best_cold.cpu:.2f})")
        print("re-annotation with new prompts (best of %d)" % args.repeats)
        print(f"  cold {best_cold.wall:.2f} s, re-annotation {best_warm.wall:.3f} s: {best_cold.wall / best_warm.wall:.0f}x faster (goal >= 50x)")

        weights = yolo_weights(args.yolo_weights)
        if weights is None:
            print("YOLO gate: skipped (no yolov8n.pt: pass --yolo-weights, or run the annotate tests once to cache it)")
        else:
            gate = CameraGate(GateConfig(source="camera", weights=str(weights), device=args.device))
            photos = camera_photos(args.yolo_frames)
            gate.detect(photos[:2])
            clocks = []
            for _ in range(args.repeats):
                with Clock() as clock:
                    fired = [gate.fires(d) for d in gate.detect(photos)]
                clocks.append(clock)
            best = min(clocks, key=lambda c: c.wall)
            print(f"YOLO gate ({weights.name}, imgsz {gate.config.imgsz}, {gate.config.batch_size} per batch): "
                  f"{len(photos) / best.wall:.1f} frames/s ({len(photos) / best.cpu:.1f} per CPU-s); fired on {sum(fired)}/{len(photos)} photos of people")

        gate_ds = collect(tmp / "gate", args.gate_episodes, args.gate_steps, args.seed + 1)
        agents = gate_ds.read_steps(["agents"]).column("agents")
        gated = critical_in_corridor(agents, config.gate.corridor)
        # the scene gate is the ground truth itself (recall 1 by construction): only its share says something
        print(f"scene gate on {len(gated)} SUMO frames ({args.gate_episodes} episodes): {100 * gated.mean():.1f} % gated "
              f"(goal <= 25 %), corridor {config.gate.corridor_length} m x +-{config.gate.corridor_half_width} m")

        model_cache.clear()  # the workers load their own
        runs = {}
        for workers in (1, 2):
            copy = Dataset.open(str(shutil.copytree(dataset.path, tmp / f"dask{workers}", ignore=shutil.ignore_patterns("cache", "labels"))))
            summary = annotate_dataset(copy.url, config, RunOptions("bench", workers=workers, progress=False))
            assert summary.done == len(dataset.shards()) and not summary.failed, summary.failed
            runs[workers] = summary
            print(f"dask, {workers} worker(s): {summary.seconds:.1f} s wall, {summary.seconds - summary.startup_seconds:.1f} s labelling; "
                  f"gate {100 * summary.gate_share:.1f} %")
        one, two = runs[1], runs[2]
        speedup = (one.seconds - one.startup_seconds) / (two.seconds - two.startup_seconds)
        print(f"  speed-up 2 vs 1 workers: {speedup:.2f}x labelling (goal >= 1.7x), {one.seconds / two.seconds:.2f}x wall")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
