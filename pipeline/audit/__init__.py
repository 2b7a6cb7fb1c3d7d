"""Auditing reward labels in notebooks: one namespace for reading, filtering, drawing and comparing.

::

    from pipeline import audit
    df = audit.frames(ds, "clg-v1", where=audit.gated() & audit.low_semantic(0.3), images=["camera"])
    audit.show_frames(df, image="camera")
    audit.plot_timeline(audit.episode(ds, "clg-v1", df.episode_id[0]))
    audit.compare(ds, "clg-v1", "clg-v2")

Names resolve lazily (PEP 562), so ``pipeline audit --help`` does not pay for importing matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "data_schema.query": (
        "Filter", "attach_images", "episode", "find_shard", "frames", "gated", "in_episode", "iter_frames",
        "low_semantic", "near_event", "vlm_failed",
    ),
    "pipeline.audit.show": ("plot_timeline", "show_frames"),
    "pipeline.audit.compare": ("LabelDiff", "compare"),
    "pipeline.audit.report": ("build_report", "reward_validity", "write_report"),
    "pipeline.audit.sample": ("sample_frames", "truth_corridor"),
    "pipeline.audit.config": ("ReportConfig",),
    "data_schema.groundtruth": ("critical_in_corridor", "hazards"),
    "data_schema.ranking": ("auroc", "hazard_auroc"),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pipeline.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return __all__
