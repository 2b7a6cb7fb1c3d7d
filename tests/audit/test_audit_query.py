"""data_schema.query: joined rows, column selection, filters, sampling and images read only when asked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import GATE_MISSES, STEPS, build, episode_id, episode_rows, in_corridor, pedestrian_at

from data_schema import RAW_STEP_SCHEMA, Dataset, DatasetError, decode_image
from data_schema import query as q

EPISODES = 6


def keys(df) -> set[tuple[str, int]]:
    return set(zip(df["episode_id"], df["step"].astype(int)))


def test_frames_returns_every_joined_row_once_with_chosen_columns(audit_dataset: Dataset) -> None:
    df = q.frames(audit_dataset, "clg-v1", columns=["speed", "semantic", "reward"])
    raw_keys = set()
    for shard in audit_dataset.shards():
        table = pq.read_table(audit_dataset.shard_path(shard), columns=["episode_id", "step"])
        raw_keys |= set(zip(table.column("episode_id").to_pylist(), table.column("step").to_pylist()))
    assert len(df) == len(raw_keys) == EPISODES * STEPS
    assert keys(df) == raw_keys
    assert list(df.columns) == ["episode_id", "step", "shard", "speed", "semantic", "reward"]
    assert set(df["shard"]) == set(audit_dataset.shards())
    # the join pairs each raw row with its own label row: speed (raw) and reward (label) of a known frame
    row = df[(df.episode_id == "ep003") & (df.step == 7)].iloc[0]
    assert row.speed == pytest.approx(5.0 + np.sin(7 / 5), rel=1e-6)


def test_images_are_read_for_kept_rows_and_decoded_only_when_asked(audit_dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(q, "decode_image", lambda data, row=None: calls.append(1) or decode_image(data, row))
    plain = q.frames(audit_dataset, "clg-v1", columns=["gate"])
    assert "bev" not in plain.columns and "camera" not in plain.columns
    encoded = q.frames(audit_dataset, "clg-v1", columns=["gate"], where=q.gated(), images=["bev"])
    assert calls == []
    assert all(isinstance(b, bytes) and b.startswith(b"\x89PNG") for b in encoded["bev"])
    decoded = q.frames(audit_dataset, "clg-v1", columns=["gate"], where=q.gated(), images=["bev", "camera"], decode=True)
    assert len(calls) == 2 * len(decoded) == 2 * int(plain.gate.sum())
    assert decoded["bev"].iloc[0].shape == (64, 64, 3) and decoded["camera"].iloc[0].shape == (96, 128, 3)
    # the image belongs to its row: the BEV of a gated frame shows the red pedestrian
    assert all((img == (255, 60, 60)).all(axis=2).any() for img in decoded["bev"])


def test_filters_select_exactly_the_matching_frames(audit_dataset: Dataset) -> None:
    expected_gate = {
        (episode_id(i), s)
        for i in range(EPISODES)
        for s in range(STEPS)
        if (p := pedestrian_at(i, s)) is not None and in_corridor(*p) and (i, s) not in GATE_MISSES
    }
    gated = q.frames(audit_dataset, "clg-v1", columns=["speed"], where=q.gated())
    assert keys(gated) == expected_gate
    assert "gate" in gated.columns  # a filter reads its columns even when not selected

    failed = q.frames(audit_dataset, "clg-v1", columns=["vlm_text"], where=q.vlm_failed())
    assert keys(failed) == {k for k in expected_gate if k[1] % 4 == 0}
    low = q.frames(audit_dataset, "clg-v1", columns=["semantic"], where=q.low_semantic(0.5))
    everything = q.frames(audit_dataset, "clg-v1", columns=["semantic", "gate"])
    assert keys(low) == keys(everything[everything.semantic < 0.5]) and len(low) > 0

    near = q.frames(audit_dataset, "clg-v1", columns=["reward"], where=q.near_event("collision", within=3))
    assert keys(near) == {("ep000", s) for s in range(STEPS - 4, STEPS)}  # ep000 ends in a collision

    both = q.frames(audit_dataset, "clg-v1", columns=["speed"], where=q.gated() & q.in_episode("ep002"))
    assert keys(both) == {k for k in expected_gate if k[0] == "ep002"}
    either = q.frames(audit_dataset, "clg-v1", columns=["speed"], where=q.in_episode("ep001") | q.in_episode("ep003"))
    assert set(either.episode_id) == {"ep001", "ep003"} and len(either) == 2 * STEPS
    not_gated = q.frames(audit_dataset, "clg-v1", columns=["speed"], where=~q.gated())
    assert len(not_gated) == EPISODES * STEPS - len(expected_gate)


def test_limit_sample_and_episode(audit_dataset: Dataset) -> None:
    assert len(q.frames(audit_dataset, "clg-v1", columns=["reward"], limit=7)) == 7
    a = q.frames(audit_dataset, "clg-v1", columns=["reward"], sample=25, seed=3)
    b = q.frames(audit_dataset, "clg-v1", columns=["reward"], sample=25, seed=3)
    c = q.frames(audit_dataset, "clg-v1", columns=["reward"], sample=25, seed=4)
    assert len(a) == 25 and keys(a) == keys(b) and keys(a) != keys(c)
    assert len(a.shard.unique()) == 2  # drawn across shards, not the first rows of the first shard
    ep = q.episode(audit_dataset, "clg-v1", "ep004", columns=["speed"], images=["bev"])
    assert list(ep.step) == list(range(STEPS)) and set(ep.episode_id) == {"ep004"} and ep.bev.notna().all()
    with pytest.raises(DatasetError, match="no episode 'nope'"):
        q.episode(audit_dataset, "clg-v1", "nope")


def test_bad_input_names_what_is_wrong(audit_dataset: Dataset) -> None:
    with pytest.raises(KeyError, match="unknown column 'speeed'"):
        q.frames(audit_dataset, "clg-v1", columns=["speeed"])
    with pytest.raises(DatasetError, match="label set 'clg-v9' does not exist"):
        q.frames(audit_dataset, "clg-v9")
    with pytest.raises(ValueError, match="unknown event"):
        q.near_event("crash")
    with pytest.raises(ValueError, match="limit or sample"):
        q.frames(audit_dataset, "clg-v1", limit=1, sample=1)
    with pytest.raises(KeyError, match="attach_images needs"):
        q.attach_images(audit_dataset, q.frames(audit_dataset, "clg-v1", columns=["speed"]).drop(columns="shard"))


def test_unlabelled_shards_are_left_out_with_a_warning(tmp_path) -> None:
    ds = build(str(tmp_path / "ds"), episodes_per_shard=1, shards=1)
    rows = episode_rows(9, np.random.default_rng(0))
    ds.write_episode_shard("20250102T000000-test-e000009", pa.Table.from_pylist(rows, schema=RAW_STEP_SCHEMA))
    with pytest.warns(UserWarning, match="no current labels for 1 of 2 shard"):
        df = q.frames(ds, "clg-v1", columns=["reward"])
    assert set(df.episode_id) == {"ep000"}
