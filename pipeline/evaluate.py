"""Evaluation of a driving policy on fixed seeds and routes, with the metrics of VLM-RL.

Episode ``i`` of an evaluation runs with seed ``S + i`` on the SUMO town, and over ``k`` scenarios plays the
``i mod k``-th, which fixes its route, traffic and hazard, so two policies evaluated with the same ``--seed``,
``--episodes`` and ``--scenario`` drive the same routes and meet the same hazards; metrics are given over all
episodes and per scenario. Episodes are written to a dataset like any collection and the metrics are computed
from those rows, so every figure can be audited with the notebook tools. A trained policy is evaluated as deployed: its TorchScript
export, deterministic (tanh of the SAC mean).

Metric definitions (an episode ends on collision, leaving the road, being stuck, reaching the goal, or the
step limit):

* **Collision rate (CR)**: the fraction of episodes in which the ego collided (with a vehicle, road user or
  static obstacle).
* **Route completion (RC)**: the mean over episodes of the fraction of the route completed at the episode's
  end (``route_completion`` of its last row, 0..1).
* **Average speed (AS, km/h)**: the mean ego speed over all steps of all episodes, every step weighing the same.
* **Total distance (TD, m)**: the distance driven summed over all episodes (path length between consecutive
  positions).
* **Collision speed (CS, km/h)**: the mean ego speed at the moment of collision, over the episodes that
  collided; empty when none did.
* **Success rate (SR)**: the fraction of episodes that end within 5 m of the route's goal
  (``distance_to_goal`` of the last row <= 5 m, having completed at least 90 % of the route, so that a loop
  route passing its goal near its start does not count) without a collision.
* **Collisions per km (CPK)**: the number of collisions (at most one per episode, since a collision ends it)
  divided by the total distance in km; empty when no distance was driven.
* **Collision frequency (TCF)**: collisions per 1000 steps driven (DriveVLM-RL's time-normalised rate, which
  a policy that stops early cannot improve by driving less far).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from collect import FREE, EnvSpec, EpisodeLimits, collect_episodes
from data_schema import Dataset, episode_id

__all__ = ["EvalMetrics", "compute_metrics", "episode_table", "evaluate_policy", "format_table"]

SUCCESS_RADIUS_M = 5.0
#: ``distance_to_goal`` is a straight line, and a loop route passes its own goal near its start; an episode
#: must also have driven most of its route to count as reaching the goal.
SUCCESS_MIN_COMPLETION = 0.9
MS_TO_KMH = 3.6

#: Raw columns the metrics read.
METRIC_COLUMNS = ("episode_id", "step", "x", "y", "speed", "collision", "route_completion", "distance_to_goal", "is_last")


@dataclass(frozen=True)
class EvalMetrics:
    episodes: int
    steps: int
    collision_rate: float
    route_completion: float
    avg_speed_kmh: float
    total_distance_m: float
    collision_speed_kmh: float | None
    success_rate: float
    collisions_per_km: float | None
    collisions_per_1000_steps: float
    by_scenario: dict[str, "EvalMetrics"] = field(default_factory=dict)  # the same figures per scenario

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def episode_table(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per episode: collided, collision speed, route completion, distance, success, step count."""
    missing = [c for c in METRIC_COLUMNS if c not in steps.columns]
    if missing:
        raise ValueError(f"evaluation needs raw column(s) {missing}")
    rows = []
    for episode_id, ep in steps.sort_values(["episode_id", "step"]).groupby("episode_id", sort=True):
        if not ep["is_last"].iloc[-1]:
            raise ValueError(f"episode {episode_id}: does not end with an is_last row; evaluate whole episodes only")
        hits = np.flatnonzero(ep["collision"].to_numpy())
        last = ep.iloc[-1]
        collided = len(hits) > 0
        rows.append({
            "episode_id": episode_id,
            "steps": len(ep) - 1,
            "collided": collided,
            "collision_speed_kmh": float(ep["speed"].iloc[hits[0]]) * MS_TO_KMH if collided else math.nan,
            "route_completion": float(last["route_completion"]),
            "distance_m": float(np.hypot(np.diff(ep["x"].to_numpy()), np.diff(ep["y"].to_numpy())).sum()),
            "success": bool(last["distance_to_goal"] <= SUCCESS_RADIUS_M and last["route_completion"] >= SUCCESS_MIN_COMPLETION and not collided),
        })  # fmt: skip
    return pd.DataFrame(rows)


