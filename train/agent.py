"""The agent (d3rlpy: SAC, or an offline algorithm of ``train.algorithms``) on ``(bev, state)`` observations:
creation, atomic save, load, and its input.

Checkpoints are d3rlpy's own ``save`` format (config + networks + optimiser states); they are read back by
``train.checkpoints.read_checkpoint``: the same result as ``d3rlpy.load_learnable`` once ``train.sac`` and
``train.encoder`` are imported (this module imports both, through ``train.algorithms``), but without
unpickling code. SAC checkpoints of a plain d3rlpy SAC with the same encoder factory (runs from before the
trunk was shared) still load, as that SAC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_schema.features import STATE_DIM
from data_schema.schema import ACTION_SIZE
from data_schema.storage import atomic_path
from train.algorithms import Agent, algorithm_config
from train.checkpoints import read_checkpoint
from train.config import TrainConfig
from train.encoder import BevStateEncoderFactory, downsample_bev

__all__ = ["bev_size_of", "create_agent", "load_agent", "observation_shape", "policy_input", "save_agent"]


def observation_shape(config: TrainConfig) -> tuple[tuple[int, int, int], tuple[int]]:
    return (3, config.bev_size, config.bev_size), (STATE_DIM,)


def create_agent(config: TrainConfig) -> Agent:
    """A freshly initialised ``config.algo`` agent whose networks share the architecture (not the weights)."""
    torch.manual_seed(config.seed)
    encoder = BevStateEncoderFactory(
        cnn_channels=list(config.cnn_channels),
        state_units=config.state_units,
        feature_size=config.feature_size,
        hidden_units=list(config.hidden_units),
    )
    agent = algorithm_config(config, encoder).create(device=config.device)
    agent.create_impl(observation_shape(config), ACTION_SIZE)
    return agent


def save_agent(agent: Agent, path: str | Path) -> None:
    """``agent.save`` through ``data_schema.storage.atomic_path``: a kill never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        agent.save(str(tmp))


def load_agent(path: str | Path, device: str = "cpu") -> Agent:
    """A checkpoint written by ``save_agent``; a file that is not one is refused unread (``train.checkpoints``)."""
    agent = read_checkpoint(path, device)
    if not isinstance(agent, Agent):
        raise ValueError(f"checkpoint {path}: holds a {type(agent).__name__}, not an agent of train.algorithms")
    return agent


def bev_size_of(agent: Agent) -> int:
    """The BEV side the agent's networks take, read from the agent itself."""
    assert agent.impl is not None
    return int(agent.impl.observation_shape[0][1])


def policy_input(bev: np.ndarray, state: np.ndarray, bev_size: int) -> list[np.ndarray]:
    """A batch of one d3rlpy observation from a rendered ``HxWx3`` BEV and its state vector
    (``data_schema.features``), downsampled exactly as replay downsamples stored frames."""
    frame = torch.from_numpy(np.ascontiguousarray(bev.transpose(2, 0, 1)))[None]
    return [downsample_bev(frame, bev_size).numpy(), np.asarray(state, np.float32).reshape(1, STATE_DIM)]
