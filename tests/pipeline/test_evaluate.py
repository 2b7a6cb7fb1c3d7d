"""Evaluation metrics on hand-made episodes, where every figure can be worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from data_schema import Dataset

from pipeline.evaluate import compute_metrics, episode_table, format_table


def _episode(eid: str, xs: list[float], speeds: list[float], completion: float, goal_distance: float, collision_at: int | None = None) -> pd.DataFrame:
    n = len(xs)
    return pd.DataFrame({
        "episode_id": eid, "step": range(n), "x": xs, "y": [0.0] * n, "speed": speeds,
        "collision": [i == collision_at for i in range(n)], "route_completion": [completion * i / (n - 1) for i in range(n)],
        "distance_to_goal": [goal_distance + (n - 1 - i) for i in range(n)], "is_last": [i == n - 1 for i in range(n)],
    })  # fmt: skip


@pytest.fixture
def steps() -> pd.DataFrame:
    # a: reaches the goal (2 m left), 30 m driven at 5 m/s; b: crashes at 10 m/s after 20 m;
    # c: truncated 9 m from the goal after 10 m; rows are shuffled to show that order does not matter
    a = _episode("a", [0, 10, 20, 30], [5, 5, 5, 5], 1.0, 2.0)
    b = _episode("b", [0, 10, 20], [0, 5, 10], 0.4, 30.0, collision_at=2)
    c = _episode("c", [0, 5, 10], [5, 5, 5], 0.6, 9.0)
    return pd.concat([a, b, c]).sample(frac=1.0, random_state=0)


def test_metrics_by_hand(steps):
    m = compute_metrics(steps)
    assert (m.episodes, m.steps) == (3, 3 + 2 + 2)
    assert m.collision_rate == pytest.approx(1 / 3)
    assert m.route_completion == pytest.approx((1.0 + 0.4 + 0.6) / 3)
    assert m.avg_speed_kmh == pytest.approx((20 + 15 + 15) / 10 * 3.6)  # mean over all 10 rows
    assert m.total_distance_m == pytest.approx(60.0)
    assert m.collision_speed_kmh == pytest.approx(36.0)
    assert m.success_rate == pytest.approx(1 / 3)  # only a ends within 5 m of its goal without a collision
    assert m.collisions_per_km == pytest.approx(1 / 0.06)
    assert m.collisions_per_1000_steps == pytest.approx(1000 / 7)  # one collision in 3 + 2 + 2 steps


def test_a_crash_at_the_goal_is_no_success_and_safe_runs_have_no_collision_speed():
    crash = _episode("x", [0, 4], [3, 3], 1.0, 1.0, collision_at=1)
    safe = _episode("y", [0, 0], [0, 0], 0.0, 50.0)
    loop_start = _episode("z", [0, 1], [1, 1], 0.01, 2.0)  # a loop route ends near where it starts
    table = episode_table(pd.concat([crash, safe, loop_start]))
    assert table.set_index("episode_id")["success"].to_dict() == {"x": False, "y": False, "z": False}
    m = compute_metrics(safe)
    assert m.collision_speed_kmh is None and m.collisions_per_km is None and m.collision_rate == 0.0
    assert m.total_distance_m == 0.0 and m.collisions_per_1000_steps == 0.0


def test_partial_episodes_are_refused(steps):
    with pytest.raises(ValueError, match="episode a: does not end with an is_last row"):
        compute_metrics(steps[~((steps["episode_id"] == "a") & steps["is_last"])])
    with pytest.raises(ValueError, match="needs raw column"):
        compute_metrics(steps.drop(columns=["distance_to_goal"]))


def test_table_lists_every_policy(steps):
    text = format_table({"random": compute_metrics(steps), "expert": compute_metrics(steps[steps["episode_id"] == "a"])})
    lines = text.splitlines()
    assert "random" in lines[0] and "expert" in lines[0]
    collision = next(line for line in lines if line.startswith("collision rate"))
    assert collision.split()[-2:] == ["33.3%", "0.0%"]
    assert math.isclose(float(next(line for line in lines if line.startswith("total distance")).split()[-1]), 30.0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_evaluate_cli_on_fixed_sumo_routes(small_dataset, tmp_path, monkeypatch):
    """random, expert and a trained checkpoint on the same seeds: one table, JSON beside the run."""
    import json

    from click.testing import CliRunner
    from train_data import TINY

    from pipeline.cli import main

    tiny = [a for k, v in TINY.items() for a in ("--set", f"{k}={list(v) if isinstance(v, tuple) else v}")]
    run = tmp_path / "run"
    args = ["train", small_dataset.path, "--label-set", "test", "--out", str(run), "--offline", "--steps", "2", *tiny]
    trained = CliRunner().invoke(main, args)
    assert trained.exit_code == 0, trained.output
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "random", "expert", str(run), "--episodes", "2", "--seed", "7", "--max-steps", "40", "--dataset", str(tmp_path / "ev")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads((run / "evaluation-seed7-n2.json").read_text())
    assert list(document["results"]) == ["random", "expert", str(run)]
    for metrics in document["results"].values():
        assert metrics["episodes"] == 2 and 0 <= metrics["route_completion"] <= 1
        assert 0 < metrics["steps"] <= 80
    assert "route completion" in result.output
    # the episodes are rows of a dataset: the same seeds give the same routes to every policy
    ds = Dataset.open(str(tmp_path / "ev"))
    first = ds.read_steps(["episode_id", "step", "seed", "policy", "distance_to_goal", "route_progress"]).to_pandas()
    first = first[first["step"] == 0]
    assert sorted(first["seed"].unique().tolist()) == [7, 8]
    starts = first.groupby("seed")["distance_to_goal"].nunique()
    assert (starts == 1).all()  # every policy started each seed's route at the same distance from its goal


def test_evaluate_cli_plays_scenarios_in_turn_and_reports_each(tmp_path):
    """Two policies on the same scenario episodes: figures over all and per scenario, in the table and the JSON."""
    import json

    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "eval.json"
    args = [
        "evaluate", "expert-reckless", "expert", "--episodes", "4", "--seed", "0", "--max-steps", "100",
        "--scenario", "ped_crossing", "--scenario", "free", "--dataset", str(tmp_path / "ev"), "--json", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "scenario ped_crossing" in result.output and "scenario free" in result.output
    document = json.loads(out.read_text())
    assert document["scenarios"] == ["ped_crossing", "free"]
    reckless, expert = (document["results"][p] for p in ("expert-reckless", "expert"))
    assert reckless["episodes"] == 4 and set(reckless["by_scenario"]) == {"ped_crossing", "free"}
    assert reckless["by_scenario"]["ped_crossing"]["episodes"] == 2
    assert reckless["by_scenario"]["ped_crossing"]["collision_rate"] == 1.0  # it does not yield to the pedestrian
    assert expert["by_scenario"]["ped_crossing"]["collision_rate"] == 0.0
    episodes = Dataset.open(str(tmp_path / "ev")).episodes()
    assert sorted(zip(episodes["seed"], episodes["scenario"])) == sorted(
        [(0, "ped_crossing"), (1, "free"), (2, "ped_crossing"), (3, "free")] * 2
    )
