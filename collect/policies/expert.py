"""The expert: pure pursuit on the route ahead plus a speed controller that yields to agents and red lights.

It reads only the backend-neutral observation (route points ahead, scene agents, traffic lights), so it drives
the same way on SUMO and CARLA and can be used to collect demonstrations or as a baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from collect.backend import Observation
from collect.route import to_ego_frame
from collect.scene import Scene
from collect.vehicle import VehicleParams

_PREDICT_T = np.array([0.0, 0.5, 1.0, 1.5, 2.0])  # s, constant-velocity look-ahead for moving agents


@dataclass(frozen=True)
class ExpertConfig:
    target_speed: float = 25.0 / 3.6  # m/s (SPEC: 25 km/h)
    lookahead_min: float = 4.0  # m, pure-pursuit look-ahead at standstill
    lookahead_gain: float = 0.6  # s, look-ahead grows with speed
    lookahead_max: float = 12.0
    max_lateral_accel: float = 2.0  # m/s^2, sets the speed through curves
    comfort_decel: float = 3.0  # m/s^2, used to plan stops
    speed_gain: float = 1.0  # (m/s^2) per (m/s) of speed error
    corridor_margin: float = 0.5  # m added to half widths when testing whether an agent is in the path
    stop_gap: float = 3.0  # m bumper-to-bumper distance kept to an obstacle
    light_margin: float = 1.0  # m between the front bumper and a stop line when stopped
    obey_lights: bool = True
    vehicle: VehicleParams = field(default_factory=VehicleParams)

    def __post_init__(self) -> None:
        for name in ("target_speed", "lookahead_min", "lookahead_max", "max_lateral_accel", "comfort_decel", "speed_gain"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ExpertConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("lookahead_gain", "corridor_margin", "stop_gap", "light_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"ExpertConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lookahead_max < self.lookahead_min:
            raise ValueError(f"ExpertConfig.lookahead_max ({self.lookahead_max}) < lookahead_min ({self.lookahead_min})")


def _arc(path: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])


def _project(points: np.ndarray, path: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each point ``(K, 2)`` to the polyline and the arc length of its closest point."""
    a, d = path[:-1], np.diff(path, axis=0)
    len2 = np.maximum(np.einsum("ij,ij->i", d, d), 1e-12)
    rel = points[:, None, :] - a[None]
    t = np.clip(np.einsum("kij,ij->ki", rel, d) / len2, 0.0, 1.0)
    off = rel - t[..., None] * d[None]
    dist = np.linalg.norm(off, axis=2)
    i = np.argmin(dist, axis=1)
    k = np.arange(len(points))
    return dist[k, i], s[i] + t[k, i] * np.sqrt(len2[i])


