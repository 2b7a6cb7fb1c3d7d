"""The SAC policy driving the simulator during online rounds: a collect ``Policy`` around a train agent.

It lives at the top floor because it joins two stages: collect's live observations and train's networks,
through the state vector both take from ``data_schema.features``.
"""

from __future__ import annotations

import numpy as np
import torch
from d3rlpy.algos import SAC

from collect import Observation, observation_state
from data_schema.schema import ACTION_SIZE
from train.agent import bev_size_of, policy_input

__all__ = ["SacDriver"]


class SacDriver:
    """Samples actions from the SAC policy (its own exploration noise).

    ``random_steps`` first actions are uniform in [-1, 1] instead, so the first round explores before the
    networks have learnt anything (``TrainConfig.learning_starts``).
    """

    def __init__(self, agent: SAC, name: str, random_steps: int = 0, seed: int = 0) -> None:
        self.agent = agent
        self.name = name
        self.random_steps = random_steps
        self._bev_size = bev_size_of(agent)
        self._rng = np.random.default_rng(seed)
        self.steps = 0

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        torch.manual_seed(seed)

    def act(self, obs: Observation, bev: np.ndarray) -> np.ndarray:
        self.steps += 1
        if self.steps <= self.random_steps:
            return self._rng.uniform(-1.0, 1.0, ACTION_SIZE).astype(np.float32)
        action = self.agent.sample_action(policy_input(bev, observation_state(obs), self._bev_size))[0]
        return np.clip(action, -1.0, 1.0).astype(np.float32)
