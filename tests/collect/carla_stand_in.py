"""A scripted stand-in for the CARLA server (none can run here), for tests of a whole ``CarlaBackend`` session.

Only the server is replaced: the map is the real ``carla.Map`` of the bundled town's OpenDRIVE, and transforms,
bounding boxes, controls, settings and traffic-light states are the real ``carla`` types. The stand-in moves
the ego the way CARLA's controls are defined (positive steer turns right, i.e. clockwise in CARLA's frame).
Import it after ``pytest.importorskip("carla")``; ``server`` is the fixture that installs it.
"""

from __future__ import annotations

import fnmatch
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import carla
import numpy as np
import pytest

import collect.backends.carla as carla_backend
from collect.backends.carla import CarlaConfig
from collect.backends.carla_convert import location
from collect.town.build_town import XODR

TOWN = carla.Map("town", XODR.read_text())
BOXES = {"vehicle": carla.Vector3D(2.3, 1.0, 0.8), "walker": carla.Vector3D(0.25, 0.25, 0.9)}


@dataclass
class Attribute:
    recommended_values: list[str]


@dataclass
class Blueprint:
    id: str
    attributes: dict[str, str] = field(default_factory=dict)
    recommended: dict[str, list[str]] = field(default_factory=dict)

    def has_attribute(self, name: str) -> bool:
        return name in self.attributes or name in self.recommended

    def get_attribute(self, name: str) -> Attribute:
        return Attribute(self.recommended[name])

    def set_attribute(self, name: str, value: str) -> None:
        self.attributes[name] = value


class Library(list):
    def filter(self, pattern: str) -> "Library":
        return Library(bp for bp in self if fnmatch.fnmatch(bp.id, pattern))

    def find(self, id: str) -> Blueprint:
        return next(Blueprint(bp.id, dict(bp.attributes), bp.recommended) for bp in self if bp.id == id)


LIBRARY = Library(
    [
        Blueprint("vehicle.tesla.model3", {"base_type": "car"}, {"color": ["10,10,10", "200,0,0"]}),
        Blueprint("vehicle.diamondback.century", {"base_type": "bicycle"}),
        Blueprint("walker.pedestrian.0001", {}, {"speed": ["0.0", "1.3", "2.6"], "is_invincible": ["false"]}),
        Blueprint("controller.ai.walker"),
        Blueprint("sensor.other.collision"),
        Blueprint("sensor.camera.rgb"),
    ]
)


class Actor:
    def __init__(self, world: "World", id: int, bp: Blueprint, tf: carla.Transform, parent: "Actor | None") -> None:
        self.world, self.id, self.type_id, self.parent = world, id, bp.id, parent
        self.attributes = dict(bp.attributes)
        self.transform = tf
        self.speed = 0.0
        self.control = carla.VehicleControl()
        self.is_alive = True
        self.callback: Callable[[Any], None] | None = None
        self.calls: list[tuple] = []
        extent = BOXES["walker" if bp.id.startswith("walker") else "vehicle"]
        self.bounding_box = carla.BoundingBox(carla.Location(0.0, 0.0, extent.z), extent)

    def get_transform(self) -> carla.Transform:
        return self.transform

    def get_location(self) -> carla.Location:
        return self.transform.location

    def get_velocity(self) -> carla.Vector3D:
        yaw = math.radians(self.transform.rotation.yaw)
        return carla.Vector3D(self.speed * math.cos(yaw), self.speed * math.sin(yaw), 0.0)

    def apply_control(self, control: carla.VehicleControl) -> None:
        self.control = control

    def listen(self, callback: Callable[[Any], None]) -> None:
        self.callback = callback

    def __getattr__(self, name: str) -> Callable[..., None]:  # controller and sensor calls are recorded
        if name in ("start", "stop", "go_to_location", "set_max_speed"):
            return lambda *args: self.calls.append((name, *args))
        raise AttributeError(name)


class Sensor(Actor):
    pass


class TrafficLight:
    def __init__(self, stop: carla.Waypoint) -> None:
        self.type_id, self.id, self.stop = "traffic.traffic_light", 999, stop
        self.state = carla.TrafficLightState.Red

    def get_stop_waypoints(self) -> list[carla.Waypoint]:
        return [self.stop]

    def get_state(self) -> carla.TrafficLightState:
        return self.state


class ActorList(list):
    def filter(self, pattern: str) -> "ActorList":
        return ActorList(a for a in self if fnmatch.fnmatch(a.type_id, pattern))


