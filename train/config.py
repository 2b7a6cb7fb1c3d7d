"""Training settings: one frozen dataclass, stored in every run directory so a resumed run trains the same way.

Defaults follow the brief's SAC settings (batch 256, gamma 0.99, tau 0.005, learning rate 3e-4) and VLM-RL's
``SAC_CLIP`` config where the brief is silent: a 100k-transition buffer, 10k transitions before the first
update, one gradient update per collected step (VLM-RL: ``train_freq = gradient_steps = 64``) and a
256-wide feature layer. VLM-RL itself trains with gamma 0.98, tau 0.02 and a learning rate decaying from
1e-4; pass ``--gamma 0.98 --tau 0.02 --lr 1e-4`` to match it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from data_schema.settings import build
from train.algorithms import ALGORITHMS

__all__ = ["FRAME_CODECS", "TrainConfig"]

FRAME_CODECS = ("raw", "zstd")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a run learns (not where its data lives)."""

    # the algorithm (train.algorithms): sac online or offline; iql, td3+bc, cql, bc offline
    algo: str = "sac"
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temp_lr: float = 3e-4
    initial_temperature: float = 1.0
    n_critics: int = 2
    # networks: a small CNN on the downsampled BEV, an MLP on the state vector
    bev_size: int = 64  # BEV side in pixels as the network sees it (area-downsampled from the stored frame)
    cnn_channels: tuple[int, ...] = (16, 32, 32)
    state_units: int = 64
    feature_size: int = 256
    hidden_units: tuple[int, ...] = (256, 256)
    # replay
    buffer_limit: int = 100_000  # transitions; the oldest shards leave first (FIFO)
    frame_codec: str = "zstd"  # how replay keeps frames in memory: raw uint8 arrays, or zstd-compressed per frame
    learning_starts: int = 10_000  # labelled transitions in the buffer before the first update
    updates_per_step: float = 1.0  # gradient updates per collected step (online)
    # online rounds
    steps_per_round: int = 5_000  # environment steps collected per round
    rounds: int = 20
    max_episode_steps: int = 1_000
    episodes_per_shard: int = 8  # whole episodes per raw shard: the unit of annotation and of replay
    # offline
    offline_steps: int = 100_000
    checkpoint_every: int = 5_000  # offline: gradient updates between checkpoints
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 0  # torch threads of gradient updates; 0: the pipeline's thread budget decides (pipeline.threads)

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_critics", "bev_size", "state_units", "feature_size", "buffer_limit", "steps_per_round",
                     "rounds", "max_episode_steps", "episodes_per_shard", "offline_steps", "checkpoint_every"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"TrainConfig.gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"TrainConfig.tau must be in (0, 1], got {self.tau}")
        for name in ("actor_lr", "critic_lr", "initial_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.torch_threads < 0:
            raise ValueError(f"TrainConfig.torch_threads must be >= 0 (0: the thread budget's), got {self.torch_threads}")
        if self.temp_lr < 0:
            raise ValueError(f"TrainConfig.temp_lr must be >= 0 (0 keeps the temperature fixed), got {self.temp_lr}")
        if self.learning_starts < 0 or self.updates_per_step < 0:
            raise ValueError("TrainConfig.learning_starts and updates_per_step must be >= 0")
        if self.learning_starts > self.buffer_limit:
            raise ValueError(
                f"TrainConfig.learning_starts {self.learning_starts} exceeds buffer_limit {self.buffer_limit}: the buffer "
                "could never hold enough transitions and training would never start"
            )
        if not self.cnn_channels or min(self.cnn_channels) < 1 or not self.hidden_units or min(self.hidden_units) < 1:
            raise ValueError("TrainConfig.cnn_channels and hidden_units need at least one layer, each of width >= 1")
        if self.bev_size < 4 * 2 ** (len(self.cnn_channels) - 1):
            raise ValueError(f"TrainConfig.bev_size {self.bev_size} is too small for {len(self.cnn_channels)} stride-2 conv layers")
        if self.algo not in ALGORITHMS:
            raise ValueError(f"TrainConfig.algo must be one of {ALGORITHMS}, got {self.algo!r}")
        if self.frame_codec not in FRAME_CODECS:
            raise ValueError(f"TrainConfig.frame_codec must be one of {FRAME_CODECS}, got {self.frame_codec!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "training settings") -> "TrainConfig":
        """A config from ``to_dict`` output or CLI overrides, every value type-checked (``data_schema.settings``):
        an unknown key or a bad value is a ConfigError naming it and ``source``."""
        return build(cls, values, source)

