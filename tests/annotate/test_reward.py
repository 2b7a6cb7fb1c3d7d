"""Reward synthesis against hand-computed values (SPEC §4), including clipping edges and penalties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_schema.reward import SYNTHESIS_COLUMNS, RewardConfig, rolling_std, synthesize

TARGET = 25 / 3.6  # m/s


def rows(r_static=None, r_dynamic=None, **overrides):
    """A one-episode table of n rows with neutral values, overridden column by column. ``r_static`` and
    ``r_dynamic`` are written as similarities that give them with unit weights (``sim_pos - sim_neg``,
    ``sim_dyn_pos - sim_dyn_desc``; a 0 dynamic term as no description)."""
    n = len(next(iter([v for v in (r_static, r_dynamic, *overrides.values()) if v is not None])))
    r_static = np.asarray(r_static if r_static is not None else [-0.015] * n, float)
    r_dynamic = np.asarray(r_dynamic if r_dynamic is not None else [0.0] * n, float)
    base = {
        "episode_id": ["e0"] * n,
        "step": list(range(n)),
        "sim_pos": 0.2 + r_static,
        "sim_neg": np.full(n, 0.2),
        "sim_dyn_pos": np.where(r_dynamic != 0, 0.3 + r_dynamic, np.nan),
        "sim_dyn_desc": np.where(r_dynamic != 0, 0.3, np.nan),
        "speed": [TARGET / 2] * n,
        "lateral_offset": [0.0] * n,
        "heading_error": [0.0] * n,
        "collision": [False] * n,
        "off_road": [False] * n,
        "stuck": [False] * n,
    }
    base.update(overrides)
    return {k: np.asarray(v) for k, v in base.items()}


def test_semantic_clips_at_both_thresholds_and_scales_linearly():
    out = synthesize(rows(r_static=[-0.05, -0.02, -0.015, 0.01, 0.02], r_dynamic=[0.0, -0.01, 0.0, -0.01, 0.0]), RewardConfig())
    np.testing.assert_allclose(out["semantic"], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out["desired_speed"], [0.0, 0.0, TARGET / 2, TARGET, TARGET], atol=1e-5)


def test_speed_factor_is_one_at_the_desired_speed_and_goes_negative_far_above_target():
    out = synthesize(rows(r_static=[-0.015, -0.015, 0.0, -0.03], speed=[TARGET / 2, 0.0, 0.0, 2.5 * TARGET]), RewardConfig())
    np.testing.assert_allclose(out["f_speed"], [1.0, 0.5, 0.0, -1.5], atol=1e-5)


def test_center_and_angle_factors_with_floors():
    out = synthesize(rows(lateral_offset=[1.5, -1.5, -4.0], heading_error=[math.pi / 4, -math.pi / 4, -2.0]), RewardConfig())
    np.testing.assert_allclose(out["f_center"], [0.5, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["f_angle"], [0.5, 0.5, 0.0], atol=1e-6)


def test_reward_is_the_product_of_the_factors():
    out = synthesize(rows(speed=[0.0], lateral_offset=[1.5], heading_error=[math.pi / 4]), RewardConfig())
    # f_speed 0.5 (desired TARGET/2, v = 0), f_center 0.5, f_angle 0.5, f_stability 1 (single row)
    np.testing.assert_allclose(out["reward"], [0.125], atol=1e-6)
    assert out["penalty"][0] == 0.0


def test_stability_uses_the_episode_history_only():
    # std([0]) = 0, std([0, .4]) = .2, std([0, .4, 0]) = .188562
    out = synthesize(rows(lateral_offset=[0.0, 0.4, 0.0]), RewardConfig())
    np.testing.assert_allclose(out["f_stability"], [1.0, 0.5, 1 - 0.188562 / 0.4], atol=1e-5)


def test_stability_window_is_the_last_30_rows():
    offsets = [0.3] + [0.0] * 39  # the outlier leaves the 30-row window at row 30
    out = synthesize(rows(lateral_offset=offsets, speed=[0.0] * 40), RewardConfig())
    # row 29: one 0.3 among 30 values: mean .01, var (.29^2 + 29 * .01^2) / 30 = .0029
    assert out["f_stability"][29] == pytest.approx(1 - math.sqrt(0.0029) / 0.4, abs=1e-5)
    assert out["f_stability"][30] == pytest.approx(1.0)


def test_rolling_std_separates_interleaved_episodes_and_any_row_order():
    episode = np.array(["b", "a", "b", "a", "a"])
    step = np.array([1, 2, 0, 0, 1])
    values = np.array([0.4, 1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(rolling_std(values, episode, step, 30), [0.2, 0.0, 0.0, 0.0, 0.0], atol=1e-9)
    # window 2 on episode a after a jump: std([1, 3]) = 1
    np.testing.assert_allclose(rolling_std(np.array([1.0, 3.0, 3.0]), np.array(["a"] * 3), np.array([0, 1, 2]), 2), [0, 1, 0])


def test_penalty_replaces_the_reward_on_collision_off_road_and_stuck():
    out = synthesize(
        rows(collision=[True, False, False, False], off_road=[False, True, False, False], stuck=[False, False, True, False]),
        RewardConfig(),
    )
    np.testing.assert_array_equal(out["reward"][:3], [-10.0, -10.0, -10.0])
    np.testing.assert_array_equal(out["penalty"], [-10.0, -10.0, -10.0, 0.0])
    assert out["reward"][3] == pytest.approx(1.0)


def test_no_penalty_ablation_zeroes_the_reward_of_penalised_rows():
    out = synthesize(rows(collision=[True, False]), RewardConfig(penalty=0.0))
    np.testing.assert_array_equal(out["reward"], [0.0, 1.0])
    np.testing.assert_array_equal(out["penalty"], [0.0, 0.0])


def test_penalised_events_are_configurable():
    out = synthesize(rows(off_road=[True], collision=[False]), RewardConfig(penalize=("collision",)))
    assert out["reward"][0] == pytest.approx(1.0)


def test_other_parameters_recompute_from_the_same_stored_components():
    data = rows(r_static=[-0.015, -0.015], speed=[TARGET / 2, TARGET / 2], collision=[False, True])
    faster = RewardConfig(target_speed_kmh=50.0, penalty=0.0)
    for columns in (data, pd.DataFrame(data), pa.table(data)):
        out = synthesize(columns, faster)
        # desired = 0.5 * 50 km/h = TARGET, v = TARGET/2: f_speed = 1 - (TARGET/2) / (2 TARGET) = 0.75
        np.testing.assert_allclose(out["f_speed"], [0.75, 0.75], atol=1e-5)
        np.testing.assert_allclose(out["reward"], [0.75, 0.0], atol=1e-5)
        assert set(out) == set(SYNTHESIS_COLUMNS) and all(v.dtype == np.float32 for v in out.values())


def test_pathway_weights_and_the_hand_built_reward_recompute_from_similarities():
    data = rows(r_static=[-0.02, -0.02, -0.02], r_dynamic=[0.0, -0.01, 0.01], speed=[0.0] * 3)
    out = synthesize(data, RewardConfig())
    np.testing.assert_allclose(out["r_static"], [-0.02] * 3, atol=1e-6)
    np.testing.assert_allclose(out["r_dynamic"], [0.0, -0.01, 0.01], atol=1e-6)  # 0 where nothing was described
    np.testing.assert_allclose(out["semantic"], [1 / 3, 0.0, 2 / 3], atol=1e-5)
    heavier = synthesize(data, RewardConfig(alpha_dynamic=2.0, beta_dynamic=2.0))
    np.testing.assert_allclose(heavier["r_dynamic"], [0.0, -0.02, 0.02], atol=1e-6)
    static_only = synthesize(data, RewardConfig(pathways=("static",)))
    np.testing.assert_allclose(static_only["semantic"], [1 / 3] * 3, atol=1e-5)
    hand_built = synthesize(data, RewardConfig(pathways=()))
    np.testing.assert_allclose(hand_built["desired_speed"], [TARGET] * 3, atol=1e-5)  # semantics play no part
    # the dynamic similarities come back from Parquet as nulls where nothing was described
    table = pa.table({k: pa.array(v, from_pandas=True) for k, v in data.items()})
    assert table.column("sim_dyn_pos").null_count == 1
    np.testing.assert_allclose(synthesize(table, RewardConfig())["reward"], out["reward"], atol=1e-6)


def test_vlm_rl_penalises_speeding_and_leaving_the_lane_centre_and_measures_unsigned_spread():
    data = rows(speed=[30 / 3.6, 36 / 3.6, 5.0, 5.0], lateral_offset=[0.0, 0.0, 3.2, -0.5])
    ours = synthesize(data, RewardConfig())
    vlm_rl = RewardConfig(penalize=("collision", "off_road", "stuck", "speeding", "off_center"), stability_signed=False)
    theirs = synthesize(data, vlm_rl)
    assert ours["penalty"].tolist() == [0.0] * 4
    assert theirs["penalty"].tolist() == [0.0, -10.0, -10.0, 0.0]
    weaving = rows(lateral_offset=[0.3, -0.3])
    # signed: std([.3, -.3]) = .3; unsigned: std([.3, .3]) = 0
    assert synthesize(weaving, RewardConfig())["f_stability"][1] == pytest.approx(1 - 0.3 / 0.4, abs=1e-5)
    assert synthesize(weaving, vlm_rl)["f_stability"][1] == pytest.approx(1.0)


def test_missing_columns_are_named():
    data = rows(speed=[1.0])
    del data["heading_error"]
    with pytest.raises(KeyError, match="heading_error"):
        synthesize(data, RewardConfig())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"theta_min": 0.0, "theta_max": 0.0}, "theta_min"),
        ({"target_speed_kmh": 0.0}, "target_speed_kmh"),
        ({"penalty": 5.0}, "penalty"),
        ({"stability_window": 0}, "stability_window"),
        ({"penalize": ("crash",)}, "crash"),
        ({"pathways": ("static", "static")}, "pathways"),
        ({"pathways": ("clip",)}, "pathways"),
        ({"alpha_dynamic": -1.0}, "alpha_dynamic"),
        ({"max_speed_kmh": 0.0}, "max_speed_kmh"),
    ],
)
def test_invalid_parameters_are_rejected_with_the_field_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**kwargs)
