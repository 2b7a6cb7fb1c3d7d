"""What a label's reward means as a function of the stored components (SPEC §4, defaults from VLM-RL).

The semantic score turns the CLIP pathways into a desired speed; the reward is the product of how well the
ego tracks that speed, stays centred, stays aligned and drives steadily, replaced by a fixed penalty on
collision, off-road or stuck. It is part of the dataset contract: annotate writes labels with
:func:`synthesize`, and train recomputes rewards from the stored components under other
:class:`RewardConfig` values (``--reward-from-components``) without running any model again.
Pure numpy, vectorised, one call per shard or table.

Units: ``speed`` and ``desired_speed`` in m/s, lateral offsets in m, heading errors in rad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from data_schema.episodes import EpisodeOrder

__all__ = ["COMPONENT_COLUMNS", "PENALTY_EVENTS", "REWARD_RAW_COLUMNS", "RewardConfig", "SYNTHESIS_COLUMNS", "synthesize"]

#: Raw step columns the synthesis reads.
REWARD_RAW_COLUMNS = ("episode_id", "step", "speed", "lateral_offset", "heading_error", "collision", "off_road", "stuck")
#: Stored label columns the synthesis starts from.
COMPONENT_COLUMNS = ("r_static", "r_dynamic")
#: Label columns the synthesis writes.
SYNTHESIS_COLUMNS = ("semantic", "desired_speed", "f_speed", "f_center", "f_angle", "f_stability", "penalty", "reward")
#: Events that may replace the reward by the penalty.
PENALTY_EVENTS = ("collision", "off_road", "stuck")


@dataclass(frozen=True)
class RewardConfig:
    """Parameters of the synthesis; part of the label-set spec (changing one changes the hash)."""

    theta_min: float = -0.03
    theta_max: float = 0.0
    target_speed_kmh: float = 25.0
    center_scale_m: float = 3.0
    angle_scale_rad: float = math.pi / 2
    stability_window: int = 30
    stability_scale_m: float = 0.4
    penalty: float = -10.0
    penalize: tuple[str, ...] = PENALTY_EVENTS

    def __post_init__(self) -> None:
        if not self.theta_min < self.theta_max:
            raise ValueError(f"theta_min ({self.theta_min}) must be below theta_max ({self.theta_max})")
        for name in ("target_speed_kmh", "center_scale_m", "angle_scale_rad", "stability_scale_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.stability_window < 1:
            raise ValueError(f"stability_window must be at least 1, got {self.stability_window}")
        if not (math.isfinite(self.penalty) and self.penalty <= 0):
            raise ValueError(f"penalty must be a finite value <= 0 (0 is the no-penalty ablation), got {self.penalty}")
        unknown = [e for e in self.penalize if e not in PENALTY_EVENTS]
        if unknown:
            raise ValueError(f"penalize: unknown event(s) {unknown}; choose from {list(PENALTY_EVENTS)}")

    @property
    def target_speed(self) -> float:
        """Target speed in m/s."""
        return self.target_speed_kmh / 3.6


def semantic(r_static: np.ndarray, r_dynamic: np.ndarray, config: RewardConfig) -> np.ndarray:
    """(clip(r_static + r_dynamic, theta_min, theta_max) - theta_min) / (theta_max - theta_min), in [0, 1]."""
    total = np.clip(np.asarray(r_static, np.float64) + np.asarray(r_dynamic, np.float64), config.theta_min, config.theta_max)
    return (total - config.theta_min) / (config.theta_max - config.theta_min)


def speed_factor(speed: np.ndarray, desired_speed: np.ndarray, config: RewardConfig) -> np.ndarray:
    """1 - |v - desired| / target: 1 on the desired speed, negative far above the target."""
    return 1.0 - np.abs(np.asarray(speed, np.float64) - desired_speed) / config.target_speed


def center_factor(lateral_offset: np.ndarray, config: RewardConfig) -> np.ndarray:
    return np.maximum(1.0 - np.abs(np.asarray(lateral_offset, np.float64)) / config.center_scale_m, 0.0)


def angle_factor(heading_error: np.ndarray, config: RewardConfig) -> np.ndarray:
    return np.maximum(1.0 - np.abs(np.asarray(heading_error, np.float64)) / config.angle_scale_rad, 0.0)


def rolling_std(values: np.ndarray, episode_id: np.ndarray, step: np.ndarray, window: int) -> np.ndarray:
    """Population std of the last ``window`` values up to and including each row, within its episode.

    Rows may come in any order; episodes are told apart by ``episode_id`` and ordered by ``step``. Early
    rows of an episode use the values available so far (the first row's std is 0).
    """
    values = np.asarray(values, np.float64)
    n = len(values)
    if n == 0:
        return np.zeros(0)
    episodes = EpisodeOrder.of(episode_id, step)
    padded = np.concatenate([np.full(window - 1, np.nan), values[episodes.order]])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window).copy()
    lag = np.arange(window - 1, -1, -1)
    windows[lag[None, :] > episodes.rows_before()[:, None]] = np.nan  # what lies before the episode's start
    out = np.empty(n)
    out[episodes.order] = np.nanstd(windows, axis=1)
    return out


def stability_factor(lateral_offset: np.ndarray, episode_id: np.ndarray, step: np.ndarray, config: RewardConfig) -> np.ndarray:
    spread = rolling_std(lateral_offset, episode_id, step, config.stability_window)
    return np.maximum(1.0 - spread / config.stability_scale_m, 0.0)


def penalised(columns: Mapping[str, Any], config: RewardConfig) -> np.ndarray:
    """Rows whose reward the penalty replaces: any of the configured events observed on arrival."""
    n = len(np.asarray(columns["speed"]))
    mask = np.zeros(n, dtype=bool)
    for event in config.penalize:
        mask |= np.asarray(columns[event], dtype=bool)
    return mask


def synthesize(columns: Mapping[str, Any], config: RewardConfig) -> dict[str, np.ndarray]:
    """All synthesis columns (``SYNTHESIS_COLUMNS``, float32) from components and raw columns.

    ``columns`` maps names to array-likes (a pandas DataFrame, a pyarrow Table or a dict of arrays) and
    must hold ``COMPONENT_COLUMNS`` and ``REWARD_RAW_COLUMNS``.
    """
    missing = [c for c in COMPONENT_COLUMNS + REWARD_RAW_COLUMNS if c not in _names(columns)]
    if missing:
        raise KeyError(f"reward synthesis needs column(s) {missing}")
    arrays = {c: np.asarray(columns[c]) for c in COMPONENT_COLUMNS + REWARD_RAW_COLUMNS}
    sem = semantic(arrays["r_static"], arrays["r_dynamic"], config)
    desired = sem * config.target_speed
    f_speed = speed_factor(arrays["speed"], desired, config)
    f_center = center_factor(arrays["lateral_offset"], config)
    f_angle = angle_factor(arrays["heading_error"], config)
    f_stability = stability_factor(arrays["lateral_offset"], arrays["episode_id"], arrays["step"], config)
    hit = penalised(arrays, config)
    penalty = np.where(hit, config.penalty, 0.0)
    reward = np.where(hit, config.penalty, f_speed * f_center * f_angle * f_stability)
    out = {
        "semantic": sem,
        "desired_speed": desired,
        "f_speed": f_speed,
        "f_center": f_center,
        "f_angle": f_angle,
        "f_stability": f_stability,
        "penalty": penalty,
        "reward": reward,
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def _names(columns: Any) -> set[str]:
    names = getattr(columns, "column_names", None)
    if names is None:
        names = columns.keys() if hasattr(columns, "keys") else columns.columns
    return set(names)
