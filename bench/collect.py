"""Collect-loop throughput on the SUMO backend: the simulator alone, with BEV rendering, with Parquet writing.

Run it as a module from the repository root (as a script, this file would shadow the ``collect`` package):

    python -m bench.collect [--episodes 8] [--max-steps 400] [--episodes-per-shard 4] [--repeats 3] [--seed 0]

Every phase drives the same seeds with the expert policy, so the trajectories are identical (the backend is
deterministic by seed) and the phases differ only in what they add:

  sim      backend.reset/step + expert policy
  +bev     DrivingEnv: the above + BEV rendering + end rules
  +write   RolloutWriter: the above + PNG encoding, Arrow rows, atomic Parquet shards (the full loop)

Phases run interleaved, one shard's worth of episodes at a time, so load from other work on the machine hits
them alike, and each phase reports its fastest of ``--repeats`` passes. Rates are steps per CPU-second of
this process (one core: cv2 and Arrow kept single-threaded), with wall-clock rates beside them. Goals: >= 100 steps/s per core for the full loop, writer overhead <= 10 %.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from collect.backends.sumo import SumoConfig
from collect.env import EnvSpec, EpisodeLimits
from collect.policies.expert import ExpertPolicy
from collect.rollout import RolloutWriter
from data_schema import Dataset, decode_image, encode_png


@dataclass
class Phase:
    steps: int = 0
    cpu: float = 0.0
    wall: float = 0.0

    def timed(self, fn, *args):
        c, w = time.process_time(), time.perf_counter()
        result = fn(*args)
        self.cpu += time.process_time() - c
        self.wall += time.perf_counter() - w
        return result

    def rate(self) -> tuple[float, float]:
        return self.steps / self.cpu, self.steps / self.wall


def cpu_seconds(fn) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def sim_only(env, policy: ExpertPolicy, seed: int, steps: int) -> int:
    """The backend and the policy for exactly ``steps`` steps: no rendering, no end rules, no rows."""
    obs = env.backend.reset(seed)
    for _ in range(steps):
        obs = env.backend.step(policy.act(obs))
    return steps


def with_bev(env, policy: ExpertPolicy, seed: int) -> int:
    current = env.reset(seed)
    while not current.done:
        current = env.step(policy.act(current.obs, current.bev))
    return current.step


def run_pass(env, policy: ExpertPolicy, writer: RolloutWriter, args: argparse.Namespace) -> dict[str, Phase]:
    """One interleaved pass over the episodes: each shard's episodes with writing, then BEV only, then sim only."""
    phases = {"sim": Phase(), "+bev": Phase(), "+write": Phase()}
    indices = list(range(args.episodes))
    for start in range(0, args.episodes, args.episodes_per_shard):
        chunk = indices[start : start + args.episodes_per_shard]
        shard = phases["+write"].timed(writer.collect_shard, chunk)
        lengths = {e.index: e.steps for e in shard.episodes}
        phases["+write"].steps += shard.steps
        for i in chunk:
            steps = phases["+bev"].timed(with_bev, env, policy, args.seed + i)
            assert steps == lengths[i], f"episode {i}: {steps} steps with BEV only, {lengths[i]} with writing"
            phases["+bev"].steps += steps
            phases["sim"].steps += phases["sim"].timed(sim_only, env, policy, args.seed + i, steps)
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--episodes-per-shard", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="passes; each phase reports its fastest")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    env = EnvSpec(backend=SumoConfig(), limits=EpisodeLimits(max_steps=args.max_steps)).build()
    policy = ExpertPolicy()
    passes = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Dataset.create(f"{tmp}/bench")
        with_bev(env, policy, args.seed + args.episodes)  # warm-up: map parsing and raster caches
        for repeat in range(args.repeats):
            writer = RolloutWriter(dataset, env, policy, run_id=f"bench{repeat}", base_seed=args.seed)
            passes.append(run_pass(env, policy, writer, args))
        env.close()
        shards = [s for s in dataset.shards() if "-bench0-" in s]
        rows = dataset.read_steps(["step"], shards=shards).num_rows
        size = sum(dataset.fs.size(dataset.shard_path(s)) for s in shards)
        bevs = [decode_image(b) for b in dataset.read_steps(["bev"], shards=shards).column("bev").to_pylist()]
    phases = {name: min((p[name] for p in passes), key=lambda phase: phase.cpu) for name in passes[0]}
    png_cpu = min(cpu_seconds(lambda: [encode_png(b) for b in bevs]) for _ in range(args.repeats))

    print(f"python -m bench.collect --episodes {args.episodes} --max-steps {args.max_steps} "
          f"--episodes-per-shard {args.episodes_per_shard} --repeats {args.repeats} --seed {args.seed}")  # fmt: skip
    print(f"{args.episodes} expert episodes, {phases['sim'].steps} steps, {rows} rows in {len(shards)} shards; "
          f"fastest of {args.repeats} passes per phase")  # fmt: skip
    print(f"{'phase':8} {'steps/s (CPU)':>14} {'steps/s (wall)':>15} {'ms/step (CPU)':>14}")
    for name, phase in phases.items():
        cpu_rate, wall_rate = phase.rate()
        print(f"{name:8} {cpu_rate:14.1f} {wall_rate:15.1f} {1000 * phase.cpu / phase.steps:14.2f}")
    sim, bev, full = (phases[k].cpu / phases[k].steps for k in ("sim", "+bev", "+write"))
    print(f"BEV (+ end rules) cost  {1000 * (bev - sim):.2f} ms/step ({(bev - sim) / full:.1%} of the full loop)")
    print(f"writer overhead         {1000 * (full - bev):.2f} ms/step = {(full - bev) / full:.1%} of the full loop "
          f"({full / bev - 1:+.1%} over sim+BEV); goal <= 10 %")  # fmt: skip
    print(f"  of which PNG encoding {1000 * png_cpu / len(bevs):.2f} ms/step (data_schema.encode_png)")
    print(f"full loop               {1 / full:.1f} steps/s per core; goal >= 100")
    print(f"bytes on disk           {size / rows:.0f} per step ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
