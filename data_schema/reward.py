"""What a label's reward means as a function of the stored components (SPEC §4, defaults from VLM-RL).

The components are the similarities the models measured: ``sim_pos`` / ``sim_neg`` (BEV vs the static
pathway's language goals) and, on gated frames with a VLM description, ``sim_dyn_pos`` / ``sim_dyn_desc``
(image vs "the road ahead is clear" and vs the description; null elsewhere). From them:

* ``r_static = alpha * sim_pos - beta * sim_neg``;
  ``r_dynamic = alpha_dynamic * sim_dyn_pos - beta_dynamic * sim_dyn_desc`` where described, else 0;
* ``semantic = (clip(sum of the chosen pathways, theta_min, theta_max) - theta_min) / (theta_max - theta_min)``,
  or 1 with no pathway (the hand-built reward: desired speed = target);
* ``reward = f_speed * f_center * f_angle * f_stability`` (``desired_speed = semantic * target``), replaced by
  ``penalty`` on the configured events.

It is part of the dataset contract: annotate writes labels with :func:`synthesize`, and train recomputes
rewards from the stored components under other :class:`RewardConfig` values (``--reward-from-components``)
without running any model again. Pure numpy, vectorised, one call per shard or table.

Units: ``speed`` and ``desired_speed`` in m/s, lateral offsets in m, heading errors in rad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from data_schema.episodes import EpisodeOrder

__all__ = [
    "COMPONENT_COLUMNS", "PATHWAYS", "PENALTY_EVENTS", "REWARD_RAW_COLUMNS", "RewardConfig", "SYNTHESIS_COLUMNS", "synthesize",
]  # fmt: skip

#: Raw step columns the synthesis reads.
REWARD_RAW_COLUMNS = ("episode_id", "step", "speed", "lateral_offset", "heading_error", "collision", "off_road", "stuck")
#: Stored label columns the synthesis starts from (the dynamic ones are null where nothing was described).
COMPONENT_COLUMNS = ("sim_pos", "sim_neg", "sim_dyn_pos", "sim_dyn_desc")
#: Label columns the synthesis writes.
SYNTHESIS_COLUMNS = (
    "r_static", "r_dynamic", "semantic", "desired_speed", "f_speed", "f_center", "f_angle", "f_stability", "penalty", "reward",
)  # fmt: skip
#: Events that may replace the reward by the penalty: the raw events, and VLM-RL's training terminations
#: computed from raw columns (``speeding``: above ``max_speed_kmh``; ``off_center``: more than
#: ``max_center_m`` from the lane centre).
PENALTY_EVENTS = ("collision", "off_road", "stuck", "speeding", "off_center")
#: Pathways whose terms the semantic score may sum.
PATHWAYS = ("static", "dynamic")


@dataclass(frozen=True)
class RewardConfig:
    """Parameters of the synthesis; part of the label-set spec (changing one changes the hash).

    Our defaults follow VLM-RL except where noted; VLM-RL's own reward (the *CLG only* baseline of
    DriveVLM-RL) is ``pathways=("static",)``, ``penalize`` with ``speeding`` and ``off_center`` added, and
    ``stability_signed=False`` (VLM-RL measures the spread of the unsigned distance to the centre line;
    ours the signed offset, so weaving across the centre counts as unsteady).
    """

    alpha: float = 1.0  # r_static = alpha * sim_pos - beta * sim_neg
    beta: float = 1.0
    alpha_dynamic: float = 1.0  # r_dynamic = alpha_dynamic * sim_dyn_pos - beta_dynamic * sim_dyn_desc
    beta_dynamic: float = 1.0
    pathways: tuple[str, ...] = PATHWAYS  # () is the hand-built reward: semantic 1, desired speed = target
    theta_min: float = -0.03
    theta_max: float = 0.0
    target_speed_kmh: float = 25.0
    max_speed_kmh: float = 35.0  # the ``speeding`` event
    center_scale_m: float = 3.0
    max_center_m: float = 3.0  # the ``off_center`` event
    angle_scale_rad: float = math.pi / 2
    stability_window: int = 30
    stability_scale_m: float = 0.4
    stability_signed: bool = True
    penalty: float = -10.0
    penalize: tuple[str, ...] = ("collision", "off_road", "stuck")

    def __post_init__(self) -> None:
        object.__setattr__(self, "pathways", tuple(self.pathways))
        object.__setattr__(self, "penalize", tuple(self.penalize))
        for name in ("alpha", "beta", "alpha_dynamic", "beta_dynamic"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite value >= 0, got {getattr(self, name)}")
        unknown = [p for p in self.pathways if p not in PATHWAYS]
        if unknown or len(set(self.pathways)) != len(self.pathways):
            raise ValueError(f"pathways: {list(self.pathways)}; choose distinct ones of {list(PATHWAYS)} (none: hand-built)")
        if not self.theta_min < self.theta_max:
            raise ValueError(f"theta_min ({self.theta_min}) must be below theta_max ({self.theta_max})")
        for name in ("target_speed_kmh", "max_speed_kmh", "center_scale_m", "max_center_m", "angle_scale_rad", "stability_scale_m"):
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
    """(clip(sum of the chosen pathways, theta_min, theta_max) - theta_min) / (theta_max - theta_min), in [0, 1];
    1 everywhere when no pathway is chosen."""
    terms = {"static": np.asarray(r_static, np.float64), "dynamic": np.asarray(r_dynamic, np.float64)}
    if not config.pathways:
        return np.ones(len(terms["static"]))
    total = np.clip(sum(terms[p] for p in config.pathways), config.theta_min, config.theta_max)
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


def penalised(columns: Mapping[str, np.ndarray], config: RewardConfig) -> np.ndarray:
    """Rows whose reward the penalty replaces: any of the configured events."""
    events = {
        "collision": lambda: columns["collision"].astype(bool),
        "off_road": lambda: columns["off_road"].astype(bool),
        "stuck": lambda: columns["stuck"].astype(bool),
        "speeding": lambda: columns["speed"] * 3.6 > config.max_speed_kmh,
        "off_center": lambda: np.abs(columns["lateral_offset"]) > config.max_center_m,
    }
    mask = np.zeros(len(columns["speed"]), dtype=bool)
    for event in config.penalize:
        mask |= events[event]()
    return mask


def synthesize(columns: Any, config: RewardConfig) -> dict[str, np.ndarray]:
    """All synthesis columns (``SYNTHESIS_COLUMNS``, float32) from the components and raw columns.

    ``columns`` is a pandas DataFrame, a pyarrow Table or a mapping of names to arrays, holding
    ``COMPONENT_COLUMNS`` (nulls or NaN where nothing was described) and ``REWARD_RAW_COLUMNS``.
    """
    missing = [c for c in COMPONENT_COLUMNS + REWARD_RAW_COLUMNS if c not in _names(columns)]
    if missing:
        raise KeyError(f"reward synthesis needs column(s) {missing}")
    arrays = {c: _array(columns[c]) for c in COMPONENT_COLUMNS + REWARD_RAW_COLUMNS}
    r_static = config.alpha * arrays["sim_pos"] - config.beta * arrays["sim_neg"]
    described = np.isfinite(arrays["sim_dyn_pos"]) & np.isfinite(arrays["sim_dyn_desc"])
    r_dynamic = np.where(described, config.alpha_dynamic * arrays["sim_dyn_pos"] - config.beta_dynamic * arrays["sim_dyn_desc"], 0.0)
    sem = semantic(r_static, r_dynamic, config)
    desired = sem * config.target_speed
    offset = arrays["lateral_offset"] if config.stability_signed else np.abs(arrays["lateral_offset"])
    f_speed = speed_factor(arrays["speed"], desired, config)
    f_center = center_factor(arrays["lateral_offset"], config)
    f_angle = angle_factor(arrays["heading_error"], config)
    f_stability = stability_factor(offset, arrays["episode_id"], arrays["step"], config)
    hit = penalised(arrays, config)
    out = {
        "r_static": r_static,
        "r_dynamic": r_dynamic,
        "semantic": sem,
        "desired_speed": desired,
        "f_speed": f_speed,
        "f_center": f_center,
        "f_angle": f_angle,
        "f_stability": f_stability,
        "penalty": np.where(hit, config.penalty, 0.0),
        "reward": np.where(hit, config.penalty, f_speed * f_center * f_angle * f_stability),
    }
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _array(values: Any) -> np.ndarray:
    """A column as numpy, nulls as NaN (Arrow and pandas nullable columns alike)."""
    if hasattr(values, "to_numpy") and hasattr(values, "null_count"):  # pyarrow Array / ChunkedArray
        return values.to_numpy(zero_copy_only=False)
    return np.asarray(values)


def _names(columns: Any) -> set[str]:
    names = getattr(columns, "column_names", None)
    if names is None:
        names = columns.keys() if hasattr(columns, "keys") else columns.columns
    return set(names)
