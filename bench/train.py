"""Training throughput: replay memory, gradient updates, and online collection with annotation running beside it.

Run it as a module from the repository root:

    python -m bench.train [--data-steps 300] [--collect-steps 200] [--updates 10] [--bev-size 64]

1. collects ``--data-steps`` expert steps on the SUMO town into a scratch dataset;
2. collects ``--collect-steps`` steps with a SAC policy (default networks, the trainer's ``SacDriver``) three
   times: without annotation, while a real ``pipeline annotate`` pass labels step 1's shards (tiny CLIP,
   scene gate, no VLM: the background pass of an online run), and without again, to bracket drift in the
   machine's load; prints steps/s and the slowdown ratio;
3. builds replay from the labelled shards with raw and zstd frames: bytes per transition and the projected
   memory of 10^6 transitions (goal <= 8 GB);
4. times SAC updates (batch 256) with the default networks and the tiny test networks, and replay sampling
   alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from collect import EnvSpec, EpisodeLimits, RolloutWriter, make_policy
from data_schema import Dataset
from pipeline.background_annotation import BackgroundAnnotation
from pipeline.sac_driver import SacDriver
from train import ReplayBuffer, TrainConfig, create_agent, read_shard_transitions

ANNOTATE = ("clip.model=ViT-S-32-alt", "clip.pretrained=none", "clip.device=cpu", "gate.source=scene", "vlm.backend=none")
TINY = dict(cnn_channels=(4, 8), feature_size=16, state_units=8, hidden_units=(16,))


def collect(dataset: Dataset, policy, run_id: str, steps: int, max_steps: int) -> tuple[float, float]:
    """Steps per wall-second and per CPU-second of this process for ``steps`` collected steps."""
    env = EnvSpec(limits=EpisodeLimits(max_steps=max_steps)).build()
    try:
        writer = RolloutWriter(dataset, env, policy, run_id=run_id, base_seed=0)
        wall, cpu = time.perf_counter(), time.process_time()
        done = sum(s.steps for s in writer.collect_steps(steps, 0, episodes_per_shard=4))
        return done / (time.perf_counter() - wall), done / (time.process_time() - cpu)
    finally:
        env.close()


def updates_per_s(config: TrainConfig, buffer: ReplayBuffer, n: int, threads: int) -> float:
    torch.set_num_threads(threads)
    agent = create_agent(config)
    agent.update(buffer.sample(config.batch_size))  # first update builds optimiser state
    started = time.perf_counter()
    for _ in range(n):
        agent.update(buffer.sample(config.batch_size))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-steps", type=int, default=300)
    parser.add_argument("--collect-steps", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--bev-size", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = Dataset.create(f"{tmp}/data")
        collect(data, make_policy("expert"), "expert", args.data_steps, args.max_steps)
        print(f"dataset: {len(data.shards())} shards of expert driving ({args.data_steps}+ steps)")

        driver = SacDriver(create_agent(TrainConfig(bev_size=args.bev_size)), name="sac-bench")
        scratch = Dataset.create(f"{tmp}/scratch")
        alone_1 = collect(scratch, driver, "alone1", args.collect_steps, args.max_steps)
        annotation = BackgroundAnnotation(data.url, "bench", [a for s in ANNOTATE for a in ("--set", s)], f"{tmp}/annotate.log")
        annotation.start()
        time.sleep(5.0)  # let the pass start its workers and load CLIP, as it would be mid-run
        beside = collect(scratch, driver, "beside", args.collect_steps, args.max_steps)
        overlapped = annotation.running
        alone_2 = collect(scratch, driver, "alone2", args.collect_steps, args.max_steps)
        alone = ((alone_1[0] + alone_2[0]) / 2, (alone_1[1] + alone_2[1]) / 2)
        print("\ncollection with the SAC policy (steps/s: wall, per CPU-second of the collector)")
        print(f"  without annotation   {alone[0]:7.1f}  {alone[1]:7.1f}   (runs: {alone_1[0]:.1f}, {alone_2[0]:.1f} wall)")
        print(f"  annotation running   {beside[0]:7.1f}  {beside[1]:7.1f}   (pass still running at the end: {overlapped})")
        print(f"  slowdown ratio       {alone[0] / beside[0]:7.2f}  {alone[1] / beside[1]:7.2f}")

        annotation.wait()
        labels = data.label_set("bench")
        if annotation.failures or not labels.exists():
            raise SystemExit(f"annotation failed; see {tmp}/annotate.log")
        print(f"\nreplay ({len(labels.labelled())} labelled shards, frames {args.bev_size}x{args.bev_size})")
        buffers = {}
        for codec in ("raw", "zstd"):
            buffer = ReplayBuffer(limit=10**6)
            started = time.perf_counter()
            for shard in labels.labelled():
                buffer.add(read_shard_transitions(data, labels, shard, args.bev_size, codec))
            load_s = time.perf_counter() - started
            per = buffer.nbytes / len(buffer)
            started = time.perf_counter()
            for _ in range(5):
                buffer.sample(256)
            sample_ms = (time.perf_counter() - started) / 5 * 1000
            print(f"  {codec:<5} {per:8.0f} bytes/transition  -> {per * 1e6 / 2**30:6.2f} GiB for 10^6 transitions; "
                  f"sample(256) {sample_ms:6.1f} ms; load {len(buffer) / load_s:6.0f} transitions/s")  # fmt: skip
            buffers[codec] = buffer

        print(f"\nSAC updates, batch 256, CPU ({args.updates} timed per line)")
        default_threads = torch.get_num_threads()
        networks = (
            ("default networks", TrainConfig(bev_size=args.bev_size)),
            ("tiny networks", TrainConfig(bev_size=args.bev_size, **TINY)),
        )
        for name, config in networks:
            for codec in ("raw", "zstd"):
                for threads in sorted({1, default_threads}):
                    rate = updates_per_s(config, buffers[codec], args.updates, threads)
                    print(f"  {name:<17} {codec:<5} {threads} thread(s) {rate:7.2f} updates/s")


if __name__ == "__main__":
    main()
