"""The embedded SUMO backend: SUMO (through libsumo) drives cars, cyclists and pedestrians on a small town;
the ego is the project's own bicycle model, written back into SUMO every step so that traffic reacts to it.

Everything random is drawn from the episode seed (routes, spawns, SUMO's own ``--seed``), so the same seed and
the same actions give the same observations.
"""

from __future__ import annotations

import math

import libsumo
import numpy as np
from libsumo import constants as tc

from collect.backend import Controls, Events, Observation
from collect.backends.config import DEFAULT_NET, SumoConfig
from collect.backends.sumo_map import SumoNet, load_net, sumo_angle_to_yaw, yaw_to_sumo_angle
from collect.backends.sumo_routes import EgoRoute, sample_route, staged_route, walk
from collect.backends.sumo_stage import SumoStage
from collect.backends.sumo_traffic import spawn_traffic
from collect.route import route_state
from collect.scenarios import FREE, SCENARIOS, check_scenarios, make_director
from collect.scene import Agent, Pose, Scene, TrafficLight
from collect.stop_lines import ran_red_light
from collect.vehicle import VehicleState
from collect.vehicle import step as vehicle_step

EGO = "ego"
_VARS = [tc.VAR_POSITION, tc.VAR_ANGLE, tc.VAR_SPEED, tc.VAR_TYPE]
_KIND_BY_CLASS = {"bicycle": "cyclist", "motorcycle": "motorcycle", "moped": "motorcycle", "pedestrian": "pedestrian"}
_SUMO_TOLERANCE = 0.25  # m, how far apart two footprints may be for a SUMO collision report to count
_LIGHT = {"G": "g", "g": "g", "y": "y", "Y": "y", "o": "g", "O": "g"}  # anything else (r, R, u, s) is red


