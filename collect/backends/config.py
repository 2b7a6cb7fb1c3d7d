"""Settings of the simulator backends: frozen dataclasses, importable without libsumo or the carla wheel, so that
a command line or an ``EnvSpec`` can be built (and refused with a clear error) before any simulator starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from collect.vehicle import VehicleParams

DEFAULT_NET = Path(__file__).resolve().parent.parent / "town" / "town.net.xml"


@dataclass(frozen=True)
class SumoConfig:
    """Options of the SUMO backend. ``cars``, ``motorcycles``, ``cyclists`` and ``pedestrians`` are counts of
    background agents present from the start of every episode (they travel long routes, so counts stay steady)."""

    net_file: Path = DEFAULT_NET
    dt: float = 0.1
    cars: int = 20
    motorcycles: int = 2
    cyclists: int = 4
    pedestrians: int = 30
    crossing_fraction: float = 0.5  # share of pedestrians sent across a street of the ego's route
    # SUMO's willingness of pedestrians to cross an unprioritised crossing while a car approaches that could
    # still brake. Above 0 it also keeps them from waiting forever for the ego: SUMO treats the teleported
    # ego as approaching the crossing even when it stands still, and without impatience both sides wait.
    pedestrian_impatience: float = 0.5
    route_min_m: float = 150.0
    route_max_m: float = 450.0
    min_turns: int = 1
    agent_radius: float = 60.0  # agents farther from the ego than this are left out of the scene
    vehicle: VehicleParams = field(default_factory=VehicleParams)
    sumo_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "net_file", Path(self.net_file))
        if not self.net_file.is_file():
            raise ValueError(f"SumoConfig.net_file: no such file {self.net_file}")
        if not 0.0 < self.dt <= 1.0:
            raise ValueError(f"SumoConfig.dt must be in (0, 1] s, got {self.dt}")
        for name in ("cars", "motorcycles", "cyclists", "pedestrians", "min_turns"):
            if getattr(self, name) < 0:
                raise ValueError(f"SumoConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("crossing_fraction", "pedestrian_impatience"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SumoConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 20.0 <= self.route_min_m <= self.route_max_m:
            raise ValueError(
                f"SumoConfig.route_min_m/route_max_m must satisfy 20 <= min <= max, got {self.route_min_m}, {self.route_max_m}"
            )
        if self.agent_radius <= 0:
            raise ValueError(f"SumoConfig.agent_radius must be > 0, got {self.agent_radius}")
        if isinstance(self.sumo_options, str) or not all(isinstance(o, str) for o in self.sumo_options):
            raise ValueError("SumoConfig.sumo_options must be a sequence of strings (command-line tokens)")
        object.__setattr__(self, "sumo_options", tuple(self.sumo_options))


class CarlaUnavailable(RuntimeError):
    """No CARLA server answered, or it answered with something unusable."""


@dataclass(frozen=True)
class CarlaConfig:
    """Connection, world and sensor settings. ``dt`` is the fixed simulation step of synchronous mode."""

    host: str = "127.0.0.1"
    port: int = 2000
    timeout_s: float = 10.0
    town: str = "Town02"
    dt: float = 0.05
    vehicles: int = 30  # Traffic Manager vehicles
    walkers: int = 20  # AI-controlled pedestrians
    walker_cross_fraction: float = 0.1  # share of pedestrians that cross roads anywhere, not only at crossings
    tm_port: int = 8000
    camera_width: int = 640
    camera_height: int = 360
    camera_fov: float = 90.0
    seed: int = 0  # added to every episode seed, so two collectors on one server can be told apart
    ego_blueprint: str = "vehicle.tesla.model3"
    scene_radius_m: float = 60.0  # agents farther from the ego are left out of the scene
    route_min_m: float = 150.0
    route_max_m: float = 400.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("CarlaConfig.host must not be empty")
        for name in ("port", "tm_port"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 < value < 65536):
                raise ValueError(f"CarlaConfig.{name} must be a TCP port in 1..65535, got {value!r}")
        if self.port == self.tm_port or self.tm_port == self.port + 1:
            raise ValueError(f"CarlaConfig.tm_port {self.tm_port} collides with the server's ports {self.port} and {self.port + 1}")
        for name in ("timeout_s", "dt", "camera_fov", "scene_radius_m", "route_min_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CarlaConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.dt > 0.1:
            raise ValueError(f"CarlaConfig.dt must be <= 0.1 s for stable CARLA physics, got {self.dt}")
        for name in ("vehicles", "walkers", "camera_width", "camera_height"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ValueError(f"CarlaConfig.{name} must be an int >= 0, got {value!r}")
        if not 0.0 <= self.walker_cross_fraction <= 1.0:
            raise ValueError(f"CarlaConfig.walker_cross_fraction must be in [0, 1], got {self.walker_cross_fraction}")
        if not self.route_max_m > self.route_min_m:
            raise ValueError(f"CarlaConfig.route_max_m ({self.route_max_m}) must exceed route_min_m ({self.route_min_m})")

    @property
    def camera(self) -> bool:
        return self.camera_width > 0 and self.camera_height > 0


# -- the live backend -----------------------------------------------------------------------------------------
