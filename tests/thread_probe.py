"""A collect policy that reports, from inside the process that drives it, the torch thread count it found
there: the thread budget's tests read it back from collect worker processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch


class ThreadProbe:
    """Writes ``{pid: torch threads}`` to a file per episode on its start; drives straight ahead."""

    name = "thread-probe"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def reset(self, seed: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{seed}.json").write_text(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads()}))

    def act(self, obs: object, bev: np.ndarray) -> np.ndarray:
        return np.array([0.0, 0.3], np.float32)
