"""The bird's-eye-view rasteriser: one picture style for every backend, drawn from ``collect.scene.Scene`` only.

Frames are ego-centred and heading-up (the ego's heading points to the top of the image). The static map is
rasterised once per ``MapGeometry`` into a world raster; each frame is then one affine warp of that raster
around the ego plus the few dynamic objects (route, stop lines, agents, ego). That keeps a 128 px frame well
under a millisecond, so the BEV never limits the collect loop. Output is deterministic: the same scene and
config always give the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from collect.scene import Lane, MapGeometry, Scene, offset_polyline
from data_schema.schema import AGENT_KINDS

RGB = tuple[int, int, int]

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate drawing
_SCALE = 1 << _SHIFT
_LIGHT_STATES = {"r": "light_red", "y": "light_yellow", "g": "light_green"}
# VRUs last, so a pedestrian next to a parked car is never hidden under it
_DRAW_ORDER = {"static": 0, "vehicle": 1, "motorcycle": 2, "cyclist": 3, "pedestrian": 4}


@dataclass(frozen=True)
class BevPalette:
    """RGB colours. Agent kinds get clearly distinct hues so CLIP and humans can tell them apart."""

    background: RGB = (16, 16, 16)
    sidewalk: RGB = (92, 92, 84)
    road: RGB = (58, 58, 62)
    lane_marking: RGB = (190, 200, 235)  # painted lane edges: a cool white, so blends with the road never pass for sidewalk
    crosswalk: RGB = (200, 200, 200)
    route: RGB = (24, 96, 120)
    light_red: RGB = (235, 30, 30)
    light_yellow: RGB = (250, 210, 0)
    light_green: RGB = (30, 200, 60)
    vehicle: RGB = (60, 110, 255)
    pedestrian: RGB = (255, 0, 220)
    cyclist: RGB = (255, 140, 0)
    motorcycle: RGB = (170, 80, 255)
    static: RGB = (150, 100, 50)
    ego: RGB = (0, 255, 255)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, tuple) and len(value) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in value)):
                raise ValueError(f"BevPalette.{f.name} must be an (r, g, b) tuple of ints in 0..255, got {value!r}")

    def agent(self, kind: str) -> RGB:
        if kind not in AGENT_KINDS:
            raise ValueError(f"unknown agent kind {kind!r}; expected one of {AGENT_KINDS}")
        return getattr(self, kind)

    def light(self, state: str) -> RGB:
        if state not in _LIGHT_STATES:
            raise ValueError(f"unknown traffic-light state {state!r}; expected one of {tuple(_LIGHT_STATES)}")
        return getattr(self, _LIGHT_STATES[state])


@dataclass(frozen=True)
class BevConfig:
    """Frame size and scale. ``ego_offset_px`` moves the ego down from the centre to show more road ahead."""

    size_px: int = 128
    metres_per_px: float = 0.5
    ego_offset_px: int = 0
    min_agent_px: float = 3.0  # smallest drawn side of an agent: a pedestrian stays visible at any scale
    route_width_m: float = 1.0
    stop_line_width_m: float = 1.0
    crosswalk_stripe_m: float = 1.0  # stripe and gap width of the zebra pattern
    max_world_px: int = 8192  # cap on the cached map raster's side (memory: side^2 * 3 bytes)
    palette: BevPalette = field(default_factory=BevPalette)

    def __post_init__(self) -> None:
        if not (isinstance(self.size_px, int) and 16 <= self.size_px <= 2048):
            raise ValueError(f"BevConfig.size_px must be an int in 16..2048, got {self.size_px!r}")
        if not self.metres_per_px > 0:
            raise ValueError(f"BevConfig.metres_per_px must be > 0, got {self.metres_per_px!r}")
        if not (isinstance(self.ego_offset_px, int) and abs(self.ego_offset_px) < self.size_px // 2):
            raise ValueError(f"BevConfig.ego_offset_px must be an int with |offset| < size_px / 2, got {self.ego_offset_px!r}")
        if not self.min_agent_px >= 1:
            raise ValueError(f"BevConfig.min_agent_px must be >= 1, got {self.min_agent_px!r}")
        for name in ("route_width_m", "stop_line_width_m", "crosswalk_stripe_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BevConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not (isinstance(self.max_world_px, int) and self.max_world_px >= self.size_px):
            raise ValueError(f"BevConfig.max_world_px must be an int >= size_px, got {self.max_world_px!r}")
        if not isinstance(self.palette, BevPalette):
            raise ValueError(f"BevConfig.palette must be a BevPalette, got {type(self.palette).__name__}")


def _fixed(points_px: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2 fixed-point int32 points."""
    return np.round(np.asarray(points_px) * _SCALE).astype(np.int32)