def compute_metrics(steps: pd.DataFrame) -> EvalMetrics:
    """The metrics of the module docstring from raw step rows of whole episodes; per scenario as well where
    the rows have a ``scenario`` column."""
    overall = _metrics(steps)
    if "scenario" not in steps.columns:
        return overall
    return replace(overall, by_scenario={name: _metrics(rows) for name, rows in steps.groupby("scenario", sort=True)})


def _metrics(steps: pd.DataFrame) -> EvalMetrics:
    episodes = episode_table(steps)
    if episodes.empty:
        raise ValueError("no episodes to evaluate")
    total_m = float(episodes["distance_m"].sum())
    collisions = int(episodes["collided"].sum())
    return EvalMetrics(
        episodes=len(episodes),
        steps=int(episodes["steps"].sum()),
        collision_rate=collisions / len(episodes),
        route_completion=float(episodes["route_completion"].mean()),
        avg_speed_kmh=float(steps["speed"].mean()) * MS_TO_KMH,
        total_distance_m=total_m,
        collision_speed_kmh=float(episodes["collision_speed_kmh"].mean()) if collisions else None,
        success_rate=float(episodes["success"].mean()),
        collisions_per_km=collisions / (total_m / 1000.0) if total_m > 0 else None,
        collisions_per_1000_steps=1000.0 * collisions / max(int(episodes["steps"].sum()), 1),
    )


def evaluate_policy(
    policy: str,
    dataset_url: str,
    episodes: int,
    seed: int,
    max_steps: int,
    on_episode: Any = None,
    scenarios: Sequence[str] = (FREE,),
) -> EvalMetrics:
    """Drive ``episodes`` episodes (seeds ``seed .. seed + episodes - 1``, episode ``i`` playing the ``i mod k``-th
    of the ``k`` scenarios) with ``policy`` and measure them, over all and per scenario.

    ``policy`` is a built-in policy name or a TorchScript file; episodes already in ``dataset_url`` from the
    same policy, seeds and scenarios are reused, not driven again.
    """
    env = EnvSpec(limits=EpisodeLimits(max_steps=max_steps), scenarios=tuple(scenarios))
    summary = collect_episodes(dataset_url, env, policy, episodes, seed, on_episode=on_episode)
    dataset = Dataset.open(dataset_url)
    table = dataset.read_steps([*METRIC_COLUMNS, "scenario"], shards=dataset.run_shards(summary.run_id)).to_pandas()
    wanted = {episode_id(summary.run_id, i) for i in range(episodes)}
    return compute_metrics(table[table["episode_id"].isin(wanted)])


ROWS = (
    ("collision rate", "collision_rate", "{:.1%}"),
    ("route completion", "route_completion", "{:.1%}"),
    ("success rate", "success_rate", "{:.1%}"),
    ("average speed (km/h)", "avg_speed_kmh", "{:.1f}"),
    ("total distance (m)", "total_distance_m", "{:.0f}"),
    ("collision speed (km/h)", "collision_speed_kmh", "{:.1f}"),
    ("collisions per km", "collisions_per_km", "{:.2f}"),
    ("collisions per 1000 steps", "collisions_per_1000_steps", "{:.2f}"),
    ("episodes", "episodes", "{}"),
    ("steps", "steps", "{}"),
)


def format_table(results: dict[str, EvalMetrics]) -> str:
    """A text table with one column per evaluated policy."""
    names = list(results)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'metric':<24}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for label, key, fmt in ROWS:
        cells = []
        for name in names:
            value = getattr(results[name], key)
            cells.append(f"{'-' if value is None else fmt.format(value):>{width + 2}}")
        lines.append(f"{label:<24}" + "".join(cells))
    return "\n".join(lines)
