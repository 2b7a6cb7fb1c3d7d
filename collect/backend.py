"""The interface every simulator backend implements, and what it returns each step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from collect.route import RouteState
from collect.scene import Scene


@dataclass(frozen=True)
class Controls:
    """Controls the ego vehicle actually applied (after clipping), recorded in ``steer/throttle/brake``."""

    steer: float = 0.0
    throttle: float = 0.0
    brake: float = 0.0

    @classmethod
    def from_action(cls, action: np.ndarray) -> "Controls":
        """Action ``[steer, throttle (>0) / brake (<0)]``, both in [-1, 1], as controls.

        Anything else is refused, not clipped: a policy that emits NaN or overshoots has a bug, and clipping
        would hide it in plausible rows (policies clip themselves where overshooting is legitimate).
        """
        try:
            values = np.asarray(action, dtype=np.float64).reshape(-1)
            valid = values.shape == (2,) and bool(np.all(np.abs(values) <= 1.0))  # NaN compares false
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"action must be 2 finite numbers [steer, throttle/brake] in [-1, 1], got {action!r}")
        steer, accel = float(values[0]), float(values[1])
        return cls(steer=steer, throttle=max(accel, 0.0), brake=max(-accel, 0.0))


@dataclass(frozen=True)
class Events:
    """What happened on arriving at an observation."""

    collision: bool = False
    collision_with: str | None = None  # agent kind, or "static"
    off_road: bool = False
    red_light: bool = False  # crossed a stop line on red


@dataclass(frozen=True)
class Observation:
    """One simulator frame: sim time, ego speed and controls, route metrics, scene, camera, events."""

    t: float
    speed: float
    controls: Controls
    route: RouteState
    scene: Scene
    events: Events
    camera: np.ndarray | None = None  # HxWx3 uint8 RGB front camera; None where the backend has none


class Backend(Protocol):
    """A simulator session. ``reset`` starts an episode on a route sampled from ``seed``.

    A backend that stages scenarios (``collect.scenarios``; SUMO) takes the scenario's name as a second
    argument; ``DrivingEnv`` passes it only for a staged scenario, so one that stages none needs only ``seed``.
    """

    name: str
    map_name: str
    dt: float

    def reset(self, seed: int, scenario: str = "free") -> Observation: ...

    def step(self, action: np.ndarray) -> Observation: ...

    def close(self) -> None: ...
