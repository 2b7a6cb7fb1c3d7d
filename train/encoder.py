"""The observation encoder: one BEV trunk (a small CNN on the downsampled BEV and an MLP on the state vector)
that the actor and the critics share, and an MLP head per network on top of it.

Observations are d3rlpy tuple observations ``(bev, state)``: ``bev`` ``[B, 3, S, S]`` with values 0..255 (uint8
from replay, float from d3rlpy's ``predict``), ``state`` float32 ``[B, STATE_DIM]`` from ``data_schema.features``.
A head takes either such an observation (it then runs the trunk itself: acting, export) or the
``TrunkFeatures`` an update computed once for the whole batch (``train.sac``). The factory is registered with
d3rlpy under the type name ``bev_state`` so that ``d3rlpy.load_learnable`` can rebuild a saved agent:
import this module (``train.agent`` does) before loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from d3rlpy.models.encoders import EncoderFactory, register_encoder_factory
from d3rlpy.models.torch import Encoder, EncoderWithAction
from torch import nn

__all__ = [
    "BevStateEncoder", "BevStateEncoderFactory", "BevStateEncoderWithAction", "BevStateTrunk", "TrunkFeatures", "downsample_bev",
    "scale_bev",
]  # fmt: skip


def downsample_bev(bev: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` frames as uint8 ``[B, 3, size, size]``, averaging each source area and rounding.

    Replay and the exported policy both call this, so the network sees the same pixels in training and in
    deployment. It has no branches, so it traces into TorchScript for any input size.
    """
    return F.interpolate(bev.float(), size=(size, size), mode="area").round().to(torch.uint8)


def scale_bev(bev: torch.Tensor) -> torch.Tensor:
    """BEV pixels 0..255 (any dtype) as float 0..1: the trunk's input. An update calls it once per batch of
    frames; acting and the export call it through the heads, so both see bit-identical inputs."""
    return bev.float() / 255.0


class TrunkFeatures(NamedTuple):
    """The trunk's output for a batch, computed once per update and handed to every head in place of the
    observation. A tuple, so d3rlpy's helpers read its batch size and device as they do an observation's."""

    features: torch.Tensor


def _split(observation_shape: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], int]:
    shapes = [tuple(int(d) for d in s) for s in observation_shape]
    if len(shapes) != 2 or len(shapes[0]) != 3 or len(shapes[1]) != 1:
        raise ValueError(f"bev_state encoder expects observation shapes ((3, S, S), (STATE_DIM,)), got {observation_shape}")
    return shapes[0], shapes[1][0]  # type: ignore[return-value]


class BevStateTrunk(nn.Module):
    """BEV and state features fused into one vector: the part of every network that sees pixels, and so
    nearly all of an update's arithmetic.

    The CNN runs channels-last with in-place ReLUs: oneDNN's convolutions skip a layout reorder per layer
    and no activation is allocated twice (``bench/train.py`` measures it; the weights and results are the
    same as with the default layout).
    """

    def __init__(
        self, bev_shape: tuple[int, int, int], state_dim: int, cnn_channels: Sequence[int], state_units: int, feature_size: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = bev_shape[0]
        for i, out_channels in enumerate(cnn_channels):
            kernel = 5 if i == 0 else 3
            layers += [nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2), nn.ReLU(inplace=True)]
            in_channels = out_channels
        layers.append(nn.Flatten())
        self.cnn = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, *bev_shape)).shape[1]
        self.bev_head = nn.Sequential(nn.Linear(flat, feature_size), nn.LayerNorm(feature_size), nn.ReLU())
        self.state_mlp = nn.Sequential(nn.Linear(state_dim, state_units), nn.ReLU())
        self.output_size = feature_size + state_units

    def forward(self, bev: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``bev`` scaled by ``scale_bev``."""
        image = self.cnn(bev.contiguous(memory_format=torch.channels_last))
        return torch.cat([self.bev_head(image), self.state_mlp(state)], dim=1)

    def observe(self, x: Sequence[torch.Tensor] | TrunkFeatures) -> torch.Tensor:
        """The features of ``x``: given (``TrunkFeatures``), or computed from a raw ``(bev, state)`` observation."""
        if isinstance(x, TrunkFeatures):
            return x.features
        bev, state = x
        return self(scale_bev(bev), state)


def _mlp(in_size: int, hidden_units: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for units in hidden_units:
        layers += [nn.Linear(in_size, units), nn.ReLU()]
        in_size = units
    return nn.Sequential(*layers)


class BevStateEncoder(Encoder):
    """The actor's encoder: its own MLP on the trunk's features. The trunk is a submodule, so the policy
    alone acts (and exports) from raw observations."""

    def __init__(self, trunk: BevStateTrunk, hidden_units: Sequence[int]) -> None:
        super().__init__()
        self.trunk = trunk
        self.mlp = _mlp(trunk.output_size, hidden_units)

    def forward(self, x: Sequence[torch.Tensor] | TrunkFeatures) -> torch.Tensor:  # type: ignore[override]
        return self.mlp(self.trunk.observe(x))


class BevStateEncoderWithAction(EncoderWithAction):
    """A critic's encoder: its own MLP on the trunk's features and the action."""

    def __init__(self, trunk: BevStateTrunk, action_size: int, hidden_units: Sequence[int]) -> None:
        super().__init__()
        self.trunk = trunk
        self.mlp = _mlp(trunk.output_size + action_size, hidden_units)

    def forward(self, x: Sequence[torch.Tensor] | TrunkFeatures, action: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.mlp(torch.cat([self.trunk.observe(x), action], dim=1))


@dataclass()
class BevStateEncoderFactory(EncoderFactory):
    """d3rlpy encoder factory for ``(bev, state)`` tuple observations.

    ``create`` / ``create_with_action`` build an encoder around ``trunk`` when one is given (``train.sac``
    shares one trunk between the actor and the critics), else around a trunk of their own (what d3rlpy's own
    algorithms get).
    """

    cnn_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    state_units: int = 64
    feature_size: int = 256
    hidden_units: list[int] = field(default_factory=lambda: [256, 256])

    def create_trunk(self, observation_shape: Sequence[Sequence[int]]) -> BevStateTrunk:
        bev_shape, state_dim = _split(observation_shape)
        return BevStateTrunk(bev_shape, state_dim, self.cnn_channels, self.state_units, self.feature_size)

    def create(  # type: ignore[override]
        self, observation_shape: Sequence[Sequence[int]], trunk: BevStateTrunk | None = None
    ) -> BevStateEncoder:
        return BevStateEncoder(trunk or self.create_trunk(observation_shape), self.hidden_units)

    def create_with_action(  # type: ignore[override]
        self,
        observation_shape: Sequence[Sequence[int]],
        action_size: int,
        discrete_action: bool = False,
        trunk: BevStateTrunk | None = None,
    ) -> BevStateEncoderWithAction:
        if discrete_action:
            raise ValueError("bev_state encoder supports continuous actions only")
        return BevStateEncoderWithAction(trunk or self.create_trunk(observation_shape), action_size, self.hidden_units)

    @staticmethod
    def get_type() -> str:
        return "bev_state"


register_encoder_factory(BevStateEncoderFactory)
