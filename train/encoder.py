"""The observation encoder: a small CNN on the downsampled BEV and an MLP on the state vector.

Observations are d3rlpy tuple observations ``(bev, state)``: ``bev`` uint8 ``[B, 3, S, S]`` (d3rlpy hands
it over as float 0..255), ``state`` float32 ``[B, STATE_DIM]`` from ``data_schema.features``. The factory is
registered with d3rlpy under the type name ``bev_state`` so that ``d3rlpy.load_learnable`` can rebuild a
saved agent: import this module (``train.agent`` does) before loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from d3rlpy.models.encoders import EncoderFactory, register_encoder_factory
from d3rlpy.models.torch import Encoder, EncoderWithAction
from torch import nn


def downsample_bev(bev: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` frames as uint8 ``[B, 3, size, size]``, averaging each source area and rounding.

    Replay and the exported policy both call this, so the network sees the same pixels in training and in
    deployment. It has no branches, so it traces into TorchScript for any input size.
    """
    return F.interpolate(bev.float(), size=(size, size), mode="area").round().to(torch.uint8)


def _split(observation_shape: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], int]:
    shapes = [tuple(int(d) for d in s) for s in observation_shape]
    if len(shapes) != 2 or len(shapes[0]) != 3 or len(shapes[1]) != 1:
        raise ValueError(f"bev_state encoder expects observation shapes ((3, S, S), (STATE_DIM,)), got {observation_shape}")
    return shapes[0], shapes[1][0]  # type: ignore[return-value]


class _Trunk(nn.Module):
    """BEV and state features fused into one vector; shared by the actor and critic encoders."""

    def __init__(
        self, bev_shape: tuple[int, int, int], state_dim: int, cnn_channels: Sequence[int], state_units: int, feature_size: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = bev_shape[0]
        for i, out_channels in enumerate(cnn_channels):
            kernel = 5 if i == 0 else 3
            layers += [nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.Flatten())
        self.cnn = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, *bev_shape)).shape[1]
        self.bev_head = nn.Sequential(nn.Linear(flat, feature_size), nn.LayerNorm(feature_size), nn.ReLU())
        self.state_mlp = nn.Sequential(nn.Linear(state_dim, state_units), nn.ReLU())
        self.output_size = feature_size + state_units

    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        image = self.bev_head(self.cnn(bev / 255.0))
        return torch.cat([image, self.state_mlp(state)], dim=1)


def _mlp(in_size: int, hidden_units: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for units in hidden_units:
        layers += [nn.Linear(in_size, units), nn.ReLU()]
        in_size = units
    return nn.Sequential(*layers)


class BevStateEncoder(Encoder):
    def __init__(
        self,
        observation_shape: Sequence[Sequence[int]],
        cnn_channels: Sequence[int],
        state_units: int,
        feature_size: int,
        hidden_units: Sequence[int],
    ) -> None:
        super().__init__()
        bev_shape, state_dim = _split(observation_shape)
        self.trunk = _Trunk(bev_shape, state_dim, cnn_channels, state_units, feature_size)
        self.mlp = _mlp(self.trunk.output_size, hidden_units)

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        bev, state = x
        return self.mlp(self.trunk(bev, state))


class BevStateEncoderWithAction(EncoderWithAction):
    def __init__(
        self,
        observation_shape: Sequence[Sequence[int]],
        action_size: int,
        cnn_channels: Sequence[int],
        state_units: int,
        feature_size: int,
        hidden_units: Sequence[int],
    ) -> None:
        super().__init__()
        bev_shape, state_dim = _split(observation_shape)
        self.trunk = _Trunk(bev_shape, state_dim, cnn_channels, state_units, feature_size)
        self.mlp = _mlp(self.trunk.output_size + action_size, hidden_units)

    def forward(self, x: Sequence[torch.Tensor], action: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        bev, state = x
        return self.mlp(torch.cat([self.trunk(bev, state), action], dim=1))


@dataclass()
class BevStateEncoderFactory(EncoderFactory):
    """d3rlpy encoder factory for ``(bev, state)`` tuple observations."""

    cnn_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    state_units: int = 64
    feature_size: int = 256
    hidden_units: list[int] = field(default_factory=lambda: [256, 256])

    def create(self, observation_shape: Sequence[Sequence[int]]) -> BevStateEncoder:  # type: ignore[override]
        return BevStateEncoder(observation_shape, self.cnn_channels, self.state_units, self.feature_size, self.hidden_units)

    def create_with_action(  # type: ignore[override]
        self, observation_shape: Sequence[Sequence[int]], action_size: int, discrete_action: bool = False
    ) -> BevStateEncoderWithAction:
        if discrete_action:
            raise ValueError("bev_state encoder supports continuous actions only")
        return BevStateEncoderWithAction(
            observation_shape, action_size, self.cnn_channels, self.state_units, self.feature_size, self.hidden_units
        )

    @staticmethod
    def get_type() -> str:
        return "bev_state"


register_encoder_factory(BevStateEncoderFactory)
