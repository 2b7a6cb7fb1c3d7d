"""BEV rasteriser throughput on real SUMO scenes, against drawing the map from scratch every frame.

    python -m bench.bev_render [--frames 2000] [--size 128]

Scenes come from a SUMO episode on the bundled town (driven along its route by a simple controller), so the
agent and traffic-light counts are the collector's. Prints frames/s of the cached rasteriser, of rasterising
plus PNG encoding (what the collect loop pays per step), and of the uncached baseline, per CPU-second of one
core (best of three passes), so that other work on the machine does not distort the figures.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from collect.backends.sumo import SumoBackend, SumoConfig
from collect.bev import BevConfig, BevRasteriser
from collect.scene import Scene
from data_schema.images import encode_png


def record_scenes(n: int, seed: int) -> list[Scene]:
    """``n`` consecutive scenes (new episodes as needed), the ego following its route at about 6 m/s."""
    backend = SumoBackend(SumoConfig())
    scenes: list[Scene] = []
    try:
        obs = backend.reset(seed)
        while len(scenes) < n:
            scenes.append(obs.scene)
            steer = -2.0 * obs.route.heading_error - 0.5 * obs.route.lateral_offset
            obs = backend.step(np.array([np.clip(steer, -1, 1), 0.3 if obs.speed < 6.0 else 0.0]))
            if obs.events.collision or obs.events.off_road or obs.route.completion > 0.98:
                seed += 1
                obs = backend.reset(seed)
    finally:
        backend.close()
    return scenes


def rate(fn, scenes: list[Scene], repeats: int = 3) -> float:
    """Frames per CPU-second of this process, best of ``repeats``: per-core throughput, steady on a busy machine."""
    best = 0.0
    for _ in range(repeats):
        started = time.process_time()
        for scene in scenes:
            fn(scene)
        best = max(best, len(scenes) / (time.process_time() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, as one collector process has

    scenes = record_scenes(args.frames, args.seed)
    config = BevConfig(size_px=args.size)
    agents = np.mean([len(s.agents) for s in scenes])
    lights = np.mean([len(s.traffic_lights) for s in scenes])
    print(f"{len(scenes)} SUMO scenes, {args.size}x{args.size} px at {config.metres_per_px} m/px; "
          f"mean {agents:.1f} agents, {lights:.1f} stop lines per scene")

    rasteriser = BevRasteriser(config)
    started = time.perf_counter()
    rasteriser.render(scenes[0])  # builds the map raster
    print(f"map raster build (once per map): {1e3 * (time.perf_counter() - started):.1f} ms")

    cached = rate(rasteriser.render, scenes)
    with_png = rate(lambda s: encode_png(rasteriser.render(s)), scenes)
    baseline_scenes = scenes[: max(20, len(scenes) // 20)]
    uncached = rate(lambda s: BevRasteriser(config).render(s), baseline_scenes)
    print(f"cached rasteriser:       {cached:8.0f} frames/s  ({1e3 / cached:.3f} ms/frame)")
    print(f"cached + PNG encode:     {with_png:8.0f} frames/s  ({1e3 / with_png:.3f} ms/frame)")
    print(f"map redrawn every frame: {uncached:8.0f} frames/s  ({1e3 / uncached:.3f} ms/frame)")
    print(f"speed-up of the cache:   {cached / uncached:8.1f} x")


if __name__ == "__main__":
    main()
