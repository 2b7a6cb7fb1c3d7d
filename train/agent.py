"""The SAC agent (d3rlpy) on ``(bev, state)`` observations: creation, atomic save, load, and a driving policy.

Checkpoints are d3rlpy's own ``save`` format (config + networks + optimiser states), so
``d3rlpy.load_learnable`` restores them once ``train.encoder`` is imported. ``load_agent`` does that import.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import d3rlpy
import numpy as np
import torch
from d3rlpy.algos import SAC, SACConfig

from collect.backend import Observation
from collect.policies.base import observation_state
from data_schema.features import STATE_DIM
from data_schema.schema import ACTION_SIZE
from train.config import TrainConfig
from train.encoder import BevStateEncoderFactory, downsample_bev


def observation_shape(config: TrainConfig) -> tuple[tuple[int, int, int], tuple[int]]:
    return (3, config.bev_size, config.bev_size), (STATE_DIM,)


def create_agent(config: TrainConfig) -> SAC:
    """A freshly initialised SAC whose actor and critics share the architecture (not the weights)."""
    torch.manual_seed(config.seed)
    encoder = BevStateEncoderFactory(
        cnn_channels=list(config.cnn_channels),
        state_units=config.state_units,
        feature_size=config.feature_size,
        hidden_units=list(config.hidden_units),
    )
    sac = SACConfig(
        batch_size=config.batch_size,
        gamma=config.gamma,
        tau=config.tau,
        actor_learning_rate=config.actor_lr,
        critic_learning_rate=config.critic_lr,
        temp_learning_rate=config.temp_lr,
        initial_temperature=config.initial_temperature,
        n_critics=config.n_critics,
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
    ).create(device=config.device)
    sac.create_impl(observation_shape(config), ACTION_SIZE)
    return sac


def save_agent(agent: SAC, path: str | Path) -> None:
    """``agent.save`` to a tmp file renamed into place: a kill never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        agent.save(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_agent(path: str | Path, device: str = "cpu") -> SAC:
    """A SAC checkpoint written by ``save_agent`` (a run's own file: d3rlpy's format is a pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    agent = d3rlpy.load_learnable(str(path), device=device)
    if not isinstance(agent, SAC):
        raise ValueError(f"checkpoint {path}: holds a {type(agent).__name__}, expected a SAC agent")
    return agent


def bev_size_of(agent: SAC) -> int:
    """The BEV side the agent's networks take, read from the agent itself."""
    assert agent.impl is not None
    return int(agent.impl.observation_shape[0][1])


def observation_from(obs: Observation, bev: np.ndarray, bev_size: int) -> list[np.ndarray]:
    """A batch of one d3rlpy observation from a collector observation and its rendered ``HxWx3`` BEV."""
    state = observation_state(obs)
    frame = torch.from_numpy(np.ascontiguousarray(bev.transpose(2, 0, 1)))[None]
    return [downsample_bev(frame, bev_size).numpy(), state.reshape(1, STATE_DIM)]


class SacDriver:
    """The collector's ``Policy`` for online rounds: samples from the SAC policy (its own exploration noise).

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
        action = self.agent.sample_action(observation_from(obs, bev, self._bev_size))[0]
        return np.clip(action, -1.0, 1.0).astype(np.float32)