def _corners(x: float, y: float, yaw: float, length: float, width: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    fwd, left = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    centre = np.array([x, y])
    return np.array([centre + fwd + left, centre + fwd - left, centre - fwd - left, centre - fwd + left])


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals ``(4, 2)`` (oriented boxes)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for ex, ey in edges[:2]:
            axis = np.array([-ey, ex])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


_active: "SumoBackend | None" = None  # the backend whose episode the process's one libsumo instance holds
_running = False  # whether libsumo has been started in this process


class SumoBackend:
    """SUMO through libsumo, one simulation per process.

    libsumo embeds a single SUMO instance in the process, so only one backend can hold an episode at a
    time: use one ``SumoBackend`` per process (parallel collection runs one worker process per backend).
    ``reset`` reloads the simulation with a fresh seed, so one backend object serves any number of episodes.
    A second backend's ``reset`` takes the simulation over; the first then refuses to ``step``.
    """

    name = "sumo"

    def __init__(self, config: SumoConfig | None = None) -> None:
        self.config = config or SumoConfig()
        self.net: SumoNet = load_net(str(self.config.net_file))
        self.map_name = self.net.name
        self.dt = self.config.dt
        self._types: dict[str, tuple[str, float, float]] = {}
        self._ego: VehicleState | None = None
        self._ego_route: EgoRoute | None = None
        self._progress = 0.0
        self._tls: tuple[str, ...] = tuple(sorted({s.tl for s in self.net.stop_lines}))
        self._route_next: dict[str, str] = {}
        self._agent_ids: tuple[str, ...] = ()
        self._pinned: dict[str, tuple[float, float, float]] = {}
        #: the running episode's staged scenario (its director and road users); None in the free town
        self.stage: SumoStage | None = None

    @property
    def current_route(self) -> EgoRoute:
        """The route of the running episode (edges, start position on the first edge, centre line)."""
        if self._ego_route is None:
            raise RuntimeError("SumoBackend: no episode yet, call reset() first")
        return self._ego_route

    # ---- episode set-up -------------------------------------------------------------------------------

    def _sumo_args(self, seed: int) -> list[str]:
        """SUMO's command line; an option given in ``sumo_options`` replaces the default of the same name."""
        defaults = {
            "--step-length": repr(self.config.dt),
            "--seed": str(seed),
            "--no-step-log": "true",
            "--no-warnings": "true",
            "--xml-validation": "never",
            "--collision.action": "warn",
            "--collision.check-junctions": "true",
            "--collision.mingap-factor": "0",
            "--time-to-teleport": "-1",
            "--begin": "0",
        }
        overridden = {tok.split("=", 1)[0] for tok in self.config.sumo_options if tok.startswith("-")}
        args = ["-n", str(self.config.net_file)]
        for flag, value in defaults.items():
            if flag not in overridden:
                args += [flag, value]
        return args + list(self.config.sumo_options)

    def _define_types(self) -> None:
        vp = self.config.vehicle
        libsumo.vehicletype.copy("DEFAULT_VEHTYPE", "ego")
        libsumo.vehicletype.setLength("ego", vp.length)
        libsumo.vehicletype.setWidth("ego", vp.width)
        libsumo.vehicletype.setMaxSpeed("ego", vp.max_speed)
        libsumo.vehicletype.copy("DEFAULT_VEHTYPE", "moto")
        libsumo.vehicletype.setVehicleClass("moto", "motorcycle")
        libsumo.vehicletype.setLength("moto", 2.2)
        libsumo.vehicletype.setWidth("moto", 0.9)
        libsumo.vehicletype.setMinGap("moto", 1.5)
        libsumo.vehicletype.setImpatience("DEFAULT_PEDTYPE", self.config.pedestrian_impatience)
        self._types = {}

    def _kind(self, type_id: str) -> tuple[str, float, float]:
        """(kind, length, width) of a SUMO type, cached."""
        if type_id not in self._types:
            vclass = libsumo.vehicletype.getVehicleClass(type_id)
            self._types[type_id] = (
                _KIND_BY_CLASS.get(vclass, "vehicle"),
                libsumo.vehicletype.getLength(type_id),
                libsumo.vehicletype.getWidth(type_id),
            )
        return self._types[type_id]

    def reset(self, seed: int, scenario: str = FREE) -> Observation:
        """Reload SUMO with ``seed``, sample the ego route and traffic from it, and place the ego at the start.

        A ``scenario`` other than ``free`` (``collect.scenarios``) draws its hazard from the same seed, takes
        a route that fits it, keeps background vehicles off the street where it plays, and stages it.
        """
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        check_scenarios([scenario])
        global _active, _running
        args = self._sumo_args(seed)
        try:
            if _running:
                libsumo.simulation.load(args)
            else:
                libsumo.start(["sumo", *args])
                _running = True
        except libsumo.TraCIException as exc:
            _running, _active = False, None
            raise ValueError(f"SUMO did not start with {' '.join(args)} (check SumoConfig.sumo_options): {exc}") from exc
        _active = self
        self._pinned = {}
        self.stage = None
        self._define_types()
        rng = np.random.default_rng(seed)
        director = make_director(SCENARIOS[scenario], rng)
        ego = sample_route(self.net, self.config, rng) if director is None else staged_route(self.net, self.config, director.layout, rng)
        self._ego_route = ego
        self._route_next = {a: b for a, b in zip(ego.edges[:-1], ego.edges[1:])}
        spawn_traffic(self.net, self.config, rng, ego, staged=director is not None)
        # the SUMO-side route runs on past the goal so the ego never "arrives" and vanishes
        sumo_edges = list(ego.edges) + walk(self.net, rng, ego.edges[-1], 3)[1:]
        libsumo.route.add("ego_route", sumo_edges)
        libsumo.vehicle.add(EGO, "ego_route", typeID="ego", depart="now", departLane="best",
                            departPos=f"{ego.start_pos + self.config.vehicle.length / 2:.2f}", departSpeed="0")
        libsumo.vehicle.setSpeedMode(EGO, 0)
        libsumo.vehicle.setLaneChangeMode(EGO, 0)
        start = ego.route.points[0]
        yaw = ego.route.heading_at(0.0)
        self._ego = VehicleState(x=float(start[0]), y=float(start[1]), yaw=yaw, speed=0.0)
        self._progress = 0.0
        self._controls = Controls()
        self._place_ego()
        self.stage = None if director is None else SumoStage(self.net, director, ego, sumo_edges)
        self._direct()
        libsumo.simulationStep()
        r = self.config.agent_radius
        libsumo.vehicle.subscribeContext(EGO, tc.CMD_GET_VEHICLE_VARIABLE, r, _VARS)
        libsumo.vehicle.subscribeContext(EGO, tc.CMD_GET_PERSON_VARIABLE, r, _VARS)
        return self._observe(Events())

    def _place_ego(self) -> None:
        e, vp = self._ego, self.config.vehicle
        fx = e.x + math.cos(e.yaw) * vp.length / 2
        fy = e.y + math.sin(e.yaw) * vp.length / 2
        libsumo.vehicle.moveToXY(EGO, "", -1, fx, fy, yaw_to_sumo_angle(e.yaw), 2)

    def _direct(self) -> None:
        """Let the staged scenario (if any) place its road users for the coming step, from the ego's last
        observed progress and its current speed."""
        if self.stage is not None:
            front = self._progress + self.config.vehicle.length / 2
            self.stage.apply(libsumo.simulation.getTime() + self.dt, front, self._ego.speed)

    # ---- stepping -------------------------------------------------------------------------------------

    def place_pedestrian(self, x: float, y: float, yaw: float = 0.0) -> str:
        """Pin a standing SUMO pedestrian at world ``(x, y)`` for the rest of the episode; returns its id.

        For scripted scenarios and tests (a pedestrian on the ego's path): SUMO sees a real person there,
        re-placed before every simulation step, so it appears in the scene and in collision checks.
        """
        self._check_active()
        pid = f"pinned{len(self._pinned)}"
        edge = sorted(self.net.edge_sidewalk)[0]
        libsumo.person.add(pid, edge, 0.0)
        libsumo.person.appendWaitingStage(pid, 1e6)
        self._pinned[pid] = (float(x), float(y), yaw_to_sumo_angle(yaw))
        return pid

    def _check_active(self) -> None:
        if self._ego is None:
            raise RuntimeError("SumoBackend: call reset() before stepping")
        if _active is not self:
            raise RuntimeError("SumoBackend: another SumoBackend in this process has taken over libsumo (one simulation per process)")

    def step(self, action: np.ndarray) -> Observation:
        self._check_active()
        self._controls = Controls.from_action(action)
        before = self._ego
        self._ego = vehicle_step(self.config.vehicle, before, self._controls, self.dt)
        self._place_ego()
        for pid, (x, y, angle) in self._pinned.items():
            libsumo.person.moveToXY(pid, "", x, y, angle, 2)
        self._direct()
        libsumo.simulationStep()
        agents = self._agents()
        lights = self._traffic_lights()
        kind = self._collision(agents)
        after = self._ego
        events = Events(
            collision=kind is not None,
            collision_with=kind,
            off_road=not self.net.on_road(after.x, after.y),
            red_light=ran_red_light(
                Pose(before.x, before.y, before.yaw), Pose(after.x, after.y, after.yaw), self.config.vehicle.length, lights
            ),
        )
        return self._observe(events, agents, lights)

    def _agents(self) -> tuple[Agent, ...]:
        """Agents within ``agent_radius`` of the ego (ids kept in ``_agent_ids``, same order).

        A staged scenario's road users come from its director (pose and true speed), not from the context
        subscription, which misses a vehicle placed off every lane (a cyclist coming out of a yard).
        """
        found: dict[str, Agent] = {}
        results = libsumo.vehicle.getContextSubscriptionResults(EGO)
        for oid, v in results.items():
            if oid == EGO:
                continue
            kind, length, width = self._kind(v[tc.VAR_TYPE])  # persons' types have vClass pedestrian
            yaw = sumo_angle_to_yaw(v[tc.VAR_ANGLE])
            x, y = v[tc.VAR_POSITION]
            # SUMO positions are the front of the agent; the scene wants the centre
            found[oid] = Agent(kind, x - math.cos(yaw) * length / 2, y - math.sin(yaw) * length / 2, yaw, v[tc.VAR_SPEED], length, width)
        if self.stage is not None:
            e = self._ego
            found |= {oid: a for oid, a in self.stage.agents.items() if math.hypot(a.x - e.x, a.y - e.y) <= self.config.agent_radius}
        self._agent_ids = tuple(sorted(found))
        return tuple(found[oid] for oid in self._agent_ids)

    def _collision(self, agents: tuple[Agent, ...]) -> str | None:
        """Kind of agent whose footprint overlaps the ego's, or None.

        SUMO's own collision report is not trusted for the ego as is: SUMO bends a vehicle's outline along the
        lane it is mapped to, so in junctions the teleported ego gets a shape it does not have (false reports
        against cars waiting beside it), and off its lanes (sidewalks, verges) SUMO does not check it at all.
        The footprints here are the ego's true pose and each agent's SUMO pose, so the overlap test is the
        decision; a SUMO report counts when the two footprints are within ``_SUMO_TOLERANCE`` of touching.
        """
        e, vp = self._ego, self.config.vehicle
        reported = set()
        for c in libsumo.simulation.getCollisions():
            if EGO in (c.collider, c.victim):
                reported.add(c.victim if c.collider == EGO else c.collider)
        reach = math.hypot(vp.length, vp.width) / 2 + _SUMO_TOLERANCE
        mine = mine_wide = None
        for agent_id, a in zip(self._agent_ids, agents):
            if math.hypot(a.x - e.x, a.y - e.y) > reach + math.hypot(a.length, a.width) / 2:
                continue
            if mine is None:
                mine = _corners(e.x, e.y, e.yaw, vp.length, vp.width)
                mine_wide = _corners(e.x, e.y, e.yaw, vp.length + 2 * _SUMO_TOLERANCE, vp.width + 2 * _SUMO_TOLERANCE)
            if boxes_overlap(mine, _corners(a.x, a.y, a.yaw, a.length, a.width)):
                return a.kind
            if agent_id in reported and boxes_overlap(mine_wide, _corners(a.x, a.y, a.yaw, a.length, a.width)):
                return a.kind
        return None

    def _traffic_lights(self) -> tuple[TrafficLight, ...]:
        """Every stop line with the state of the signal the ego would drive through (its route's next edge)."""
        states = {tl: libsumo.trafficlight.getRedYellowGreenState(tl) for tl in self._tls}
        lights = []
        for stop in self.net.stop_lines:
            link = stop.links.get(self._route_next.get(stop.edge, ""), stop.default_link)
            lights.append(TrafficLight(stop_line=stop.line, state=_LIGHT.get(states[stop.tl][link], "r")))
        return tuple(lights)

    def _observe(self, events: Events, agents: tuple[Agent, ...] | None = None, lights: tuple[TrafficLight, ...] | None = None) -> Observation:
        if agents is None:
            agents = self._agents()
        if lights is None:
            lights = self._traffic_lights()
        e, vp, route = self._ego, self.config.vehicle, self._ego_route.route
        pose = Pose(e.x, e.y, e.yaw)
        state = route_state(route, pose, hint=self._progress)
        self._progress = state.progress
        scene = Scene(
            map=self.net.geometry, ego=pose, ego_length=vp.length, ego_width=vp.width,
            agents=agents, traffic_lights=lights, route=route.remaining(state.progress),
        )
        return Observation(
            t=libsumo.simulation.getTime(), speed=e.speed, controls=self._controls,
            route=state, scene=scene, events=events, camera=None,
        )

    def close(self) -> None:
        """End the simulation if this backend holds it (the next ``reset`` of any backend starts a new one)."""
        global _active, _running
        if _active is self and _running:
            libsumo.close()
            _running = False
            _active = None
        self._ego = None
