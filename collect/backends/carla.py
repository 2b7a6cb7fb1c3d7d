"""The CARLA backend: a user-started CARLA 0.9.16 server driven in synchronous mode through the ``carla`` client.

The server owns physics, Traffic Manager vehicles and AI pedestrians; this module spawns them, drives the ego
with ``VehicleControl`` from the policy's action, and turns each tick into the backend-neutral
``Observation`` (route metrics, scene for the BEV, front camera, events). Map geometry and routing come from
``collect.backends.carla_map``, conversions of CARLA's data from ``carla_convert``; both run (and are tested)
without a server.

Start a server first, e.g. ``./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=2000``.
"""

from __future__ import annotations

import math
import queue

import carla
import numpy as np

from collect.backend import Controls, Events, Observation
from collect.backends.config import CarlaConfig, CarlaUnavailable
from collect.backends.carla_convert import agent_from_state, agent_kind, carla_steer, rgb_from_bgra, transform, xy_from_location
from collect.backends.carla_map import RoadNetwork, RouteNotFound, stop_line
from collect.route import Route, route_state
from collect.scene import Agent, Pose, Scene, TrafficLight
from collect.stop_lines import ran_red_light

_LIGHT_STATES = {carla.TrafficLightState.Red: "r", carla.TrafficLightState.Yellow: "y", carla.TrafficLightState.Green: "g"}
_CAMERA_MOUNT = carla.Transform(carla.Location(x=1.5, z=2.0))  # bonnet height, looking ahead


def connect(config: CarlaConfig) -> carla.Client:
    """A client whose server has answered, or ``CarlaUnavailable`` within about ``timeout_s``."""
    client = carla.Client(config.host, config.port, worker_threads=1)
    client.set_timeout(config.timeout_s)
    try:
        server = client.get_server_version()
    except RuntimeError as e:
        raise CarlaUnavailable(
            f"no CARLA server answered at {config.host}:{config.port} within {config.timeout_s:g} s ({e}). "
            f"Start one first, e.g. `./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={config.port}` in the CARLA 0.9.16 "
            f"directory, or point --host/--port at a running server."
        ) from e
    client_version = client.get_client_version()
    if server.split("-")[0] != client_version.split("-")[0]:
        raise CarlaUnavailable(f"CARLA server {config.host}:{config.port} runs {server} but the client is {client_version}; use matching versions")
    return client


def _spawn_transform(pose: Pose, road_z: float) -> carla.Transform:
    """Half a metre above the road surface of the lane being spawned on (towns have hills and bridges)."""
    return transform(pose, z=road_z + 0.5)


class _SensorQueue:
    """Sensor callbacks run on the client's threads; this hands their data to the stepping thread."""

    def __init__(self) -> None:
        self.items: queue.Queue = queue.Queue()

    def __call__(self, data: object) -> None:
        self.items.put(data)


