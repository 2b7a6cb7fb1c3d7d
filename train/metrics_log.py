"""The run log: one row per round to ``metrics.csv`` and TensorBoard (``tb/``), and a line to the console.

A resumed run appends to the same files. The CSV keeps the columns of its first row; a later row may only
leave columns empty, never add new ones, so the file stays readable by pandas.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Callable

from torch.utils.tensorboard import SummaryWriter


class MetricsLog:
    def __init__(self, run_dir: str | Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self._writer = SummaryWriter(str(Path(run_dir) / "tb"))
        self._echo = echo
        self._columns: list[str] | None = None
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self._columns = next(csv.reader(f), None)

    def log(self, step: int, row: dict[str, Any]) -> None:
        """Record ``row`` at global step ``step`` (gradient updates)."""
        if self._columns is None:
            self._columns = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self._columns)
        extra = [k for k in row if k not in self._columns]
        if extra:
            raise ValueError(f"{self.path}: row has column(s) {extra} that the file's header lacks")
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_cell(row.get(k)) for k in self._columns])
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()
        if self._echo is not None:
            self._echo("  ".join(f"{k}={_short(v)}" for k, v in row.items()))

    def close(self) -> None:
        self._writer.close()


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
