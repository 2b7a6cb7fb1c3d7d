"""Variants of the expert for mixed datasets: behaviours a reward should rank below the expert's.

A reward learnt or designed for safe driving is only tested when the data holds unsafe driving beside safe
driving in the same situations. Each variant is the expert with one flaw, named in the rows' ``policy``
column so that an audit can compare rewards per behaviour:

* ``expert-reckless``: does not yield to pedestrians or cyclists (drives as if they were not there);
* ``expert-ignores-cars``: does not brake for cars or motorcycles (runs into a braking lead car);
* ``expert-fast``: drives at 40 km/h instead of 25;
* ``expert-ignores-lights``: drives through red lights;
* ``expert-noisy``: the expert's action plus seeded Gaussian noise, clipped to the action range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from collect.backend import Observation
from collect.policies.base import Policy
from collect.policies.expert import ExpertConfig, ExpertPolicy


@dataclass(frozen=True)
class NoisyConfig:
    """Standard deviations of the Gaussian noise added to each action channel, and the expert underneath."""

    steer_sigma: float = 0.1
    accel_sigma: float = 0.3
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        for name in ("steer_sigma", "accel_sigma"):
            if not 0.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"NoisyConfig.{name} must be in [0, 2], got {getattr(self, name)!r}")


class NoisyExpert:
    """The expert's action plus ``N(0, sigma)`` per channel, clipped to [-1, 1]; the episode seed seeds the noise."""

    def __init__(self, config: NoisyConfig | None = None, name: str = "expert-noisy", seed: int = 0) -> None:
        self.config = config or NoisyConfig()
        self.name = name
        self.expert = ExpertPolicy(self.config.expert)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self.expert.reset(seed)

    def act(self, obs: Observation, bev: np.ndarray | None = None) -> np.ndarray:
        noise = self._rng.normal(0.0, (self.config.steer_sigma, self.config.accel_sigma))
        return np.clip(self.expert.act(obs, bev) + noise, -1.0, 1.0).astype(np.float32)


#: The variants by name: an expert config (the expert with other settings) or a noisy expert's config.
VARIANTS: dict[str, ExpertConfig | NoisyConfig] = {
    "expert-reckless": ExpertConfig(ignore=("pedestrian", "cyclist")),
    "expert-ignores-cars": ExpertConfig(ignore=("vehicle", "motorcycle")),
    "expert-fast": ExpertConfig(target_speed=40.0 / 3.6),
    "expert-ignores-lights": ExpertConfig(obey_lights=False),
    "expert-noisy": NoisyConfig(),
}


def make_variant(name: str, seed: int = 0) -> Policy:
    """The variant ``name`` of ``VARIANTS``; ``seed`` seeds a noisy one (episodes reseed it)."""
    config = VARIANTS[name]
    if isinstance(config, NoisyConfig):
        return NoisyExpert(config, name, seed)
    return ExpertPolicy(config, name)
