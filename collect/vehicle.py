"""The ego's kinematic bicycle model, shared by every backend that moves the ego itself (SUMO).

The model is deliberately simple and deterministic (pure float arithmetic, no randomness): the same state,
controls and time step always give the same next state, which keeps episodes reproducible by seed.
The reference point is the centre of the vehicle's footprint, the pose the scene and the dataset use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from collect.backend import Controls


@dataclass(frozen=True)
class VehicleParams:
    """A compact passenger car. Accelerations in m/s^2, lengths in m, angles in rad."""

    wheelbase: float = 2.7
    max_steer: float = 0.6  # front wheel angle at |steer| = 1 (about 34 degrees)
    max_accel: float = 3.0  # at full throttle, before resistance
    max_brake: float = 8.0  # deceleration at full brake
    rolling: float = 0.1  # constant resistance while moving
    drag: float = 0.002  # quadratic resistance coefficient (1/m), a = drag * v^2
    max_speed: float = 20.0
    length: float = 4.5
    width: float = 1.9

    def __post_init__(self) -> None:
        for name in ("wheelbase", "max_steer", "max_accel", "max_brake", "max_speed", "length", "width"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VehicleParams.{name} must be > 0, got {getattr(self, name)}")
        for name in ("rolling", "drag"):
            if getattr(self, name) < 0:
                raise ValueError(f"VehicleParams.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steer >= math.pi / 2:
            raise ValueError(f"VehicleParams.max_steer must be < pi/2 rad, got {self.max_steer}")
        if self.wheelbase > self.length:
            raise ValueError(f"VehicleParams.wheelbase ({self.wheelbase}) must not exceed length ({self.length})")


@dataclass(frozen=True)
class VehicleState:
    """Centre of the footprint (m), yaw counter-clockwise from +x (rad), speed (m/s, never negative)."""

    x: float
    y: float
    yaw: float
    speed: float = 0.0


def step(params: VehicleParams, state: VehicleState, controls: Controls, dt: float) -> VehicleState:
    """Advance ``dt`` seconds: steer sets the front wheel angle, throttle/brake the longitudinal force.

    The car does not reverse: braking stops it at zero speed. Position integrates the mean speed over the step
    along the heading at mid-step, which keeps curves accurate at 10 Hz.
    """
    if dt <= 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    delta = params.max_steer * min(max(controls.steer, -1.0), 1.0)
    v = state.speed
    resist = (params.rolling + params.drag * v * v) if v > 0 else 0.0
    accel = params.max_accel * controls.throttle - params.max_brake * controls.brake - resist
    v_next = min(max(v + accel * dt, 0.0), params.max_speed)
    v_mean = 0.5 * (v + v_next)
    # slip angle of the centre relative to the heading, centre halfway along the wheelbase
    beta = math.atan(0.5 * math.tan(delta))
    yaw_rate = v_mean * math.cos(beta) * math.tan(delta) / params.wheelbase
    yaw_mid = state.yaw + 0.5 * yaw_rate * dt
    x = state.x + v_mean * math.cos(yaw_mid + beta) * dt
    y = state.y + v_mean * math.sin(yaw_mid + beta) * dt
    yaw = math.atan2(math.sin(state.yaw + yaw_rate * dt), math.cos(state.yaw + yaw_rate * dt))
    return VehicleState(x=x, y=y, yaw=yaw, speed=v_next)