class CarlaBackend:
    """A CARLA session. Connecting and loading the town happen on construction, so a missing server fails early."""

    name = "carla"

    def __init__(self, config: CarlaConfig | None = None) -> None:
        self.config = config or CarlaConfig()
        self.map_name = self.config.town
        self.dt = self.config.dt
        self.client = connect(self.config)
        self.world = self._load_world()
        self._original_settings = self.world.get_settings()
        settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self.config.dt
        self.world.apply_settings(settings)
        self.traffic_manager = self.client.get_trafficmanager(self.config.tm_port)
        self.traffic_manager.set_synchronous_mode(True)
        self.network = RoadNetwork(self.world.get_map())
        self.geometry = self.network.geometry()
        self._actors: list[carla.Actor] = []  # everything this episode spawned, sensors first
        self._controllers: list[carla.WalkerAIController] = []
        self._ego: carla.Vehicle | None = None
        self._collisions = _SensorQueue()
        self._camera = _SensorQueue()
        self._lights: list[tuple[carla.TrafficLight, list[np.ndarray]]] = []
        self._route: Route | None = None
        self._start = Pose(0.0, 0.0, 0.0)
        self._progress = 0.0
        self._controls = Controls()
        self._prev_pose: Pose | None = None
        self._t0 = 0.0
        self._closed = False

    def _load_world(self) -> carla.World:
        world = self.client.get_world()
        current = world.get_map().name.rsplit("/", 1)[-1]
        if current != self.config.town:
            available = [m.rsplit("/", 1)[-1] for m in self.client.get_available_maps()]
            if self.config.town not in available:
                raise ValueError(f"CarlaConfig.town {self.config.town!r} is not on the server; available: {sorted(available)}")
            world = self.client.load_world(self.config.town)
        return world

    # -- episode set-up and tear-down ----------------------------------------------------------------------

    def reset(self, seed: int) -> Observation:
        self._destroy_actors()
        episode_seed = int(seed) + self.config.seed
        rng = np.random.default_rng(episode_seed)
        self.traffic_manager.set_random_device_seed(episode_seed)
        self.world.set_pedestrians_seed(episode_seed)
        self._spawn_ego(rng)
        self._spawn_traffic(rng)
        self._spawn_walkers(rng)
        self._spawn_sensors()
        self._lights = [
            (tl, [stop_line(wp) for wp in tl.get_stop_waypoints()]) for tl in self.world.get_actors().filter("traffic.traffic_light")
        ]
        self._controls = Controls()
        self._progress = 0.0
        self._prev_pose = None
        frame = self.world.tick()
        self._t0 = self.world.get_snapshot().timestamp.elapsed_seconds
        return self._observe(frame)

    def _blueprints(self, pattern: str) -> list[carla.ActorBlueprint]:
        # sorted, so that the seed alone decides which blueprint is drawn
        return sorted(self.world.get_blueprint_library().filter(pattern), key=lambda bp: bp.id)

    def _spawn_ego(self, rng: np.random.Generator) -> None:
        blueprint = self.world.get_blueprint_library().find(self.config.ego_blueprint)
        blueprint.set_attribute("role_name", "hero")
        for _ in range(20):
            try:
                sampled = self.network.sample_route(rng, self.config.route_min_m, self.config.route_max_m)
            except RouteNotFound as e:
                raise ValueError(f"CARLA town {self.config.town!r}: {e}") from e
            ego = self.world.try_spawn_actor(blueprint, _spawn_transform(sampled.start, sampled.start_z))
            if ego is not None:
                self._ego, self._route, self._start = ego, sampled.route, sampled.start
                self._actors.append(ego)
                return
        raise RuntimeError(f"CARLA town {self.config.town!r}: no free spot to spawn the ego after 20 tries")

    def _spawn_traffic(self, rng: np.random.Generator) -> None:
        if self.config.vehicles == 0:
            return
        # the ego's start, not its location: a new actor has no location until the next tick
        ego_xy = np.array([self._start.x, self._start.y])
        candidates = self.world.get_map().get_spawn_points() or [
            _spawn_transform(self.network.lane_pose(key, seg.length / 2), seg.height_at(seg.length / 2))
            for key, seg in self.network.lanes.items()
            if not seg.is_junction
        ]
        points = [sp for sp in candidates if np.hypot(*(np.array(xy_from_location(sp.location)) - ego_xy)) > 10.0]
        order = rng.permutation(len(points))[: self.config.vehicles]
        blueprints = self._blueprints("vehicle.*")
        batch = []
        for i in order:
            bp = blueprints[int(rng.integers(len(blueprints)))]
            bp.set_attribute("role_name", "autopilot")
            if bp.has_attribute("color"):
                colours = bp.get_attribute("color").recommended_values
                bp.set_attribute("color", colours[int(rng.integers(len(colours)))])
            batch.append(
                carla.command.SpawnActor(bp, points[int(i)]).then(carla.command.SetAutopilot(carla.command.FutureActor, True, self.config.tm_port))
            )
        self._actors.extend(self._spawned(batch))

    def _spawned(self, batch: list) -> list[carla.Actor]:
        """The actors a batch of spawn commands created (a blocked spot fails its command, not the batch)."""
        return self._actors_by_id([r.actor_id for r in self.client.apply_batch_sync(batch, False) if not r.error])

    def _actors_by_id(self, ids: list[int]) -> list[carla.Actor]:
        return list(self.world.get_actors(ids)) if ids else []  # get_actors([]) would list every actor

    def _spawn_walkers(self, rng: np.random.Generator) -> None:
        if self.config.walkers == 0:
            return
        blueprints = self._blueprints("walker.pedestrian.*")
        batch, speeds = [], []
        for _ in range(self.config.walkers):
            spot = self.world.get_random_location_from_navigation()
            if spot is None:
                continue
            bp = blueprints[int(rng.integers(len(blueprints)))]
            if bp.has_attribute("is_invincible"):
                bp.set_attribute("is_invincible", "false")
            walking = bp.get_attribute("speed").recommended_values[1] if bp.has_attribute("speed") else "1.4"
            speeds.append(float(walking))
            batch.append(carla.command.SpawnActor(bp, carla.Transform(spot)))
        responses = self.client.apply_batch_sync(batch, False)
        walker_ids = [(r.actor_id, s) for r, s in zip(responses, speeds) if not r.error]
        controller_bp = self.world.get_blueprint_library().find("controller.ai.walker")
        controllers = self._spawned([carla.command.SpawnActor(controller_bp, carla.Transform(), wid) for wid, _ in walker_ids])
        self._actors.extend(self._actors_by_id([wid for wid, _ in walker_ids]))
        self.world.tick()  # controllers need one tick before they accept goals
        self.world.set_pedestrians_cross_factor(self.config.walker_cross_fraction)
        by_parent = {wid: speed for wid, speed in walker_ids}
        for controller in controllers:
            controller.start()
            controller.go_to_location(self.world.get_random_location_from_navigation())
            controller.set_max_speed(by_parent.get(controller.parent.id if controller.parent else -1, 1.4))
        self._controllers = list(controllers)
        self._actors.extend(controllers)

    def _spawn_sensors(self) -> None:
        assert self._ego is not None
        library = self.world.get_blueprint_library()
        self._collisions = _SensorQueue()
        self._camera = _SensorQueue()
        sensors = []
        collision = self.world.spawn_actor(library.find("sensor.other.collision"), carla.Transform(), attach_to=self._ego)
        collision.listen(self._collisions)
        sensors.append(collision)
        if self.config.camera:
            bp = library.find("sensor.camera.rgb")
            bp.set_attribute("image_size_x", str(self.config.camera_width))
            bp.set_attribute("image_size_y", str(self.config.camera_height))
            bp.set_attribute("fov", str(self.config.camera_fov))
            camera = self.world.spawn_actor(bp, _CAMERA_MOUNT, attach_to=self._ego)
            camera.listen(self._camera)
            sensors.append(camera)
        # sensors go first in the list so they are stopped and destroyed before what they are attached to
        self._actors[:0] = sensors

    def _destroy_actors(self) -> None:
        for controller in self._controllers:
            if controller.is_alive:
                controller.stop()
        for actor in self._actors:
            if isinstance(actor, carla.Sensor) and actor.is_alive:
                actor.stop()
        if self._actors:
            self.client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in self._actors], False)
        self._actors, self._controllers, self._ego = [], [], None

    def close(self) -> None:
        """Destroy this session's actors and give the server back in asynchronous mode."""
        if self._closed:
            return
        self._closed = True
        try:
            self._destroy_actors()
            self.traffic_manager.set_synchronous_mode(False)
        finally:
            self.world.apply_settings(self._original_settings)

    def __enter__(self) -> "CarlaBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stepping --------------------------------------------------------------------------------------------

    def step(self, action: np.ndarray) -> Observation:
        if self._ego is None:
            raise RuntimeError("CarlaBackend.step called before reset")
        self._controls = Controls.from_action(action)
        self._ego.apply_control(
            carla.VehicleControl(throttle=self._controls.throttle, steer=carla_steer(self._controls.steer), brake=self._controls.brake)
        )
        frame = self.world.tick()
        return self._observe(frame)

    def _camera_frame(self, frame: int) -> np.ndarray | None:
        if not self.config.camera:
            return None
        while True:
            try:
                image = self._camera.items.get(timeout=self.config.timeout_s)
            except queue.Empty:
                raise RuntimeError(f"CARLA camera sent no image for frame {frame} within {self.config.timeout_s:g} s") from None
            if image.frame >= frame:
                return rgb_from_bgra(image.raw_data, image.width, image.height)

    def _collision(self) -> tuple[bool, str | None]:
        """Whether the ego hit something since the last observation, and the kind of the first thing it hit.

        Collision events come from the client's sensor thread; one that arrives after its tick is reported with
        the next observation."""
        hit: str | None = None
        while not self._collisions.items.empty():
            other = self._collisions.items.get_nowait().other_actor
            if hit is None:
                hit = agent_kind(other.type_id, dict(other.attributes)) if other is not None else "static"
        return hit is not None, hit

    def _agents(self, ego: Pose) -> tuple[Agent, ...]:
        assert self._ego is not None
        agents = []
        for actor in self.world.get_actors():
            type_id = actor.type_id
            if actor.id == self._ego.id or not (type_id.startswith("vehicle.") or type_id.startswith("walker.pedestrian")):
                continue
            tf = actor.get_transform()
            if math.hypot(tf.location.x - ego.x, -tf.location.y - ego.y) > self.config.scene_radius_m:
                continue
            kind = agent_kind(type_id, dict(actor.attributes))
            agents.append(agent_from_state(kind, tf, actor.bounding_box, actor.get_velocity()))
        return tuple(agents)

    def _observe(self, frame: int) -> Observation:
        assert self._ego is not None and self._route is not None
        box = self._ego.bounding_box
        ego_tf = self._ego.get_transform()
        ego_agent = agent_from_state("vehicle", ego_tf, box, self._ego.get_velocity())
        pose = Pose(ego_agent.x, ego_agent.y, ego_agent.yaw)
        state = route_state(self._route, pose, hint=self._progress)
        self._progress = state.progress
        lights = []
        for tl, lines in self._lights:
            code = _LIGHT_STATES.get(tl.get_state())
            if code is not None:
                lights.extend(TrafficLight(line, code) for line in lines)
        red = self._prev_pose is not None and ran_red_light(self._prev_pose, pose, ego_agent.length, lights)
        self._prev_pose = pose
        near = [light for light in lights if math.hypot(*(light.stop_line.mean(axis=0) - (pose.x, pose.y))) <= self.config.scene_radius_m]
        camera = self._camera_frame(frame)  # waiting for the frame's image lets its other sensor data arrive too
        collision, collision_with = self._collision()
        scene = Scene(
            map=self.geometry, ego=pose, ego_length=ego_agent.length, ego_width=ego_agent.width,
            agents=self._agents(pose), traffic_lights=tuple(near), route=self._route.remaining(state.progress),
        )
        events = Events(collision=collision, collision_with=collision_with, off_road=not self.network.on_road(pose, ego_tf.location.z), red_light=red)
        elapsed = self.world.get_snapshot().timestamp.elapsed_seconds - self._t0
        return Observation(
            t=float(elapsed), speed=ego_agent.speed, controls=self._controls,
            route=state, scene=scene, events=events, camera=camera,
        )

