"""Times one checkout's SAC update, replay sampling included, on transitions ``bench/train.py`` saved.

``bench/train.py`` runs it twice per repeat, in fresh processes with ``python -P`` (the script's folder, which
holds ``bench/train.py``, stays off the path): once with an older checkout's ``train`` package first on
``PYTHONPATH`` (the code before issue 10, unpacked with ``git archive``) and once with this checkout's. Both
then run this same harness with their own ``create_agent``, ``ReplayBuffer`` and frame codec, so the ratio is
the speed-up of the code alone. Prints one JSON line: the median wall and CPU seconds per update (medians
shrug off the moments another process takes the core; CPU seconds, at one thread, hardly see it at all).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import train
from train import ReplayBuffer, ShardTransitions, TrainConfig, create_agent
from train.replay import compress_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transitions", help=".npz written by bench/train.py")
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--codec", default="zstd")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = np.load(args.transitions)
    buffer = ReplayBuffer(limit=10**7, seed=0)
    for i in range(int(data["chunks"])):
        frames = data[f"{i}_frames"]
        rows = len(frames)
        buffer.add(ShardTransitions(
            shard=f"chunk{i}", bev_size=frames.shape[-1], episodes=("bench",), episode_index=np.zeros(rows, np.int32),
            steps=np.arange(rows, dtype=np.int32), frames=compress_frames(frames) if args.codec == "zstd" else frames,
            states=data[f"{i}_states"], actions=data[f"{i}_actions"], src=data[f"{i}_src"], rewards=data[f"{i}_rewards"],
            terminals=data[f"{i}_terminals"], timeouts=np.zeros(len(data[f"{i}_src"]), bool),
        ))  # fmt: skip
    config = TrainConfig(bev_size=int(data["0_frames"].shape[-1]), device=args.device)
    agent = create_agent(config)
    agent.update(buffer.sample(config.batch_size))  # the first update builds the optimisers' state
    wall, cpu = [], []
    for _ in range(args.updates):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started, started_cpu = time.perf_counter(), time.process_time()
        agent.update(buffer.sample(config.batch_size))  # returns float losses: the device is synchronised
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    report = {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "agent": type(agent).__name__, "train": train.__file__}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
