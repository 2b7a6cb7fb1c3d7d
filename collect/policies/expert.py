"""The expert: pure pursuit on the route plus a speed controller that yields to agents, crosswalks and lights.

It reads only the backend-neutral observation (the route, scene agents, crosswalks, traffic lights), so it
drives the same way on SUMO and CARLA and can be used to collect demonstrations or as a baseline. Moving
agents are extrapolated at constant velocity for two seconds; the expert stops for any whose footprint enters
its lane, never comes to rest on a crosswalk it has not entered, and creeps towards one with people at the kerb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from collect.backend import Observation
from collect.route import to_ego_frame
from collect.scene import MapGeometry, Scene
from collect.vehicle import VehicleParams
from data_schema.schema import AGENT_KINDS

_PREDICT_T = np.array([0.0, 0.5, 1.0, 1.5, 2.0])  # s, constant-velocity look-ahead for moving agents


@dataclass(frozen=True)
class ExpertConfig:
    """Driving style of the expert; ``vehicle`` must describe the car the backend simulates (steer scale, size)."""

    target_speed: float = 25.0 / 3.6  # m/s (SPEC: 25 km/h)
    lookahead_min: float = 2.0  # m, pure-pursuit look-ahead at standstill
    lookahead_gain: float = 0.4  # s, look-ahead grows with speed
    lookahead_max: float = 12.0
    max_lateral_accel: float = 2.0  # m/s^2, sets the speed through curves
    comfort_decel: float = 3.0  # m/s^2, used to plan stops
    speed_gain: float = 1.0  # (m/s^2) per (m/s) of speed error
    corridor_margin: float = 0.2  # m of clearance kept between our path's edges and any agent's footprint
    stop_gap: float = 3.0  # m bumper-to-bumper distance kept to an obstacle
    light_margin: float = 1.0  # m between the front bumper and a stop line (or crosswalk) when stopped
    horizon: float = 40.0  # m of route ahead checked for agents, lights and crosswalks
    kerb_distance: float = 2.5  # m: a pedestrian this close to a crosswalk on our path may step onto it
    creep_speed: float = 2.0  # m/s: speed towards such a crosswalk, slow enough to stop within a metre
    obey_lights: bool = True
    ignore: tuple[str, ...] = ()  # agent kinds it does not yield to (drives as if they were not there)
    vehicle: VehicleParams = field(default_factory=VehicleParams)

    def __post_init__(self) -> None:
        for name in ("target_speed", "lookahead_min", "lookahead_max", "max_lateral_accel", "comfort_decel", "speed_gain", "horizon", "creep_speed"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ExpertConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("lookahead_gain", "corridor_margin", "stop_gap", "light_margin", "kerb_distance"):
            if getattr(self, name) < 0:
                raise ValueError(f"ExpertConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lookahead_max < self.lookahead_min:
            raise ValueError(f"ExpertConfig.lookahead_max ({self.lookahead_max}) < lookahead_min ({self.lookahead_min})")
        object.__setattr__(self, "ignore", tuple(self.ignore))
        unknown = sorted(set(self.ignore) - set(AGENT_KINDS))
        if unknown:
            raise ValueError(f"ExpertConfig.ignore: unknown agent kind(s) {unknown}; kinds are {', '.join(AGENT_KINDS)}")


def _arc(path: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])


def _project(
    points: np.ndarray, path: np.ndarray, s: np.ndarray, reach: float = math.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance of each point ``(K, 2)`` to the polyline, the arc length of its closest point and that segment.

    Points farther than ``reach`` outside the polyline's bounding box are not projected (distance inf).
    """
    dist_out = np.full(len(points), np.inf)
    along_out = np.zeros(len(points))
    seg_out = np.zeros(len(points), dtype=np.int64)
    lo, hi = path.min(axis=0) - reach, path.max(axis=0) + reach
    near = np.all((points >= lo) & (points <= hi), axis=1)
    if not near.any():
        return dist_out, along_out, seg_out
    pts = points[near]
    a, d = path[:-1], np.diff(path, axis=0)
    len2 = np.maximum(np.einsum("ij,ij->i", d, d), 1e-12)
    rel = pts[:, None, :] - a[None]
    t = np.clip(np.einsum("kij,ij->ki", rel, d) / len2, 0.0, 1.0)
    off = rel - t[..., None] * d[None]
    dist2 = np.einsum("kij,kij->ki", off, off)
    i = np.argmin(dist2, axis=1)
    k = np.arange(len(pts))
    dist_out[near] = np.sqrt(dist2[k, i])
    along_out[near] = s[i] + t[k, i] * np.sqrt(len2[i])
    seg_out[near] = i
    return dist_out, along_out, seg_out


