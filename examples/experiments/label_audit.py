"""Audit an experiment's label sets against ground truth: why does one reward variant train safer policies than another?

    python examples/experiments/label_audit.py runs/reward-design/dataset

For every label set of the dataset it prints how well the semantic score and the whole reward rank dangerous frames
(a ground-truth hazard, ``data_schema.groundtruth.hazards``) below safe ones (AUROC), the mean reward of each
behaviour that collected the data (a reward that pays the reckless expert more than the expert teaches
recklessness), and the mean reward on hazard frames, safe frames and collision steps.
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa

from data_schema import Dataset
from data_schema.groundtruth import HAZARD_COLUMNS, hazards
from data_schema.ranking import auroc


def _fmt(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="an experiment's shared dataset (OUT/dataset)")
    args = parser.parse_args()
    dataset = Dataset.open(args.dataset)
    raw = pa.concat_tables([dataset.read_shard(s, [*HAZARD_COLUMNS, "policy"]) for s in dataset.shards()])
    danger = hazards(raw)["any"]
    collision = raw.column("collision").to_numpy(zero_copy_only=False).astype(bool)
    policy = np.asarray(raw.column("policy").to_pylist())
    policies = sorted(set(policy))
    keys = list(zip(raw.column("episode_id").to_pylist(), raw.column("step").to_pylist()))
    print(f"{args.dataset}: {raw.num_rows} frames, {danger.mean():.1%} with a ground-truth hazard")
    header = ["label set", "AUROC -semantic", "AUROC -reward", *(f"r {p}" for p in policies), "r hazard", "r safe", "r collision"]
    print(" | ".join(header))
    for name in dataset.label_sets():
        labels = dataset.join(name, columns=["episode_id", "step"], label_columns=["reward", "semantic"])
        row_of = {key: i for i, key in enumerate(zip(labels["episode_id"], labels["step"]))}
        rows = np.array([row_of[key] for key in keys])
        reward, semantic = labels["reward"].to_numpy()[rows], labels["semantic"].to_numpy()[rows]
        figures = [
            auroc(-semantic, danger), auroc(-reward, danger), *(reward[policy == p].mean() for p in policies),
            reward[danger].mean(), reward[~danger].mean(), reward[collision].mean() if collision.any() else None,
        ]  # fmt: skip
        print(" | ".join([name, *map(_fmt, figures)]))


if __name__ == "__main__":
    main()
