"""Collect: simulator backends (SUMO embedded, CARLA), the BEV rasteriser, policies, and the rollout writer that
turns episodes into raw shards of ``data_schema``.

What other stages use is named here. Importing the package starts no simulator and imports neither libsumo,
the carla wheel nor torch: a backend loads its simulator when an ``EnvSpec`` is built, a TorchScript policy
loads torch when one is made.
"""

from collect.backend import Backend, Controls, Events, Observation
from collect.backends import DEFAULT_NET, CarlaConfig, CarlaUnavailable, SumoConfig
from collect.bev import BevConfig, BevPalette, BevRasteriser
from collect.collector import CollectSummary, collect_episodes, default_run_id
from collect.env import OUTCOMES, SIMULATORS, DrivingEnv, EnvSpec, EnvStep, EpisodeLimits
from collect.policies import BUILTIN, Policy, make_policy, observation_state
from collect.rollout import EpisodeSummary, RolloutWriter, ShardSummary, drive, run_episode
from collect.route import Route, RouteState, route_state
from collect.scenarios import FREE, SCENARIOS, check_scenarios, scenario_for
from collect.scene import Agent, Lane, MapGeometry, Pose, Scene, TrafficLight

__all__ = [
    "BUILTIN",
    "DEFAULT_NET",
    "FREE",
    "OUTCOMES",
    "SCENARIOS",
    "SIMULATORS",
    "Agent",
    "Backend",
    "BevConfig",
    "BevPalette",
    "BevRasteriser",
    "CarlaConfig",
    "CarlaUnavailable",
    "CollectSummary",
    "Controls",
    "DrivingEnv",
    "EnvSpec",
    "EnvStep",
    "EpisodeLimits",
    "EpisodeSummary",
    "Events",
    "Lane",
    "MapGeometry",
    "Observation",
    "Policy",
    "Pose",
    "RolloutWriter",
    "Route",
    "RouteState",
    "Scene",
    "ShardSummary",
    "SumoConfig",
    "TrafficLight",
    "check_scenarios",
    "collect_episodes",
    "default_run_id",
    "drive",
    "make_policy",
    "observation_state",
    "route_state",
    "run_episode",
    "scenario_for",
]
