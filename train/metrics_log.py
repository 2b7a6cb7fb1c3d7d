"""The run log: one row per round to ``metrics.csv`` and TensorBoard (``tb/``), and a line to the console.

A resumed run appends to the same files. A row with a column the file lacks (a run resumed by a newer
version) rewrites the file with the wider header, earlier rows left empty there, so it stays one table.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable

from torch.utils.tensorboard import SummaryWriter

from data_schema.storage import atomic_write_text

__all__ = ["MetricsLog"]


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
            self._widen(extra)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_cell(row.get(k)) for k in self._columns])
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()
        if self._echo is not None:
            self._echo("  ".join(f"{k}={_short(v)}" for k, v in row.items()))

    def _widen(self, extra: list[str]) -> None:
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        self._columns = [*(self._columns or []), *extra]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self._columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())

    def close(self) -> None:
        self._writer.close()


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
