"""Training throughput: collection beside annotation, replay, and SAC updates against a plain-PyTorch SAC and
against the code before issue 10.

Run it as a module from the repository root (one command; ``--device cuda`` times the updates on a GPU too):

    python -m bench.train [--device cpu,cuda] [--threads 1,2] [--updates 8] [--repeats 3] [--skip-collection]

1. collects ``--data-steps`` expert steps on the SUMO town into a scratch dataset;
2. collection steps/s with the thread budget of the online round (``pipeline.threads``): the expert, the SAC
   policy (default networks, the trainer's ``SacDriver``, ``COLLECTOR_THREADS`` torch threads) and the SAC
   policy with torch's default of one thread per core, first alone, then while a real ``pipeline annotate``
   pass (tiny CLIP, scene gate, no VLM; the budget's workers and threads) labels step 1's shards, as in an
   online round. Goal: SAC >= 0.5x the expert's steps/s, with and without the pass;
3. replay from the labelled shards with raw and zstd frames: bytes per transition, projected memory of 10^6
   transitions, ``sample(256)`` time;
4. SAC updates at batch 256 with the default networks, per ``--threads`` count and ``--device``, repeated
   ``--repeats`` times, interleaved (median and range):
   a. the agent (d3rlpy, ``train.sac``) against ``bench/plain_sac.py``, SAC written directly in PyTorch on
      the same networks, weights and pre-sampled batches (update only; checked to compute the same losses).
      Goal: >= 0.8x;
   b. the code before issue 10 (``git archive --baseline-rev``, default the main it started from; where there
      is no git checkout, ``--baseline-src DIR`` holding it unpacked, e.g. made with
      ``mkdir -p .cache/before && git archive 613d707 train data_schema | tar -x -C .cache/before``) against
      this checkout, each in a fresh process running ``bench/baseline_update.py`` on the same transitions:
      replay sampling plus update, as training runs them. Goal: >= 3x;
   c. the trunk's share of an update (forward+backward on s, two forwards on s') as it runs (channels-last,
      in-place ReLUs) against the same weights in the default layout with ReLUs out of place.

Timings on a shared machine are noisy: the load average is printed before and after, and every ratio is
between figures taken in the same run, interleaved.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.plain_sac import PlainSAC
from collect import EnvSpec, EpisodeLimits, RolloutWriter, make_policy
from data_schema import Dataset
from pipeline.background_annotation import BackgroundAnnotation
from pipeline.sac_driver import SacDriver
from pipeline.threads import available_cores, online_budget, thread_env
from train import ReplayBatch, ReplayBuffer, ShardTransitions, TrainConfig, create_agent, read_shard_transitions
from train.encoder import BevStateTrunk, scale_bev

ANNOTATE = ("clip.model=ViT-S-32-alt", "clip.pretrained=none", "clip.device=cpu", "gate.source=scene", "vlm.backend=none")
#: The main this issue's work started from: the "before" of the speed-up.
BASELINE_REV = "613d707"
ROOT = Path(__file__).resolve().parent.parent


def collect(dataset: Dataset, policy, run_id: str, steps: int, max_steps: int, threads: int) -> float:
    """Steps per wall-second for ``steps`` collected steps with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    env = EnvSpec(limits=EpisodeLimits(max_steps=max_steps)).build()
    try:
        writer = RolloutWriter(dataset, env, policy, run_id=run_id, base_seed=0)
        started = time.perf_counter()
        done = sum(s.steps for s in writer.collect_steps(steps, 0, episodes_per_shard=4))
        return done / (time.perf_counter() - started)
    finally:
        env.close()


def collection(data: Dataset, scratch: Dataset, args: argparse.Namespace, tmp: str) -> None:
    budget = online_budget()
    driver = SacDriver(create_agent(TrainConfig(bev_size=args.bev_size)), name="sac-bench")
    runs = (("expert", make_policy("expert"), budget.collector), ("SAC", driver, budget.collector),
            (f"SAC, torch default ({available_cores()} threads)", driver, available_cores()))  # fmt: skip
    rates: dict[tuple[str, str], float] = {}
    for name, policy, threads in runs:
        rates[name, "alone"] = collect(scratch, policy, f"a{len(rates)}", args.collect_steps, args.max_steps, threads)
    annotation = BackgroundAnnotation(data.url, "bench", [a for s in ANNOTATE for a in ("--set", s)], f"{tmp}/annotate.log",
                                      budget.annotation_workers, budget.annotation_threads)  # fmt: skip
    annotation.start()
    labels = data.label_set("bench")
    while not labels.exists() and annotation.running:  # the pass has loaded its models once it creates the label set
        time.sleep(0.5)
    overlapped = []
    for name, policy, threads in runs:
        rates[name, "beside"] = collect(scratch, policy, f"b{len(rates)}", args.collect_steps, args.max_steps, threads)
        overlapped.append(annotation.running)
    annotation.wait()
    if annotation.failures or not labels.exists():
        raise SystemExit(f"annotation failed; see {tmp}/annotate.log")
    print(f"\ncollection steps/s ({args.collect_steps} steps per figure; {budget.describe()})")
    print(f"  {'policy':<34} {'alone':>8} {'beside annotation':>18}")
    for name, _, threads in runs:
        print(f"  {name:<34} {rates[name, 'alone']:8.1f} {rates[name, 'beside']:18.1f}")
    for name, _, _ in runs[1:]:
        alone, beside = (rates[name, k] / rates["expert", k] for k in ("alone", "beside"))
        print(f"  {name} / expert: {alone:.2f}x alone, {beside:.2f}x beside annotation (goal >= 0.5x)")
    print(f"  annotation pass still running at the end of each 'beside' figure: {overlapped}")


