"""The ego's kinematic bicycle model (no simulator needed)."""

from __future__ import annotations

import math

import pytest

from collect.backend import Controls
from collect.vehicle import VehicleParams, VehicleState, step

P = VehicleParams()


def drive(controls: Controls, steps: int, state: VehicleState | None = None, dt: float = 0.1) -> VehicleState:
    state = state or VehicleState(0.0, 0.0, 0.0, 0.0)
    for _ in range(steps):
        state = step(P, state, controls, dt)
    return state


def test_full_throttle_accelerates_along_the_heading_up_to_max_speed() -> None:
    after_1s = drive(Controls(throttle=1.0), 10)
    assert after_1s.speed == pytest.approx(P.max_accel - P.rolling, abs=0.05)  # resistance is small at low speed
    assert after_1s.x > 1.0 and after_1s.y == 0.0 and after_1s.yaw == 0.0
    assert drive(Controls(throttle=1.0), 400).speed == pytest.approx(P.max_speed)


def test_braking_stops_without_reversing() -> None:
    moving = VehicleState(0.0, 0.0, 0.0, 10.0)
    stopped = drive(Controls(brake=1.0), 30, moving)
    assert stopped.speed == 0.0
    # 10 m/s at 8 m/s^2 stops in about 6.25 m, and never rolls back
    assert 5.5 < stopped.x < 7.0
    assert drive(Controls(brake=1.0), 10, stopped).x == stopped.x


def test_positive_steer_turns_left_on_the_expected_radius() -> None:
    state = VehicleState(0.0, 0.0, 0.0, 5.0)
    for _ in range(20):
        state = step(P, state, Controls(steer=0.5, throttle=0.04), 0.1)
    assert state.yaw > 0 and state.y > 0
    # yaw rate of a centre-referenced bicycle: v cos(beta) tan(delta) / L
    delta = 0.5 * P.max_steer
    beta = math.atan(0.5 * math.tan(delta))
    expected = 2.0 * state.speed * math.cos(beta) * math.tan(delta) / P.wheelbase
    assert state.yaw == pytest.approx(expected, rel=0.05)


def test_step_is_deterministic_and_clips_controls() -> None:
    s = VehicleState(1.0, 2.0, 0.3, 4.0)
    assert step(P, s, Controls(steer=0.7, throttle=0.2), 0.1) == step(P, s, Controls(steer=0.7, throttle=0.2), 0.1)
    assert step(P, s, Controls(steer=5.0), 0.1) == step(P, s, Controls(steer=1.0), 0.1)


@pytest.mark.parametrize("field,value", [("wheelbase", 0.0), ("max_steer", 2.0), ("drag", -1.0), ("wheelbase", 9.0)])
def test_params_validate(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        VehicleParams(**{field: value})


def test_step_rejects_a_non_positive_dt() -> None:
    with pytest.raises(ValueError, match="dt"):
        step(P, VehicleState(0, 0, 0), Controls(), 0.0)
