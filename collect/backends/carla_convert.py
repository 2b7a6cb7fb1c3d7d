"""Conversions between CARLA's data and ours, usable without a server: poses and transforms, steering, actors
as scene agents, camera images.

CARLA's world frame is left-handed (x forward, y right, yaw clockwise in degrees seen from above). Ours is
right-handed (y left, yaw counter-clockwise in radians). This module is the one place where y and yaw change sign.
"""

from __future__ import annotations

import math

import carla
import numpy as np

from collect.route import wrap_angle
from collect.scene import Agent, Pose

_BICYCLES = ("crossbike", "century", "omafiets", "bicycle", "bike")


# -- coordinate conversion: the one place where y and yaw change sign ---------------------------------------


def pose_from_carla(x: float, y: float, yaw_deg: float) -> Pose:
    """A CARLA position and yaw (degrees, clockwise) as a world pose (metres, radians counter-clockwise)."""
    return Pose(float(x), -float(y), float(wrap_angle(-math.radians(yaw_deg))))


def carla_from_pose(pose: Pose) -> tuple[float, float, float]:
    """The inverse of ``pose_from_carla``: CARLA ``(x, y, yaw_deg)``."""
    return pose.x, -pose.y, -math.degrees(pose.yaw)


def pose_from_transform(transform: carla.Transform) -> Pose:
    return pose_from_carla(transform.location.x, transform.location.y, transform.rotation.yaw)


def xy_from_location(location: carla.Location) -> tuple[float, float]:
    return float(location.x), -float(location.y)


def location(x: float, y: float, z: float = 0.0) -> carla.Location:
    """A world point as a ``carla.Location``."""
    return carla.Location(x=float(x), y=-float(y), z=float(z))


def transform(pose: Pose, z: float = 0.0) -> carla.Transform:
    cx, cy, yaw = carla_from_pose(pose)
    return carla.Transform(carla.Location(x=cx, y=cy, z=float(z)), carla.Rotation(yaw=yaw))


def carla_steer(steer: float) -> float:
    """Our steer (positive turns left, counter-clockwise) as CARLA's (positive turns right)."""
    return -float(steer)


# -- actors and sensor data -----------------------------------------------------------------------------------


def agent_kind(type_id: str, attributes: dict[str, str]) -> str:
    """Our agent kind for a CARLA actor; anything that is neither a vehicle nor a walker is ``static``."""
    if type_id.startswith("walker.pedestrian"):
        return "pedestrian"
    if not type_id.startswith("vehicle."):
        return "static"
    base = attributes.get("base_type", "").lower()
    if base in ("bicycle", "bike"):
        return "cyclist"
    if base == "motorcycle":
        return "motorcycle"
    if base:
        return "vehicle"
    if attributes.get("number_of_wheels") == "2":  # servers older than base_type
        return "cyclist" if any(name in type_id for name in _BICYCLES) else "motorcycle"
    return "vehicle"


def agent_from_state(kind: str, tf: carla.Transform, box: carla.BoundingBox, velocity: carla.Vector3D) -> Agent:
    """An agent at the centre of its bounding box footprint (the reference point every backend uses)."""
    # the box offset rotated by the actor's yaw, in CARLA's frame (Transform.transform would modify its argument)
    yaw = math.radians(tf.rotation.yaw)
    bx, by = box.location.x, box.location.y
    cx = tf.location.x + bx * math.cos(yaw) - by * math.sin(yaw)
    cy = tf.location.y + bx * math.sin(yaw) + by * math.cos(yaw)
    pose = pose_from_carla(cx, cy, tf.rotation.yaw)
    return Agent(
        kind=kind, x=pose.x, y=pose.y, yaw=pose.yaw, speed=math.hypot(velocity.x, velocity.y),
        length=2.0 * box.extent.x, width=2.0 * box.extent.y,
    )


def rgb_from_bgra(raw: bytes | memoryview, width: int, height: int) -> np.ndarray:
    """A CARLA camera image (BGRA bytes) as an HxWx3 uint8 RGB array."""
    bgra = np.frombuffer(raw, dtype=np.uint8)
    if bgra.size != width * height * 4:
        raise ValueError(f"camera image has {bgra.size} bytes, expected {width} x {height} x 4")
    return np.ascontiguousarray(bgra.reshape(height, width, 4)[:, :, 2::-1])