def replay(data: Dataset, bev_size: int) -> list[ShardTransitions]:
    labels = data.label_set("bench")
    print(f"\nreplay ({len(labels.labelled())} labelled shards, frames {bev_size}x{bev_size})")
    chunks = []
    for codec in ("raw", "zstd"):
        buffer = ReplayBuffer(limit=10**6)
        started = time.perf_counter()
        for shard in labels.labelled():
            chunk = read_shard_transitions(data, labels, shard, bev_size, codec)
            buffer.add(chunk)
            if codec == "raw":
                chunks.append(chunk)
        load_s = time.perf_counter() - started
        per = buffer.nbytes / len(buffer)
        times = []
        for _ in range(20):
            started = time.perf_counter()
            buffer.sample(256)
            times.append(time.perf_counter() - started)
        print(f"  {codec:<5} {per:8.0f} bytes/transition -> {per * 1e6 / 2**30:6.2f} GiB for 10^6 transitions; "
              f"sample(256) {statistics.median(times) * 1000:6.1f} ms; load {len(buffer) / load_s:6.0f} transitions/s")  # fmt: skip
    return chunks


def save_transitions(chunks: list[ShardTransitions], path: str) -> None:
    arrays = {"chunks": np.array(len(chunks))}
    for i, c in enumerate(chunks):
        for name in ("frames", "states", "actions", "src", "rewards", "terminals"):
            arrays[f"{i}_{name}"] = getattr(c, name)
    np.savez(path, **arrays)


def checkout(rev: str, into: str) -> str | None:
    """``train`` and ``data_schema`` of ``rev`` unpacked under ``into``; None where git or the revision is missing."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "train", "data_schema"], capture_output=True)
    if archive.returncode != 0:
        return None
    tar_path = Path(into) / "old.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(Path(into) / "old", filter="data")
    return str(Path(into) / "old")


def harness(code_root: str, transitions: str, updates: int, threads: int, device: str) -> dict:
    """``bench/baseline_update.py`` in a fresh process with ``code_root``'s ``train`` package."""
    env = {**os.environ, **thread_env(threads), "PYTHONPATH": code_root}
    command = [sys.executable, "-P", str(ROOT / "bench" / "baseline_update.py"), transitions, "--updates", str(updates),
               "--threads", str(threads), "--device", device]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=code_root)
    if result.returncode != 0:
        raise SystemExit(f"{code_root}: baseline_update.py failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["train"]).resolve().is_relative_to(Path(code_root).resolve()), report
    return report


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} [{min(values):.2f}-{max(values):.2f}]"


def timed(update, batches: list, device: str) -> float:
    """Updates per second: the inverse of the median seconds of one update over ``batches``."""
    seconds = []
    for batch in batches:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        update(batch)  # returns float losses: the device is synchronised
        seconds.append(time.perf_counter() - started)
    return 1.0 / statistics.median(seconds)


class DefaultLayoutTrunk(BevStateTrunk):
    """A trunk's weights run as before issue 10: default (NCHW) layout, ReLUs out of place."""

    def __init__(self, trunk: BevStateTrunk) -> None:
        nn.Module.__init__(self)
        self.cnn = copy.deepcopy(trunk.cnn).to(memory_format=torch.contiguous_format)
        for i, layer in enumerate(self.cnn):
            if isinstance(layer, nn.ReLU):
                self.cnn[i] = nn.ReLU()
        self.bev_head, self.state_mlp = copy.deepcopy(trunk.bev_head), copy.deepcopy(trunk.state_mlp)

    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.bev_head(self.cnn(bev)), self.state_mlp(state)], dim=1)


def trunk_layouts(trunk: BevStateTrunk, batch: ReplayBatch, repeats: int, device: str) -> str:
    """Milliseconds of one update's trunk work in both layouts (median of ``repeats``, interleaved)."""
    bev, state, next_bev, next_state = (torch.as_tensor(a, device=device) for a in (*batch.observations, *batch.next_observations))
    layouts = {"channels-last, in-place ReLU": trunk, "default layout": DefaultLayoutTrunk(trunk)}
    times: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(repeats + 1):  # the first round warms both up
        for name, module in layouts.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            module(scale_bev(bev), state).sum().backward()
            with torch.no_grad():
                module(scale_bev(next_bev), next_state)
                module(scale_bev(next_bev), next_state)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    ms = {name: statistics.median(t[1:]) * 1000 for name, t in times.items()}
    gain = ms["default layout"] / ms["channels-last, in-place ReLU"]
    return ", ".join(f"{name} {value:.0f} ms" for name, value in ms.items()) + f" ({gain:.2f}x)"