def _curvature(path: np.ndarray, s: np.ndarray, window: int = 6) -> np.ndarray:
    """Unsigned curvature (1/m) at each segment of an evenly resampled path, from the heading change over
    ``window`` segments centred on it (3 m at 0.5 m spacing: smooths the kinks where lane polylines meet)."""
    seg = np.diff(path, axis=0)
    if len(seg) <= window:
        return np.zeros(len(seg))
    heading = np.unwrap(np.arctan2(seg[:, 1], seg[:, 0]))
    k = np.abs(heading[window:] - heading[:-window]) / (s[window] - s[0])
    return np.concatenate([np.full(window // 2, k[0]), k, np.full(len(seg) - len(k) - window // 2, k[-1])])


class ExpertPolicy:
    """Route following with pure pursuit; slows for curves, stops for agents in its path and for red lights.

    ``name`` is what the rows' ``policy`` column records: a variant with another config has its own name.
    """

    def __init__(self, config: ExpertConfig | None = None, name: str = "expert") -> None:
        self.config = config or ExpertConfig()
        self.name = name
        self._crosswalks: tuple[MapGeometry, _CrosswalkIndex] | None = None  # built once per map

    def reset(self, seed: int) -> None:
        """The expert is deterministic; the seed is accepted for the Policy protocol."""

    def act(self, obs: Observation, bev: np.ndarray | None = None) -> np.ndarray:
        cfg = self.config
        path, s = self._path(obs)
        curvature = _curvature(path, s)
        steer = self._steer(obs.speed, path)
        stop, v_cap = self._limits(obs, path, s, curvature)
        to_stop = stop - cfg.vehicle.length / 2
        v_ref = min(cfg.target_speed, v_cap, self._curve_speed(s, curvature), math.sqrt(2 * cfg.comfort_decel * max(to_stop, 0.0)))
        return np.array([steer, self._accel_command(obs.speed, v_ref, to_stop)], dtype=np.float32)

    def _path(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """The route ahead in the ego frame, from the route point beside the ego, every 0.5 m up to the horizon.

        The scene's remaining route is used where the backend gives one (it is finer than the points ahead,
        whose 4 m chords cut tight corners); otherwise the point beside the ego (from the lateral offset and
        heading error) followed by the route points ahead.
        """
        scene: Scene = obs.scene
        if len(scene.route) >= 2:
            route = to_ego_frame(scene.route, scene.ego)
        else:
            he, d = obs.route.heading_error, obs.route.lateral_offset
            route = np.vstack([-d * np.array([math.sin(he), math.cos(he)]), obs.route.ahead])
        s = _arc(route)
        keep = np.nonzero(np.diff(s, prepend=-1.0) > 1e-6)[0]
        route, s = route[keep], s[keep]
        dense = np.arange(0.0, min(s[-1], self.config.horizon) + 1e-9, 0.5)
        if len(dense) < 2:
            dense = np.array([0.0, max(s[-1], 1e-3)])
        return np.stack([np.interp(dense, s, route[:, 0]), np.interp(dense, s, route[:, 1])], axis=1), dense

    # ---- lateral ------------------------------------------------------------------------------------

    def _steer(self, speed: float, path: np.ndarray) -> float:
        """Pure pursuit from the rear axle to the path point one look-ahead distance away."""
        cfg, vp = self.config, self.config.vehicle
        pts = path + (vp.wheelbase / 2, 0.0)  # rear-axle frame
        look = float(np.clip(cfg.lookahead_min + cfg.lookahead_gain * speed, cfg.lookahead_min, cfg.lookahead_max))
        dist = np.linalg.norm(pts, axis=1)
        beyond = np.nonzero((dist >= look) & (pts[:, 0] > 0.0))[0]
        if len(beyond) == 0 or beyond[0] == 0:
            target = pts[-1] if len(beyond) == 0 else pts[0]
        else:
            j = beyond[0]
            w = (look - dist[j - 1]) / max(dist[j] - dist[j - 1], 1e-9)
            target = pts[j - 1] + float(np.clip(w, 0.0, 1.0)) * (pts[j] - pts[j - 1])
        alpha = math.atan2(target[1], target[0])
        ld = max(float(np.linalg.norm(target)), 1e-3)
        delta = math.atan(2.0 * vp.wheelbase * math.sin(alpha) / ld)
        return float(np.clip(delta / vp.max_steer, -1.0, 1.0))

    def _curve_speed(self, s: np.ndarray, curvature: np.ndarray) -> float:
        """Highest speed from which every curve ahead is reached at its lateral-acceleration limit."""
        cfg = self.config
        if not len(curvature):
            return math.inf
        v_curve = np.sqrt(cfg.max_lateral_accel / np.maximum(curvature, 1e-6))
        return float(np.min(np.sqrt(v_curve**2 + 2.0 * cfg.comfort_decel * s[:-1])))

    # ---- longitudinal -------------------------------------------------------------------------------

    def _crosswalk_spans(self, scene: Scene, path: np.ndarray, s: np.ndarray) -> list[tuple[float, float, int]]:
        """(entry, exit, crosswalk index) of every crosswalk the path runs through (tested in the world frame)."""
        if self._crosswalks is None or self._crosswalks[0] is not scene.map:
            self._crosswalks = (scene.map, _CrosswalkIndex(scene.map.crosswalks))
        index = self._crosswalks[1]
        if not index.polygons:
            return []
        near = np.hypot(index.centres[:, 0] - scene.ego.x, index.centres[:, 1] - scene.ego.y) <= self.config.horizon + index.radii
        c, si = math.cos(scene.ego.yaw), math.sin(scene.ego.yaw)
        world = path @ np.array([[c, si], [-si, c]]) + (scene.ego.x, scene.ego.y)
        spans = []
        for i in np.nonzero(near)[0]:
            inside = index.contains(int(i), world)
            if inside.any():
                idx = np.nonzero(inside)[0]
                spans.append((float(s[idx[0]]), float(s[idx[-1]]), int(i)))
        return spans

    def _limits(self, obs: Observation, path: np.ndarray, s: np.ndarray, curvature: np.ndarray) -> tuple[float, float]:
        """(arc length where the front bumper must come to rest, speed cap) from agents, lights, crosswalks."""
        cfg, vp = self.config, self.config.vehicle
        scene = obs.scene
        spans = self._crosswalk_spans(scene, path, s)
        front = vp.length / 2
        stop, v_cap = math.inf, math.inf
        agents = [a for a in scene.agents if a.kind not in cfg.ignore]
        if agents:
            arr = np.array([(a.x, a.y, a.yaw, a.speed, a.length, a.width) for a in agents], dtype=np.float64)
            rel = to_ego_frame(arr[:, :2], scene.ego)
            keep = (rel[:, 0] >= -vp.length) & (np.hypot(rel[:, 0], rel[:, 1]) <= s[-1] + 10.0)
            walkers = np.array([a.kind == "pedestrian" for a in agents])[keep]
            arr, rel = arr[keep], rel[keep]
            if len(arr):
                stop = min(stop, self._agent_stop(arr, rel, scene.ego.yaw, path, s, curvature))
                stop, v_cap = self._crosswalk_limits(stop, v_cap, arr[walkers], spans)
                blockers = ~walkers & (arr[:, 3] < 3.0)
                # do not enter a crosswalk without room to clear it behind a slow vehicle
                if blockers.any():
                    dist, along, _ = _project(rel[blockers], path, s)
                    on_path = along[dist <= vp.width / 2 + cfg.corridor_margin + arr[blockers, 5] / 2]
                    for entry, exit_, _ in spans:
                        if entry > front and np.any((on_path > entry) & (on_path < exit_ + vp.length + cfg.stop_gap + 2.5)):
                            stop = min(stop, entry - 0.5)
        if cfg.obey_lights:
            stop = min(stop, self._light_stop(obs, path, s))
        # never come to rest on a crosswalk we have not yet entered: stop before it instead
        for entry, exit_, _ in spans:
            if front < entry < stop + 0.5 and stop - vp.length < exit_:
                stop = min(stop, entry - 0.5)
        return stop, v_cap

    def _agent_stop(
        self, arr: np.ndarray, rel: np.ndarray, ego_yaw: float, path: np.ndarray, s: np.ndarray, curvature: np.ndarray
    ) -> float:
        """Stop point before the nearest agent whose footprint, now or over the next seconds, enters our lane.

        The lane is as wide as the ego plus the margin, widened in curves by how far the front corner swings
        out: a car turning on radius R sweeps out to sqrt((R + w/2)^2 + f^2), f from rear axle to front bumper.
        """
        cfg, vp = self.config, self.config.vehicle
        rel_yaw = arr[:, 2] - ego_yaw
        heading = np.stack([np.cos(rel_yaw), np.sin(rel_yaw)], axis=1)
        normal = np.stack([-heading[:, 1], heading[:, 0]], axis=1)
        # centre and four corners of every agent at every prediction time: (A, T, 5, 2)
        offsets = np.array([[0, 0], [1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float64) / 2
        body = offsets[None, :, 0:1] * arr[:, None, 4:5] * heading[:, None] + offsets[None, :, 1:2] * arr[:, None, 5:6] * normal[:, None]
        centres = rel[:, None, :] + _PREDICT_T[None, :, None] * (arr[:, 3:4] * heading)[:, None, :]
        points = centres[:, :, None, :] + body[:, None, :, :]
        inner = 1.0 / np.maximum(curvature, 1e-6) + vp.width / 2
        front = vp.wheelbase / 2 + vp.length / 2
        half = vp.width / 2 + cfg.corridor_margin + (np.sqrt(inner**2 + front**2) - inner)
        dist, along, seg = _project(points.reshape(-1, 2), path, s, float(half.max()))
        shape = points.shape[:3]
        # what is already beside us cannot be avoided by braking (stopping only lets it walk into us)
        inside = (dist <= half[seg]).reshape(shape) & (along.reshape(shape) > vp.length / 2 - 0.5)
        if not inside.any():
            return math.inf
        return float(np.where(inside, along.reshape(shape), np.inf).min()) - cfg.stop_gap

    def _crosswalk_limits(self, stop: float, v_cap: float, walkers: np.ndarray, spans: list[tuple[float, float, int]]) -> tuple[float, float]:
        """Stop before a crosswalk a pedestrian is walking onto; creep towards one with pedestrians at its kerb."""
        cfg, front = self.config, self.config.vehicle.length / 2
        if not len(walkers) or not spans:
            return stop, v_cap
        index = self._crosswalks[1]
        vel = walkers[:, 3:4] * np.stack([np.cos(walkers[:, 2]), np.sin(walkers[:, 2])], axis=1)
        future = (walkers[:, None, :2] + _PREDICT_T[None, :, None] * vel[:, None, :])[walkers[:, 3] > 0.2].reshape(-1, 2)
        for entry, _, i in spans:
            if entry <= front:
                continue
            if len(future) and index.contains(i, future).any():
                stop = min(stop, entry - cfg.light_margin)
            elif np.any(index.distance(i, walkers[:, :2]) < cfg.kerb_distance):
                v_cap = min(v_cap, max(cfg.creep_speed, math.sqrt(2 * cfg.comfort_decel * max(entry - front - cfg.light_margin, 0.0))))
        return stop, v_cap

    def _light_stop(self, obs: Observation, path: np.ndarray, s: np.ndarray) -> float:
        cfg, front = self.config, self.config.vehicle.length / 2
        scene = obs.scene
        stop = math.inf
        for light in scene.traffic_lights:
            if light.state == "g":
                continue
            centre = to_ego_frame(light.stop_line, scene.ego).mean(axis=0)
            if abs(centre[1]) > cfg.horizon or not -1.0 < centre[0] < cfg.horizon:
                continue
            dist, along, _ = _project(centre[None], path, s)
            if dist[0] > 2.0 or along[0] < front:
                continue  # not on our path, or already past it
            if light.state == "y" and obs.speed**2 / (2 * cfg.comfort_decel) > along[0] - front:
                continue  # too late to stop comfortably on yellow: clear the junction
            stop = min(stop, float(along[0]) - cfg.light_margin)
        return stop

    def _accel_command(self, speed: float, v_ref: float, to_stop: float) -> float:
        """Throttle/brake in [-1, 1]: track ``v_ref``, braking at the rate that stops within ``to_stop`` m."""
        cfg, vp = self.config, self.config.vehicle
        if to_stop <= 0.2:
            return -1.0  # stop and hold
        accel = cfg.speed_gain * (v_ref - speed)
        needed = speed * speed / (2.0 * to_stop)
        if needed > 0.5 * cfg.comfort_decel:
            accel = min(accel, -needed)
        if accel >= 0:
            return float(np.clip((accel + vp.rolling + vp.drag * speed * speed) / vp.max_accel, 0.0, 1.0))
        return float(np.clip(accel / vp.max_brake, -1.0, 0.0))


class _CrosswalkIndex:
    """A map's crosswalk polygons with what point-in-polygon and distance tests need, computed once."""

    def __init__(self, polygons: tuple[np.ndarray, ...]) -> None:
        self.polygons = [np.asarray(p, dtype=np.float64) for p in polygons]
        self.centres = np.array([p.mean(axis=0) for p in self.polygons]).reshape(-1, 2)
        self.radii = np.array([np.linalg.norm(p - c, axis=1).max() for p, c in zip(self.polygons, self.centres)])
        self._edges = [(p[:, 0], p[:, 1], np.roll(p[:, 0], -1), np.roll(p[:, 1], -1)) for p in self.polygons]
        self._outlines = [np.vstack([p, p[:1]]) for p in self.polygons]

    def contains(self, i: int, points: np.ndarray) -> np.ndarray:
        """Even-odd rule: which of ``points (K, 2)`` lie inside polygon ``i``."""
        x0, y0, x1, y1 = self._edges[i]
        x, y = points[:, 0:1], points[:, 1:2]
        straddle = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        return (straddle & (x < x_cross)).sum(axis=1) % 2 == 1

    def distance(self, i: int, points: np.ndarray) -> np.ndarray:
        """Distance of each point to polygon ``i`` (0 inside)."""
        outline = self._outlines[i]
        dist, _, _ = _project(points, outline, _arc(outline))
        return np.where(self.contains(i, points), 0.0, dist)
