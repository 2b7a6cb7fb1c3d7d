"""Settings of the audit report, kept apart from the plotting code so the CLI can show defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportConfig:
    """What the report reads and shows."""

    #: Upper bound on frames read (whole episodes; the first episode is cut if it alone is longer).
    max_frames: int = 20_000
    #: Seed of the shard and episode order when the dataset is larger than ``max_frames``.
    seed: int = 0
    #: Lowest-scored frames shown as images.
    worst: int = 12
    #: Episode timelines drawn (episodes with collisions, off-road and stuck endings first).
    timelines: int = 3
    #: Ground-truth corridor for gate recall, metres; None: the label set's gate settings (annotate's defaults).
    corridor_length: float | None = None
    corridor_half_width: float | None = None

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.worst < 0 or self.timelines < 0:
            raise ValueError(f"worst and timelines must be >= 0, got {self.worst}, {self.timelines}")
        for name in ("corridor_length", "corridor_half_width"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 metres, got {value}")