def updates(chunks: list[ShardTransitions], args: argparse.Namespace, tmp: str) -> None:
    buffer = ReplayBuffer(limit=10**6, seed=1)
    for chunk in chunks:
        buffer.add(chunk)
    batches = [buffer.sample(256) for _ in range(args.updates)]
    transitions = f"{tmp}/transitions.npz"
    save_transitions(chunks, transitions)
    old_root = str(Path(args.baseline_src).resolve()) if args.baseline_src else checkout(args.baseline_rev, tmp)
    before = args.baseline_src or args.baseline_rev
    for device in args.device:
        for threads in args.threads:
            torch.set_num_threads(threads)
            config = TrainConfig(bev_size=args.bev_size, device=device)
            agent = create_agent(config)
            plain = PlainSAC(config, device)
            plain.copy_weights(agent)
            torch.manual_seed(0)
            first = agent.update(batches[0])
            torch.manual_seed(0)
            same = max(abs(first[k] - v) for k, v in plain.update(batches[0]).items())
            rates: dict[str, list[float]] = {"agent": [], "plain": [], "old": [], "new": [], "old_cpu": [], "new_cpu": []}
            for _ in range(args.repeats):
                rates["agent"].append(timed(agent.update, batches, device))
                rates["plain"].append(timed(plain.update, batches, device))
                if old_root is not None:
                    for side, root in (("old", old_root), ("new", str(ROOT))):
                        report = harness(root, transitions, args.updates, threads, device)
                        rates[side].append(1.0 / report["wall_s"])
                        rates[f"{side}_cpu"].append(1.0 / report["cpu_s"])
            print(f"\nSAC updates/s, batch 256, default networks, {device}, {threads} torch thread(s): median [range] over "
                  f"{args.repeats} repeats of each figure, itself from the median of {args.updates} updates")  # fmt: skip
            ratio = [a / p for a, p in zip(rates["agent"], rates["plain"])]
            rows = [
                ("a. agent (d3rlpy, shared trunk), update only", spread(rates["agent"]), ""),
                ("   plain PyTorch SAC, same networks and batches", spread(rates["plain"]), f"first update's losses differ by {same:.1e}"),
                ("   agent / plain", spread(ratio), "goal >= 0.8"),
            ]
            if old_root is None:
                rows.append((f"b. before issue 10: revision {args.baseline_rev} not available (no git checkout)", "skipped", ""))
            else:
                speedup = [n / o for n, o in zip(rates["new"], rates["old"])]
                cpu_speedup = [n / o for n, o in zip(rates["new_cpu"], rates["old_cpu"])]
                rows += [
                    (f"b. before issue 10 ({before}), sample + update", spread(rates["old"]), ""),
                    ("   this checkout, sample + update", spread(rates["new"]), ""),
                    ("   speed-up", spread(speedup), "goal >= 3x"),
                    ("   speed-up in updates per CPU-second", spread(cpu_speedup), "load-proof at 1 thread"),
                ]
            for label, figure, note in rows:
                print(f"  {label:<52} {figure:>24}   {note}")
            print(f"  c. trunk work of one update: {trunk_layouts(plain.trunk, batches[0], args.repeats, device)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-steps", type=int, default=600, help="expert steps collected as the bench's dataset")
    parser.add_argument("--collect-steps", type=int, default=300, help="steps per collection figure")
    parser.add_argument("--max-steps", type=int, default=100, help="steps per episode")
    parser.add_argument("--updates", type=int, default=8, help="updates per timed figure")
    parser.add_argument("--repeats", type=int, default=3, help="timed figures per line, interleaved")
    parser.add_argument("--threads", default=None, help="torch thread counts for the updates, e.g. 1,2 (default: 1 and every core)")
    parser.add_argument("--device", default=None, help="devices for the updates, e.g. cpu,cuda (default: cpu, and cuda when there is one)")
    parser.add_argument("--bev-size", type=int, default=64)
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision whose update is the 'before'")
    parser.add_argument("--baseline-src", default=None, help="folder holding the 'before' train and data_schema, where git is missing")
    parser.add_argument("--skip-collection", action="store_true", help="skip part 2 (collection steps/s)")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, available_cores()})
    args.device = args.device.split(",") if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    print(f"load average at start: {os.getloadavg()}, {available_cores()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = Dataset.create(f"{tmp}/data")
        collect(data, make_policy("expert"), "expert", args.data_steps, args.max_steps, threads=1)
        print(f"dataset: {len(data.shards())} shards of expert driving ({args.data_steps}+ steps)")
        if args.skip_collection:
            annotation = BackgroundAnnotation(data.url, "bench", [a for s in ANNOTATE for a in ("--set", s)], f"{tmp}/annotate.log")
            annotation.start()
            annotation.wait()
        else:
            collection(data, Dataset.create(f"{tmp}/scratch"), args, tmp)
        chunks = replay(data, args.bev_size)
        updates(chunks, args, tmp)
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
