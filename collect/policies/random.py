"""A seeded random driver: smooth random steering and throttle/brake, for exploration data and tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collect.backend import Observation


@dataclass(frozen=True)
class RandomConfig:
    """Ornstein-Uhlenbeck noise per action channel: ``theta`` pulls back to ``mean``, ``sigma`` is its kick."""

    theta: float = 0.15
    sigma: float = 0.25
    steer_mean: float = 0.0
    accel_mean: float = 0.3  # biased to throttle so episodes move

    def __post_init__(self) -> None:
        if not 0.0 < self.theta <= 1.0:
            raise ValueError(f"RandomConfig.theta must be in (0, 1], got {self.theta}")
        if self.sigma < 0:
            raise ValueError(f"RandomConfig.sigma must be >= 0, got {self.sigma}")
        for name in ("steer_mean", "accel_mean"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"RandomConfig.{name} must be in [-1, 1], got {getattr(self, name)}")


class RandomPolicy:
    """Temporally correlated random actions; the same seed gives the same action sequence."""

    name = "random"

    def __init__(self, config: RandomConfig | None = None, seed: int = 0) -> None:
        self.config = config or RandomConfig()
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._mean = np.array([self.config.steer_mean, self.config.accel_mean])
        self._state = self._mean.copy()

    def act(self, obs: Observation, bev: np.ndarray | None = None) -> np.ndarray:
        cfg = self.config
        self._state = self._state + cfg.theta * (self._mean - self._state) + cfg.sigma * self._rng.standard_normal(2)
        self._state = np.clip(self._state, -1.0, 1.0)
        return self._state.astype(np.float32)
