"""A training run on disk: its settings, its progress and its checkpoints, each written atomically.

::

    RUN_DIR/run.json                 dataset, label set, mode, run id, reward source, TrainConfig (fixed at the start)
    RUN_DIR/state.json               progress at the last checkpoint (RunState) and the checkpoint it belongs to
    RUN_DIR/checkpoints/round-K.d3   d3rlpy checkpoint (networks + optimisers); the newest two are kept
    RUN_DIR/metrics.csv, RUN_DIR/tb/ one row per round (see train.metrics_log)

``state.json`` is written after its checkpoint, so it never names a file that is not complete. A killed run
resumes from the last ``state.json``: the buffer is rebuilt from the shards it lists as consumed, in order.

``state.json`` is read as untrusted input: every name in it must be a shard name or a checkpoint name of this
layout (no path leaves the dataset or the run directory), and the checkpoint must still have the sha256
recorded when it was written, so a swapped or damaged file is refused before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_schema import DatasetError
from data_schema.naming import check_name
from data_schema.settings import ConfigError, build
from data_schema.storage import atomic_write_text
from train.config import TrainConfig

__all__ = ["RunDir", "RunSpec", "RunState"]

KEEP_CHECKPOINTS = 2
CHECKPOINT_NAME = re.compile(r"round-\d{6,}\.d3")


@dataclass
class RunState:
    """Progress of a run; what a resumed run needs besides the networks."""

    round: int = 0  # rounds completed (online), or checkpoints written (offline)
    grad_steps: int = 0
    env_steps: int = 0  # environment steps collected by this run
    episodes: int = 0  # episodes collected by this run: the next episode index
    consumed: list[str] = field(default_factory=list)  # shards whose transitions entered the buffer, in order
    checkpoint: str = ""  # file name under checkpoints/
    checkpoint_sha256: str = ""  # of that file, as written (empty in runs started before it was recorded)

    def check(self, source: str) -> None:
        """Refuse values no run writes: negative counters, names that are not shard or checkpoint names."""
        for name in ("round", "grad_steps", "env_steps", "episodes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{source}: {name} must be >= 0, got {getattr(self, name)}")
        for shard in self.consumed:
            try:
                check_name("shard", shard)
            except DatasetError as error:
                raise ConfigError(f"{source}: consumed: {error}") from None
        if self.checkpoint and not CHECKPOINT_NAME.fullmatch(self.checkpoint):
            raise ConfigError(f"{source}: checkpoint {self.checkpoint!r} is not a checkpoint name of this run (round-NNNNNN.d3)")
        if self.checkpoint_sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.checkpoint_sha256):
            raise ConfigError(f"{source}: checkpoint_sha256 {self.checkpoint_sha256!r} is not a sha256 hex digest")


@dataclass(frozen=True)
class RunSpec:
    """What a run trains on and how; fixed when the run starts."""

    dataset: str
    label_set: str
    mode: str  # online | offline
    config: TrainConfig
    run_id: str = ""  # online: names this run's episodes and shards in the dataset
    reward_from_components: bool = False  # recompute rewards from stored label components ...
    reward_overrides: dict[str, Any] = field(default_factory=dict)  # ... with these RewardConfig values changed
    annotate_args: tuple[str, ...] = ()  # online: extra `pipeline annotate` options (--config, --set)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.to_dict()
        out["annotate_args"] = list(self.annotate_args)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunSpec":
        values = dict(values)
        values["config"] = TrainConfig.from_dict(values["config"])
        values["annotate_args"] = tuple(values.get("annotate_args", ()))
        return cls(**values)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def exists(self) -> bool:
        return (self.path / "run.json").is_file()

    def spec(self) -> RunSpec:
        path = self.path / "run.json"
        try:
            return RunSpec.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found; is {self.path} a run directory written by `pipeline train`?") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a valid run spec ({e})") from e

    def write_spec(self, spec: RunSpec) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "run.json", json.dumps(spec.to_dict(), indent=2, sort_keys=True))

    def discard_unstarted(self) -> None:
        """Remove ``run.json`` of a run that failed before its first checkpoint: nothing refers to it yet, and
        left behind it would refuse the corrected command (and --resume with the corrected settings). Logs stay."""
        if (self.path / "state.json").exists():
            return
        (self.path / "run.json").unlink(missing_ok=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def state(self) -> RunState | None:
        """The state at the last checkpoint (checked: see the module docstring), or None before the first one."""
        path = self.path / "state.json"
        if not path.is_file():
            return None
        try:
            state = build(RunState, json.loads(path.read_text()), str(path))
        except ValueError as e:  # invalid JSON, not UTF-8, or a value of the wrong type
            raise ValueError(f"{path}: not a valid run state ({e})") from e
        state.check(str(path))
        return state

    def latest_checkpoint(self) -> Path:
        """The checkpoint ``state.json`` names, once its content is checked against the recorded sha256."""
        state = self.state()
        if state is None or not state.checkpoint:
            raise FileNotFoundError(f"{self.path}: no checkpoint yet (state.json is written after the first round)")
        path = self.checkpoints / state.checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the checkpoint state.json names is missing")
        if state.checkpoint_sha256 and file_sha256(path) != state.checkpoint_sha256:
            raise ValueError(f"{path}: its content differs from the sha256 state.json recorded when it was written (replaced or damaged)")
        return path

    def commit(self, state: RunState, save: Any) -> None:
        """Write a checkpoint with ``save(path)``, then the state naming it; prune older checkpoints."""
        name = f"round-{state.round:06d}.d3"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        save(self.checkpoints / name)
        state.checkpoint = name
        state.checkpoint_sha256 = file_sha256(self.checkpoints / name)
        atomic_write_text(self.path / "state.json", json.dumps(asdict(state), indent=2))
        for old in sorted(self.checkpoints.glob("round-*.d3"))[:-KEEP_CHECKPOINTS] + list(self.checkpoints.glob("*.tmp")):
            old.unlink()  # older checkpoints, and tmp files of a save a kill interrupted


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
