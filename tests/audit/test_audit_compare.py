"""pipeline.audit.compare: a planted reward change is found, summarised and drawn."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import HASH_V2, NOISE, PLANTED, build, episode_id

from data_schema import Dataset, DatasetError
from pipeline.audit.compare import compare


def rewards(ds: Dataset, label_set: str) -> dict[tuple[str, int], float]:
    out = {}
    for shard in ds.label_set(label_set).shards():
        t = pq.read_table(ds.label_set(label_set).shard_path(shard), columns=["episode_id", "step", "reward"])
        out.update(zip(zip(t.column("episode_id").to_pylist(), t.column("step").to_pylist()), t.column("reward").to_pylist()))
    return out


def test_planted_changes_are_the_top_changed_frames(audit_dataset: Dataset) -> None:
    diff = compare(audit_dataset, "clg-v1", "clg-v2", top=5)
    planted = {(episode_id(i), s): d for i, s, d in PLANTED}
    top = diff.top_changed
    assert [(e, int(s)) for e, s in zip(top.episode_id[:3], top.step[:3])] == sorted(planted, key=lambda k: -abs(planted[k]))
    assert top.delta[:3].to_numpy() == pytest.approx([planted[k] + NOISE * np.sin(k[1]) for k in zip(top.episode_id[:3], top.step[:3])], abs=1e-5)
    assert (top.delta[3:].abs() <= NOISE + 1e-6).all()  # the rest is the noise every frame got
    assert (top.reward_b - top.reward_a).to_numpy() == pytest.approx(top.delta.to_numpy(), abs=1e-6)

    a, b = rewards(audit_dataset, "clg-v1"), rewards(audit_dataset, "clg-v2")
    x = np.array([a[k] for k in sorted(a)], dtype=np.float64)
    y = np.array([b[k] for k in sorted(a)], dtype=np.float64)
    reward = diff.summary.loc["reward"]
    assert diff.frames == len(a) == 240
    assert reward.changed == int((np.abs(y - x) > 1e-6).sum())
    assert reward.mean_abs_diff == pytest.approx(np.abs(y - x).mean(), rel=1e-6)
    assert reward.max_abs_diff == pytest.approx(0.9, abs=NOISE + 1e-6)
    assert diff.reward_corr == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
    unchanged = diff.summary.drop(index="reward")
    assert (unchanged.changed == 0).all(), unchanged[unchanged.changed > 0]


def test_diff_text_and_frames_grid(audit_dataset: Dataset) -> None:
    diff = compare(audit_dataset, "clg-v1", "clg-v2", columns=["reward", "gate", "detections", "vlm_text"], top=3)
    assert list(diff.summary.index) == ["reward", "gate", "detections", "vlm_text"]
    text = diff.text()
    assert "ep001" in text and "reward correlation" in text and "240 frame(s) in 2 shard(s)" in text
    fig = diff.show(audit_dataset, image="bev", n=3)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3
    assert "ep001 · step 12" in images[0].get_title(loc="left")
    assert "<img" in diff.to_html(audit_dataset) and "<img" not in diff._repr_html_()


def test_shards_labelled_by_one_set_only_are_listed_not_compared(tmp_path) -> None:
    ds = build(str(tmp_path / "ds"))
    second = ds.shards()[1]
    (tmp_path / "ds" / "labels" / "clg-v2" / f"{second}.parquet").unlink()
    diff = compare(ds, "clg-v1", "clg-v2", progress=False)
    assert diff.only_in_one == [second] and diff.shards == [ds.shards()[0]] and diff.frames == 120


def test_mismatched_keys_are_an_error(tmp_path) -> None:
    ds = build(str(tmp_path / "ds"), shards=1)
    shard = ds.shards()[0]
    labels = ds.label_set("clg-v2")
    table = labels.read_shard(shard)
    steps = pa.array(np.where(np.arange(table.num_rows) == 5, 999, table.column("step").to_numpy()), pa.int32())
    labels.write_shard(shard, table.set_column(1, "step", steps), HASH_V2)
    with pytest.raises(DatasetError, match="keys differ"):
        compare(ds, "clg-v1", "clg-v2")
    with pytest.raises(KeyError, match="unknown label column"):
        compare(ds, "clg-v1", "clg-v2", columns=["speed"])
