"""The BEV against the map it is drawn from: each pixel's class as drawn, next to the lane type CARLA's map has
at that point (driving, sidewalk, or neither).

Drawn pixels blend two palette colours wherever an edge or a thin line crosses them (anti-aliasing, and the
frame's warp of the map raster). So a pixel is read as the palette colour, or the blend of two, that explains it
best, and takes the class of the larger part: a road pixel a marking runs through is road, as is the marking.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import carla
import cv2
import numpy as np

from collect.backends.carla_convert import location
from collect.bev import BevConfig, BevRasteriser
from collect.scene import MapGeometry, Pose, Scene

BACKGROUND, ROAD, SIDEWALK = 0, 1, 2


def drawn_classes(frame: np.ndarray, config: BevConfig) -> np.ndarray:
    """(H, W) class of every pixel of a frame with no agents or route on it."""
    palette = config.palette
    colours = np.array([palette.background, palette.road, palette.lane_marking, palette.crosswalk, palette.sidewalk], dtype=float)
    classes = np.array([BACKGROUND, ROAD, ROAD, ROAD, SIDEWALK])
    pixels = frame.reshape(-1, 3).astype(float)
    best = np.full(len(pixels), np.inf)
    label = np.zeros(len(pixels), dtype=int)
    for a, b in itertools.combinations(range(len(colours)), 2):
        u = colours[b] - colours[a]
        t = np.clip((pixels - colours[a]) @ u / (u @ u), 0.0, 1.0)
        residual = np.linalg.norm(pixels - colours[a] - t[:, None] * u, axis=1)
        better = residual < best - 1e-9
        best[better] = residual[better]
        label[better] = np.where(t[better] < 0.5, classes[a], classes[b])
    return label.reshape(frame.shape[:2])


def map_classes(cmap: carla.Map, rasteriser: BevRasteriser, scene: Scene) -> np.ndarray:
    """(H, W) lane type of the map at the centre of every frame pixel."""
    size = rasteriser.config.size_px
    inverse = cv2.invertAffineTransform(rasteriser.frame_affine(scene))
    rows, cols = np.mgrid[0:size, 0:size]
    world = np.stack([cols.ravel(), rows.ravel(), np.ones(size * size)], axis=1) @ inverse.T
    kinds = {carla.LaneType.Driving: ROAD, carla.LaneType.Sidewalk: SIDEWALK}
    out = np.zeros(size * size, dtype=int)
    for i, (x, y) in enumerate(world):
        wp = cmap.get_waypoint(location(x, y), project_to_road=False, lane_type=carla.LaneType.Any)
        if wp is not None:
            out[i] = kinds.get(wp.lane_type, BACKGROUND)
    return out.reshape(size, size)


@dataclass(frozen=True)
class Agreement:
    share: float  # of all pixels, those drawn as the class the map has there
    interior_share: float  # the same over pixels whose 3 x 3 neighbourhood has one class on the map (no edge)
    sidewalk_recall: float  # of the map's sidewalk pixels, those drawn as sidewalk
    pixels: int


def agreement(cmap: carla.Map, geometry: MapGeometry, centres: list[tuple[float, float]], config: BevConfig) -> Agreement:
    """Frames centred on ``centres`` (heading north, the ego too small to see), compared pixel by pixel."""
    rasteriser = BevRasteriser(config)
    agree = inner_agree = inner = walks = walks_hit = total = 0
    for x, y in centres:
        scene = Scene(map=geometry, ego=Pose(x, y, math.pi / 2), ego_length=0.01, ego_width=0.01)
        drawn = drawn_classes(rasteriser.render(scene), config)
        truth = map_classes(cmap, rasteriser, scene)
        size = config.size_px
        keep = np.ones((size, size), dtype=bool)
        half = int(math.ceil(config.min_agent_px)) + 1
        middle = (size - 1) / 2
        keep[int(middle) - half : int(middle) + half + 2, int(middle) - half : int(middle) + half + 2] = False  # the ego
        uniform = np.ones_like(keep)
        padded = np.pad(truth, 1, mode="edge")
        for dy in range(3):
            for dx in range(3):
                uniform &= padded[dy : dy + size, dx : dx + size] == truth
        same = drawn == truth
        agree += int(np.sum(same & keep))
        total += int(np.sum(keep))
        inner_agree += int(np.sum(same & keep & uniform))
        inner += int(np.sum(keep & uniform))
        walks += int(np.sum((truth == SIDEWALK) & keep))
        walks_hit += int(np.sum((truth == SIDEWALK) & (drawn == SIDEWALK) & keep))
    return Agreement(agree / total, inner_agree / max(inner, 1), walks_hit / max(walks, 1), total)