class _WorldRaster:
    """The static layer of one map, north-up, at the frame's scale."""

    def __init__(self, geometry: MapGeometry, config: BevConfig) -> None:
        mpp = config.metres_per_px
        margin = 10.0
        xmin, ymin, xmax, ymax = geometry.bounds()
        self.x0, self.y1 = xmin - margin, ymax + margin
        width = int(math.ceil((xmax - xmin + 2 * margin) / mpp)) + 1
        height = int(math.ceil((ymax - ymin + 2 * margin) / mpp)) + 1
        if max(width, height) > config.max_world_px:
            raise ValueError(
                f"map {geometry.name!r} spans {xmax - xmin:.0f} x {ymax - ymin:.0f} m, a {width} x {height} px raster at "
                f"{mpp} m/px, over BevConfig.max_world_px={config.max_world_px}; raise metres_per_px or max_world_px"
            )
        self.mpp = mpp
        # world -> raster pixel: col = (x - x0) / mpp, row = (y1 - y) / mpp
        self.affine = np.array([[1 / mpp, 0.0, -self.x0 / mpp], [0.0, -1 / mpp, self.y1 / mpp]])
        self.image = np.empty((height, width, 3), dtype=np.uint8)
        self.image[:] = config.palette.background
        self._draw(geometry, config)

    def to_px(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.affine[:, :2].T + self.affine[:, 2]

    def _lane_fills(self, lanes: tuple[Lane, ...], colour: RGB) -> None:
        """Each lane as the strip between its edges, exactly its width (a thick cv2 line is 2-3 px wider than asked,
        which ate the sidewalks). Strips run half a pixel past their ends, so lanes that meet overlap instead of
        leaving an anti-aliased seam between them."""
        for lane in lanes:
            keep = np.concatenate([[True], np.linalg.norm(np.diff(lane.centre, axis=0), axis=1) > 1e-9])
            centre = lane.centre[keep]
            if len(centre) < 2:
                continue
            half = np.broadcast_to(np.asarray(lane.width, dtype=np.float64) / 2, keep.shape)[keep]
            ends = centre[[0, -1]] - centre[[1, -2]]
            ends *= 0.5 * self.mpp / np.maximum(np.linalg.norm(ends, axis=1, keepdims=True), 1e-12)
            centre = np.vstack([centre[:1] + ends[:1], centre, centre[-1:] + ends[1:]])
            half = np.concatenate([half[:1], half, half[-1:]])
            strip = np.vstack([offset_polyline(centre, half), offset_polyline(centre, -half)[::-1]])
            cv2.fillPoly(self.image, [_fixed(self.to_px(strip))], colour, cv2.LINE_AA, _SHIFT)

    def _draw(self, geometry: MapGeometry, config: BevConfig) -> None:
        palette = config.palette
        self._lane_fills(geometry.sidewalks, palette.sidewalk)
        self._lane_fills(geometry.lanes, palette.road)
        if geometry.markings:
            lines = [_fixed(self.to_px(line)) for line in geometry.markings]
            cv2.polylines(self.image, lines, False, palette.lane_marking, 1, cv2.LINE_AA, _SHIFT)
        if geometry.crosswalks:
            self._draw_crosswalks(geometry.crosswalks, palette, config.crosswalk_stripe_m)

    def _draw_crosswalks(self, polygons: tuple[np.ndarray, ...], palette: BevPalette, stripe_m: float) -> None:
        """Zebra bars parallel to the road, repeating along the walking direction (the polygon's long axis)."""
        stripe_px = max(stripe_m / self.mpp, 1.0)
        height, width = self.image.shape[:2]
        for polygon in polygons:
            px = self.to_px(polygon)
            (cx, cy), (w, h), angle = cv2.minAreaRect(px.astype(np.float32))
            theta = math.radians(angle)
            axis = np.array([math.cos(theta), math.sin(theta)]) if w >= h else np.array([-math.sin(theta), math.cos(theta)])
            x0, y0 = np.maximum(np.floor(px.min(axis=0)).astype(int) - 1, 0)
            x1, y1 = np.minimum(np.ceil(px.max(axis=0)).astype(int) + 2, (width, height))
            if x0 >= x1 or y0 >= y1:
                continue
            inside = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
            cv2.fillPoly(inside, [_fixed(px - (x0, y0))], 1, cv2.LINE_8, _SHIFT)
            cols, rows = np.meshgrid(np.arange(x0, x1), np.arange(y0, y1))
            along = (cols - cx) * axis[0] + (rows - cy) * axis[1] + max(w, h) / 2
            bars = np.floor(along / stripe_px).astype(int) % 2 == 0
            self.image[y0:y1, x0:x1][(inside > 0) & bars] = palette.crosswalk


class BevRasteriser:
    """Renders scenes as ego-centred, heading-up HxWx3 uint8 RGB frames."""

    def __init__(self, config: BevConfig | None = None) -> None:
        self.config = config or BevConfig()
        self._map: MapGeometry | None = None
        self._raster: _WorldRaster | None = None
        size = self.config.size_px
        self._centre = ((size - 1) / 2, (size - 1) / 2 + self.config.ego_offset_px)

    def _world(self, geometry: MapGeometry) -> _WorldRaster:
        # identity, not equality: MapGeometry holds arrays, and backends keep one object per map
        if geometry is not self._map:
            self._raster = _WorldRaster(geometry, self.config)
            self._map = geometry
        assert self._raster is not None
        return self._raster

    def frame_affine(self, scene: Scene) -> np.ndarray:
        """The 2x3 matrix taking world points (m) to frame pixels (x right, y down) for this scene's ego."""
        mpp = self.config.metres_per_px
        cx, cy = self._centre
        x0, y0, yaw = scene.ego.x, scene.ego.y, scene.ego.yaw
        c, s = math.cos(yaw), math.sin(yaw)
        # forward f = c dx + s dy goes up, left l = -s dx + c dy goes left: u = cx - l / mpp, v = cy - f / mpp
        return np.array(
            [
                [s / mpp, -c / mpp, cx - (s * x0 - c * y0) / mpp],
                [-c / mpp, -s / mpp, cy + (c * x0 + s * y0) / mpp],
            ]
        )

    def render(self, scene: Scene) -> np.ndarray:
        """The scene as an HxWx3 uint8 RGB frame: map, route, stop lines, ego, then agents (VRUs on top), so a road
        user touching the ego stays visible: a collision frame shows what the ego hit."""
        config, palette = self.config, self.config.palette
        size = config.size_px
        world = self._world(scene.map)
        to_frame = self.frame_affine(scene)
        # frame pixel -> raster pixel = raster_affine o inverse(frame_affine)
        inverse = cv2.invertAffineTransform(to_frame)
        sample = world.affine[:, :2] @ inverse
        sample[:, 2] += world.affine[:, 2]
        frame = cv2.warpAffine(
            world.image, sample, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=palette.background,
        )
        self._draw_route(frame, scene.route, to_frame)
        self._draw_lights(frame, scene, to_frame)
        cx, cy = self._centre
        ego = self._boxes(np.array([[cx, cy]]), np.zeros(1), np.array([scene.ego_length]), np.array([scene.ego_width]))
        cv2.fillConvexPoly(frame, ego[0], palette.ego, cv2.LINE_AA, _SHIFT)
        self._draw_agents(frame, scene, to_frame)
        return frame

    @staticmethod
    def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ affine[:, :2].T + affine[:, 2]

    def _in_frame(self, px: np.ndarray, margin: float) -> np.ndarray:
        size = self.config.size_px
        return np.all((px >= -margin) & (px <= size - 1 + margin), axis=-1)

    def _draw_route(self, frame: np.ndarray, route: np.ndarray, to_frame: np.ndarray) -> None:
        if len(route) < 2:
            return
        thickness = max(1, int(round(self.config.route_width_m / self.config.metres_per_px)))
        px = self._apply(to_frame, route)
        # only the pieces near the frame: a remaining route is hundreds of points, mostly far away
        near = self._in_frame(px, margin=2.0 * self.config.size_px)
        keep = near.copy()
        keep[1:] |= near[:-1]
        keep[:-1] |= near[1:]
        index = np.flatnonzero(keep)
        if len(index) < 2:
            return
        runs = np.split(index, np.flatnonzero(np.diff(index) > 1) + 1)
        pieces = [_fixed(px[run]) for run in runs if len(run) >= 2]
        cv2.polylines(frame, pieces, False, self.config.palette.route, thickness, cv2.LINE_AA, _SHIFT)

    def _draw_lights(self, frame: np.ndarray, scene: Scene, to_frame: np.ndarray) -> None:
        if not scene.traffic_lights:
            return
        thickness = max(2, int(round(self.config.stop_line_width_m / self.config.metres_per_px)))
        ends = self._apply(to_frame, np.concatenate([light.stop_line for light in scene.traffic_lights])).reshape(-1, 2, 2)
        shown = self._in_frame(ends, margin=float(thickness)).any(axis=1)
        for light, (a, b), show in zip(scene.traffic_lights, _fixed(ends), shown):
            colour = self.config.palette.light(light.state)
            if show:
                cv2.line(frame, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), colour, thickness, cv2.LINE_AA, _SHIFT)

    def _draw_agents(self, frame: np.ndarray, scene: Scene, to_frame: np.ndarray) -> None:
        if not scene.agents:
            return
        palette = self.config.palette
        colours = [palette.agent(a.kind) for a in scene.agents]
        state = np.array([(a.x, a.y, a.yaw, a.length, a.width) for a in scene.agents], dtype=np.float64)
        centres = self._apply(to_frame, state[:, :2])
        reach = np.maximum(state[:, 3], state[:, 4]) / self.config.metres_per_px + self.config.min_agent_px
        middle = (self.config.size_px - 1) / 2
        shown = np.flatnonzero(np.abs(centres - middle).max(axis=1) <= self.config.size_px / 2 + reach)
        if len(shown) == 0:
            return
        order = sorted(shown, key=lambda i: _DRAW_ORDER[scene.agents[i].kind])
        corners = self._boxes(centres[order], state[order, 2] - scene.ego.yaw, state[order, 3], state[order, 4])
        for i, box in zip(order, corners):
            cv2.fillConvexPoly(frame, box, colours[i], cv2.LINE_AA, _SHIFT)

    def _boxes(self, centres: np.ndarray, rel_yaw: np.ndarray, length: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Fixed-point corners ``(N, 4, 2)`` of oriented boxes; ``rel_yaw`` is counter-clockwise from image up.

        No side is drawn shorter than ``min_agent_px``, so pedestrians stay visible at any scale."""
        mpp, floor = self.config.metres_per_px, self.config.min_agent_px
        half_l = np.maximum(length / mpp, floor) / 2
        half_w = np.maximum(width / mpp, floor) / 2
        s, c = np.sin(rel_yaw), np.cos(rel_yaw)
        forward = np.stack([-s, -c], axis=1) * half_l[:, None]
        left = np.stack([-c, s], axis=1) * half_w[:, None]
        corners = np.stack([forward + left, forward - left, -forward - left, -forward + left], axis=1) + centres[:, None, :]
        return _fixed(corners)
