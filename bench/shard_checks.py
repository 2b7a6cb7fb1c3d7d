"""What the integrity checks of shard reads and writes cost: Parquet page checksums (written and verified)
and the finiteness check of raw rows, against the same calls with both switched off.

Run it as a module from the repository root:

    python -m bench.shard_checks [--episodes 4] [--max-steps 300] [--repeats 21]

It collects a few real SUMO episodes (BEV frames, road users) into one shard, then times writing it, reading
its non-image columns (what audits and joins read) and reading all of it (what annotate and replay read),
with the checks on and off in alternating runs so that load from other work hits both alike, and prints the
medians and their ratio. CPU time of this process is reported beside wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable

import pyarrow as pa

import data_schema.shards as shards
from collect.collector import collect_episodes
from collect.env import EnvSpec, EpisodeLimits
from data_schema import IMAGE_COLUMNS, Dataset

CHECKS = (shards.first_nonfinite, dict(shards.WRITE_OPTIONS), shards.open_parquet)


def set_checks(on: bool) -> None:
    """Switch the finiteness check, checksum writing and checksum verification on or off together."""
    first_nonfinite, options, open_parquet = CHECKS
    shards.first_nonfinite = first_nonfinite if on else (lambda table: None)
    shards.WRITE_OPTIONS.clear()
    shards.WRITE_OPTIONS.update(options if on else {k: v for k, v in options.items() if k != "write_page_checksum"})
    shards.open_parquet = open_parquet if on else (lambda f: shards.pq.ParquetFile(f))


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median CPU seconds with the checks on and off, alternating run by run."""
    runs: dict[bool, list[float]] = {True: [], False: []}
    for k in range(2 * repeats):
        on = k % 2 == 0
        set_checks(on)
        started = time.process_time()
        fn()
        runs[on].append(time.process_time() - started)
    set_checks(True)
    return statistics.median(runs[True]), statistics.median(runs[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    pa.set_cpu_count(1)
    root = tempfile.mkdtemp(prefix="bench-shard-checks-")
    env = EnvSpec(limits=EpisodeLimits(max_steps=args.max_steps))
    collect_episodes(f"{root}/source", env, "expert", args.episodes, run_id="b", episodes_per_shard=args.episodes)
    source = Dataset.open(f"{root}/source")
    table = source.read_shard(source.shards()[0])
    agents = sum(len(a) for a in table.column("agents").to_pylist())
    print(f"one shard: {table.num_rows} rows, {agents / table.num_rows:.1f} road users per row, {table.nbytes / 2**20:.1f} MiB in memory")

    target = Dataset.create(f"{root}/target")
    written = iter(range(10**6))
    target.write_episode_shard("r", table)
    columns = [c for c in table.column_names if c not in IMAGE_COLUMNS]
    cases = {
        "write": lambda: target.write_episode_shard(f"w{next(written)}", table),
        "read non-image columns": lambda: target.read_shard("r", columns),
        "read every column": lambda: target.read_shard("r"),
    }
    print(f"{'':24s} {'checked':>10s} {'unchecked':>10s} {'ratio':>7s}   (CPU ms, median of {args.repeats})")
    for name, fn in cases.items():
        on, off = timed(fn, args.repeats)
        print(f"{name:24s} {on * 1e3:10.1f} {off * 1e3:10.1f} {on / off:7.2f}")


if __name__ == "__main__":
    main()