class World:
    def __init__(self) -> None:
        self.actors: dict[int, Actor] = {}
        self.next_id = 100
        self.frame = 0
        self.settings = carla.WorldSettings()
        self.lights: list[TrafficLight] = []
        self.hit: Actor | None = None  # the actor the ego runs into on the next tick
        self.sidewalk_spots = [location(40.0 + 5 * i, -4.5) for i in range(50)]

    def get_map(self) -> carla.Map:
        return TOWN

    def get_settings(self) -> carla.WorldSettings:
        s = self.settings
        return carla.WorldSettings(synchronous_mode=s.synchronous_mode, fixed_delta_seconds=s.fixed_delta_seconds or 0.0)

    def apply_settings(self, settings: carla.WorldSettings) -> int:
        self.settings = settings
        return self.frame

    def get_blueprint_library(self) -> Library:
        return LIBRARY

    def spawn(self, bp: Blueprint, tf: carla.Transform, parent: Actor | None = None) -> Actor:
        cls = Sensor if bp.id.startswith("sensor.") else Actor
        actor = cls(self, self.next_id, bp, tf, parent)
        self.actors[actor.id] = actor
        self.next_id += 1
        return actor

    def try_spawn_actor(self, bp: Blueprint, tf: carla.Transform) -> Actor:
        return self.spawn(bp, tf)

    def spawn_actor(self, bp: Blueprint, tf: carla.Transform, attach_to: Actor | None = None) -> Actor:
        return self.spawn(bp, tf, attach_to)

    def get_actors(self, ids: list[int] | None = None) -> ActorList:
        actors = list(self.actors.values()) + self.lights
        return ActorList(a for a in actors if ids is None or a.id in ids)

    def get_random_location_from_navigation(self) -> carla.Location:
        return self.sidewalk_spots.pop(0)

    def set_pedestrians_seed(self, seed: int) -> None:
        pass

    def set_pedestrians_cross_factor(self, fraction: float) -> None:
        pass

    def get_snapshot(self) -> Any:
        return types.SimpleNamespace(timestamp=types.SimpleNamespace(elapsed_seconds=100.0 + self.frame * self.settings.fixed_delta_seconds))

    def tick(self) -> int:
        """Move every vehicle by its controls (CARLA: positive steer turns clockwise) and feed the sensors."""
        dt = self.settings.fixed_delta_seconds
        self.frame += 1
        for actor in self.actors.values():
            if actor.type_id.startswith("vehicle."):
                c = actor.control
                actor.speed = max(0.0, actor.speed + (4.0 * c.throttle - 8.0 * c.brake) * dt)
                rot = actor.transform.rotation
                yaw = rot.yaw + math.degrees(0.5 * c.steer * actor.speed * dt)
                loc = actor.transform.location
                step = actor.speed * dt
                actor.transform = carla.Transform(
                    carla.Location(loc.x + step * math.cos(math.radians(yaw)), loc.y + step * math.sin(math.radians(yaw)), loc.z),
                    carla.Rotation(yaw=yaw),
                )
        for sensor in [a for a in self.actors.values() if isinstance(a, Sensor) and a.callback]:
            if sensor.type_id == "sensor.camera.rgb":
                w, h = int(sensor.attributes["image_size_x"]), int(sensor.attributes["image_size_y"])
                bgra = np.zeros((h, w, 4), dtype=np.uint8)
                bgra[..., 0] = 255  # pure blue in BGRA
                sensor.callback(types.SimpleNamespace(frame=self.frame, width=w, height=h, raw_data=bgra.tobytes()))
            elif self.hit is not None:
                sensor.callback(types.SimpleNamespace(frame=self.frame, other_actor=self.hit))
        self.hit = None
        return self.frame


@dataclass
class Response:
    actor_id: int = 0
    error: str = ""


@dataclass
class SpawnActor:
    bp: Blueprint
    tf: carla.Transform
    parent: int | None = None
    follow: Any = None

    def then(self, command: Any) -> "SpawnActor":
        self.follow = command
        return self


@dataclass
class SetAutopilot:
    actor: Any
    enabled: bool
    port: int


@dataclass
class DestroyActor:
    actor_id: int


class Client:
    instances: list["Client"] = []

    def __init__(self, host: str, port: int, worker_threads: int = 0) -> None:
        self.world = World()
        self.tm = types.SimpleNamespace(sync=None, seed=None, autopilot=[])
        self.tm.set_synchronous_mode = lambda on: setattr(self.tm, "sync", on)
        self.tm.set_random_device_seed = lambda seed: setattr(self.tm, "seed", seed)
        Client.instances.append(self)

    def set_timeout(self, seconds: float) -> None:
        pass

    def get_server_version(self) -> str:
        return "0.9.16"

    def get_client_version(self) -> str:
        return "0.9.16"

    def get_world(self) -> World:
        return self.world

    def get_trafficmanager(self, port: int) -> Any:
        return self.tm

    def apply_batch_sync(self, commands: list, do_tick: bool = False) -> list[Response]:
        responses = []
        for command in commands:
            if isinstance(command, DestroyActor):
                self.world.actors.pop(command.actor_id).is_alive = False
                responses.append(Response(command.actor_id))
                continue
            parent = self.world.actors.get(command.parent) if command.parent is not None else None
            actor = self.world.spawn(command.bp, command.tf, parent)
            if isinstance(command.follow, SetAutopilot):
                self.tm.autopilot.append((actor.id, command.follow.port))
            responses.append(Response(actor.id))
        return responses


def install(monkeypatch: pytest.MonkeyPatch) -> type[Client]:
    """The backend module's ``carla`` with the server side replaced; every value type stays the real one."""
    stand_in = types.SimpleNamespace(**{name: getattr(carla, name) for name in dir(carla) if not name.startswith("__")})
    stand_in.Client = Client
    stand_in.Sensor = Sensor
    stand_in.command = types.SimpleNamespace(
        SpawnActor=SpawnActor, SetAutopilot=SetAutopilot, DestroyActor=DestroyActor, FutureActor=object()
    )
    monkeypatch.setattr(carla_backend, "carla", stand_in)
    Client.instances = []
    return Client


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> type[Client]:
    """The stand-in server, installed for one test; ``server.instances[0].world`` is the world a backend sees."""
    return install(monkeypatch)


def stand_in_config(**kwargs: Any) -> CarlaConfig:
    """A small session on the stand-in: a few actors, a tiny camera."""
    defaults = dict(town="town", vehicles=3, walkers=2, camera_width=8, camera_height=4, tm_port=8123)
    return CarlaConfig(**{**defaults, **kwargs})

