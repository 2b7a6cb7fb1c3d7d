"""The run log stays one readable table when a resumed run (a newer version) logs more columns."""

from __future__ import annotations

import pandas as pd

from train.metrics_log import MetricsLog


def test_resumed_log_appends_and_widens(tmp_path):
    lines = []
    log = MetricsLog(tmp_path, echo=lines.append)
    log.log(1, {"round": 1, "loss": 2.5, "lag_s": None})
    log.close()
    log = MetricsLog(tmp_path)
    log.log(2, {"round": 2, "loss": 1.0, "lag_s": 3.0, "wait_s": 4.0})
    log.close()
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table.columns.tolist() == ["round", "loss", "lag_s", "wait_s"]
    assert table["round"].tolist() == [1, 2] and table["wait_s"].isna().tolist() == [True, False]
    assert lines == ["round=1  loss=2.5  lag_s=None"]
    assert list((tmp_path / "tb").iterdir())
