"""Ground truth for scoring the gate: a critical road user in a corridor ahead of the ego, from ``agents``.

The test is annotate's own (``annotate.gate.scene_gate_column``: an agent's footprint reaching into the
corridor), with the corridor the label set was annotated with, so the report's recall and precision are
the numbers ``pipeline annotate`` would compute for the same frames. annotate is imported on first use only:
it brings torch, which ``pipeline audit --help`` should not wait for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

#: GateConfig fields that define the ground-truth corridor.
CORRIDOR_FIELDS = ("critical_kinds", "corridor_length", "corridor_half_width")


def truth_config(label_set_document: dict[str, Any], length: float | None = None, half_width: float | None = None) -> Any:
    """A scene ``GateConfig`` with the corridor of the label set's spec, then the given overrides.

    Label sets annotated with a camera gate still record the corridor (it is how annotate scores them);
    settings a spec lacks take annotate's defaults.
    """
    from annotate.gate import GateConfig

    gate = label_set_document.get("spec", {}).get("gate", {}) or {}
    settings = {k: gate[k] for k in CORRIDOR_FIELDS if k in gate}
    if length is not None:
        settings["corridor_length"] = length
    if half_width is not None:
        settings["corridor_half_width"] = half_width
    return GateConfig(source="scene", **settings)


def ground_truth(agents: pa.Array | pa.ChunkedArray, config: Any) -> np.ndarray:
    """Per row of a raw ``agents`` column: is a critical agent in the corridor (annotate's scene gate)."""
    from annotate.gate import scene_gate_column

    return scene_gate_column(agents, config)


def describe(config: Any) -> str:
    return (
        f"a {'/'.join(config.critical_kinds)} whose footprint reaches into the corridor {config.corridor_length:g} m ahead "
        f"and {config.corridor_half_width:g} m either side of the ego's centre line"
    )