class ExpertPolicy:
    """Route following with pure pursuit; slows for curves, stops for agents in its path and for red lights."""

    name = "expert"

    def __init__(self, config: ExpertConfig | None = None) -> None:
        self.config = config or ExpertConfig()

    def reset(self, seed: int) -> None:
        """The expert is deterministic; the seed is accepted for the Policy protocol."""

    def act(self, obs: Observation, bev: np.ndarray | None = None) -> np.ndarray:
        steer, curvature_ahead = self._steer(obs)
        v_ref = min(self.config.target_speed, self._curve_speed(curvature_ahead), self._yield_speed(obs))
        return np.array([steer, self._accel_command(obs.speed, v_ref)], dtype=np.float32)

    # ---- lateral ------------------------------------------------------------------------------------

    def _steer(self, obs: Observation) -> tuple[float, float]:
        cfg, vp = self.config, self.config.vehicle
        pts = np.asarray(obs.route.ahead, dtype=np.float64) + (vp.wheelbase / 2, 0.0)  # rear-axle frame
        look = float(np.clip(cfg.lookahead_min + cfg.lookahead_gain * obs.speed, cfg.lookahead_min, cfg.lookahead_max))
        dist = np.linalg.norm(pts, axis=1)
        beyond = np.nonzero(dist >= look)[0]
        if len(beyond) == 0:
            target = pts[-1]
        elif beyond[0] == 0:
            target = pts[0] * look / dist[0]
        else:
            j = beyond[0]
            w = (look - dist[j - 1]) / max(dist[j] - dist[j - 1], 1e-9)
            target = pts[j - 1] + w * (pts[j] - pts[j - 1])
        alpha = math.atan2(target[1], target[0])
        ld = max(float(np.linalg.norm(target)), 1e-3)
        delta = math.atan(2.0 * vp.wheelbase * math.sin(alpha) / ld)
        # curvature of the route ahead from consecutive headings (points are evenly spaced)
        # (points past the route's end repeat the goal: their zero-length segments carry no heading)
        seg = np.diff(np.vstack([[0.0, 0.0], obs.route.ahead]), axis=0)
        length = np.linalg.norm(seg, axis=1)
        seg, length = seg[length > 0.5], length[length > 0.5]
        heading = np.unwrap(np.arctan2(seg[:, 1], seg[:, 0]))
        curvature = float(np.max(np.abs(np.diff(heading)) / length[1:])) if len(seg) > 1 else 0.0
        return float(np.clip(delta / vp.max_steer, -1.0, 1.0)), curvature

    def _curve_speed(self, curvature: float) -> float:
        return math.sqrt(self.config.max_lateral_accel / max(curvature, 1e-6))

    # ---- longitudinal -------------------------------------------------------------------------------

    def _path(self, obs: Observation) -> np.ndarray:
        """The route ahead in the ego frame, from the ego's front, long enough to plan a stop."""
        scene: Scene = obs.scene
        if len(scene.route) >= 2:
            path = to_ego_frame(scene.route, scene.ego)
        else:
            path = np.asarray(obs.route.ahead, dtype=np.float64)
        return np.vstack([[0.0, 0.0], path[path[:, 0] > -1.0] if (path[:, 0] > -1.0).any() else path])

    def _stop_speed(self, distance: float) -> float:
        return math.sqrt(2.0 * self.config.comfort_decel * max(distance, 0.0))

    def _yield_speed(self, obs: Observation) -> float:
        cfg, vp = self.config, self.config.vehicle
        scene = obs.scene
        path = self._path(obs)
        s = _arc(path)
        v_max = math.inf
        for agent in scene.agents:
            rel = to_ego_frame(np.array([[agent.x, agent.y]]), scene.ego)[0]
            if rel[0] < -vp.length or np.hypot(*rel) > s[-1] + 10.0:
                continue
            rel_yaw = agent.yaw - scene.ego.yaw
            vel = agent.speed * np.array([math.cos(rel_yaw), math.sin(rel_yaw)])
            future = rel[None] + _PREDICT_T[:, None] * vel[None]
            dist, along = _project(future, path, s)
            half = max(agent.width, agent.length if agent.kind == "pedestrian" else agent.width) / 2
            inside = (dist <= vp.width / 2 + half + cfg.corridor_margin) & (along > 0.0)
            if not inside.any():
                continue
            gap = float(along[inside].min()) - vp.length / 2 - agent.length / 2 - cfg.stop_gap
            v_max = min(v_max, self._stop_speed(gap))
        if cfg.obey_lights:
            for light in scene.traffic_lights:
                if light.state == "g":
                    continue
                line = to_ego_frame(light.stop_line, scene.ego)
                centre = line.mean(axis=0)
                dist, along = _project(centre[None], path, s)
                if dist[0] > 2.0:
                    continue
                to_line = float(along[0]) - vp.length / 2
                if to_line < 0.0:
                    continue  # already past it
                if light.state == "y" and obs.speed**2 / (2 * cfg.comfort_decel) > to_line:
                    continue  # too late to stop comfortably on yellow: clear the junction
                v_max = min(v_max, self._stop_speed(to_line - cfg.light_margin))
        return v_max

    def _accel_command(self, speed: float, v_ref: float) -> float:
        vp = self.config.vehicle
        if v_ref < 0.3:
            return -1.0  # stop and hold
        accel = self.config.speed_gain * (v_ref - speed)
        if accel >= 0:
            return float(np.clip((accel + vp.rolling + vp.drag * speed * speed) / vp.max_accel, 0.0, 1.0))
        return float(np.clip(accel / vp.max_brake, -1.0, 0.0))
