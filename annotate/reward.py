"""Reward synthesis (SPEC §4, defaults from VLM-RL): pure numpy, vectorised, one call per shard or table.

The semantic score turns the CLIP pathways into a desired speed; the reward is the product of how well the
ego tracks that speed, stays centred, stays aligned and drives steadily, replaced by a fixed penalty on
collision, off-road or stuck. ``train`` calls :func:`recompute` with other :class:`RewardConfig` values to
relabel a dataset from the stored components without running any model again, so this module imports
nothing from the rest of ``annotate``.

Units: ``speed`` and ``desired_speed`` in m/s, lateral offsets in m, heading errors in rad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

#: Raw step columns the synthesis reads.
RAW_COLUMNS = ("episode_id", "step", "speed", "lateral_offset", "heading_error", "collision", "off_road", "stuck")
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
    episode_codes = np.unique(np.asarray(episode_id), return_inverse=True)[1]
    order = np.lexsort((np.asarray(step), episode_codes))
    ordered = values[order]
    codes = episode_codes[order]
    padded = np.concatenate([np.full(window - 1, np.nan), ordered])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window).copy()
    # Mask what lies before each row's episode start: position of the row inside its episode.
    starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    position = np.arange(n) - run_start
    lag = np.arange(window - 1, -1, -1)
    windows[lag[None, :] > position[:, None]] = np.nan
    out = np.empty(n)
    out[order] = np.nanstd(windows, axis=1)
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
    must hold ``COMPONENT_COLUMNS`` and ``RAW_COLUMNS``.
    """
    missing = [c for c in COMPONENT_COLUMNS + RAW_COLUMNS if c not in _names(columns)]
    if missing:
        raise KeyError(f"reward synthesis needs column(s) {missing}")
    arrays = {c: np.asarray(columns[c]) for c in COMPONENT_COLUMNS + RAW_COLUMNS}
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


def recompute(joined: Any, config: RewardConfig) -> Any:
    """``joined`` with its synthesis columns recomputed under other parameters; no model runs.

    ``joined`` is what ``Dataset.join``/``iter_joined`` return (a pandas DataFrame of raw steps joined
    with a label set) or a pyarrow Table with the same columns; the result has the same type, with
    ``SYNTHESIS_COLUMNS`` replaced (or added) and every other column untouched.
    """
    values = synthesize(joined, config)
    if isinstance(joined, pa.Table):
        for name, array in values.items():
            column = pa.array(array, pa.float32())
            index = joined.schema.get_field_index(name)
            joined = joined.set_column(index, name, column) if index >= 0 else joined.append_column(name, column)
        return joined
    out = joined.copy()
    for name, array in values.items():
        out[name] = array
    return out


def _names(columns: Any) -> set[str]:
    names = getattr(columns, "column_names", None)
    if names is None:
        names = columns.keys() if hasattr(columns, "keys") else columns.columns
    return set(names)
