"""A scenario staged on the SUMO town: its road users as real SUMO persons and vehicles, put where the
director says before every simulation step, and the ego's signal set to the director's state.

SUMO sees real objects, so its traffic reacts to them and its collision report includes them. The scene
reports them with the director's own pose and speed (``SumoStage.agents``): SUMO derives a moved object's
speed from the move, wrong on its first step, and its context subscription misses a vehicle placed off every
lane (a cyclist coming out of a yard).
"""

from __future__ import annotations

import math

import libsumo

from collect.backends.sumo_map import SumoNet, yaw_to_sumo_angle
from collect.backends.sumo_routes import EgoRoute, extended_path
from collect.scene import Agent
from collect.scenarios import Director, Stage, Street

#: The SUMO type each scripted road user is a copy of (its size is then the director's).
SUMO_TYPE = {"pedestrian": "DEFAULT_PEDTYPE", "cyclist": "DEFAULT_BIKETYPE", "vehicle": "DEFAULT_VEHTYPE"}
#: How far past the ego's goal scripted vehicles may drive on (a lead car that drives off must not stop on it).
PATH_BEYOND_GOAL_M = 60.0
_ROUTE = "scenario_route"


def street_at(net: SumoNet, edge: str) -> Street:
    """The street of ``edge`` seen from its rightmost driving lane: kerbs from that lane's centre, and the
    sidewalk's width."""
    lanes = [lane for lane in net.lanes.values() if lane.driving and lane.edge in (edge, net.reverse.get(edge))]
    own = net.lanes[net.edge_driving_lane[edge]]
    sidewalk = net.lanes[net.edge_sidewalk[edge]].width if edge in net.edge_sidewalk else 0.0
    return Street(right_kerb=own.width / 2, left_kerb=sum(lane.width for lane in lanes) - own.width / 2, sidewalk=sidewalk)


class _Signal:
    """The traffic light at the end of the route's first street, driven by state for the ego's link: each of
    g/y/r shows the program phase in which the ego's link has it, so the other links stay consistent."""

    def __init__(self, net: SumoNet, edge: str, next_edge: str) -> None:
        stop = next(s for s in net.stop_lines if s.edge == edge)
        self.tl = stop.tl
        link = stop.links.get(next_edge, stop.default_link)
        states = [phase.state for phase in libsumo.trafficlight.getAllProgramLogics(self.tl)[0].phases]
        n = len(states)
        yellow = next(i for i in range(n) if states[i][link] in "yY" and states[i - 1][link] in "Gg")
        green = (yellow - 1) % n
        while states[(green - 1) % n][link] in "Gg" and (green - 1) % n != yellow:
            green = (green - 1) % n  # the start of the green run: pedestrians walk there too
        self.states = {"g": states[green], "y": states[yellow], "r": states[(yellow + 1) % n]}
        self._shown: str | None = None

    def show(self, light: str) -> None:
        if light != self._shown:
            libsumo.trafficlight.setRedYellowGreenState(self.tl, self.states[light])
            self._shown = light


class SumoStage:
    """One episode's director on the loaded simulation. ``agents`` holds the scene pose of every scripted
    road user by SUMO id; ``apply`` runs before each simulation step."""

    def __init__(self, net: SumoNet, director: Director, ego: EgoRoute, sumo_edges: list[str]) -> None:
        self.director = director
        director.stage(Stage(extended_path(net, ego, sumo_edges, PATH_BEYOND_GOAL_M), street_at(net, ego.edges[0])))
        self._signal = _Signal(net, ego.edges[0], ego.edges[1]) if director.layout.at_signal else None
        self._sidewalk = sorted(net.edge_sidewalk)[0]
        self._persons: set[str] = set()
        self.agents: dict[str, Agent] = {}
        libsumo.route.add(_ROUTE, [ego.edges[0]])

    def apply(self, t: float, ego_front_m: float, ego_speed: float) -> None:
        """Ask the director for sim time ``t`` and put everything where it says."""
        cue = self.director.cue(t, ego_front_m, ego_speed)
        for key, agent in cue.actors:
            sumo_id = f"scenario_{key}"
            if sumo_id not in self.agents:
                self._add(sumo_id, agent)
            self.agents[sumo_id] = agent
            self._move(sumo_id, agent)
        if self._signal is not None and cue.light is not None:
            self._signal.show(cue.light)

    def _add(self, sumo_id: str, agent: Agent) -> None:
        type_id = f"{sumo_id}_type"
        libsumo.vehicletype.copy(SUMO_TYPE[agent.kind], type_id)
        libsumo.vehicletype.setLength(type_id, agent.length)
        libsumo.vehicletype.setWidth(type_id, agent.width)
        if agent.kind == "pedestrian":
            libsumo.person.add(sumo_id, self._sidewalk, 0.0, typeID=type_id)
            libsumo.person.appendWaitingStage(sumo_id, 1e6)
            self._persons.add(sumo_id)
        else:
            libsumo.vehicle.add(sumo_id, _ROUTE, typeID=type_id, depart="now", departSpeed="0")
            libsumo.vehicle.setSpeedMode(sumo_id, 0)
            libsumo.vehicle.setLaneChangeMode(sumo_id, 0)

    def _move(self, sumo_id: str, agent: Agent) -> None:
        """SUMO places an object by its front; the scene's pose is its centre."""
        fx = agent.x + math.cos(agent.yaw) * agent.length / 2
        fy = agent.y + math.sin(agent.yaw) * agent.length / 2
        angle = yaw_to_sumo_angle(agent.yaw)
        if sumo_id in self._persons:
            libsumo.person.moveToXY(sumo_id, "", fx, fy, angle, 2)
        else:
            libsumo.vehicle.moveToXY(sumo_id, "", -1, fx, fy, angle, 2)
