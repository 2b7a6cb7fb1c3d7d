"""What a driving policy is to the collector."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from collect.backend import Observation
from data_schema.features import state_vector


class Policy(Protocol):
    """Maps an observation (and its rendered BEV) to an action ``[steer, throttle (>0) / brake (<0)]``.

    ``name`` is written to every row's ``policy`` column: ``random``, ``expert`` or a checkpoint hash.
    A trained policy reaches the collector as a TorchScript file exported by ``pipeline export`` whose
    ``forward(bev: uint8[B, 3, H, W], state: float32[B, STATE_DIM]) -> float32[B, 2]`` takes the BEV and the
    state vector of ``data_schema.features``; the collector never needs the training code to run it.
    """

    name: str

    def reset(self, seed: int) -> None: ...

    def act(self, obs: Observation, bev: np.ndarray) -> np.ndarray: ...


def observation_state(obs: Observation) -> np.ndarray:
    """The state vector a trained policy sees for a live observation: the same ``data_schema.features``
    computation that replay applies to the stored columns, so training and driving cannot disagree."""
    controls, route = obs.controls, obs.route
    return state_vector(obs.speed, controls.steer, controls.throttle, controls.brake, route.lateral_offset, route.heading_error, route.ahead)
