"""Sample frames for humans: chosen from a real dataset (pedestrians near the ego first) or from live SUMO."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from collect.backends.sumo import SumoConfig
from collect.bev import BevPalette, BevRasteriser
from collect.env import EnvSpec
from collect.policies.expert import ExpertPolicy
from collect.render_samples import (
    main,
    nearest_pedestrian,
    pick_frames,
    samples_around_hazards,
    samples_from_dataset,
    samples_from_env,
    write_samples,
)
from collect.route import to_ego_frame
from collect.scene import Agent, Lane, MapGeometry, Pose, Scene
from data_schema import RAW_STEP_SCHEMA, Dataset, decode_image, encode_png
from data_schema.schema import AGENT_TYPE, ROUTE_AHEAD_POINTS

STREET = MapGeometry(
    "street",
    (Lane(np.array([[-100.0, 0.0], [300.0, 0.0]]), 3.5), Lane(np.array([[300.0, 3.5], [-100.0, 3.5]]), 3.5)),
    (Lane(np.array([[-100.0, -2.75], [300.0, -2.75]]), 2.0),),
)
STEPS = 30


def _episode_rows(episode_id: str, pedestrian_steps: range) -> list[dict]:
    """An episode driving east at 2 m/s; a pedestrian stands on the sidewalk 4 m ahead during ``pedestrian_steps``
    and a car follows 20 m behind throughout. BEV frames are real renders of the scene."""
    rasteriser = BevRasteriser()
    rows = []
    for step in range(STEPS):
        ego = Pose(2.0 * step, 0.0, 0.0)
        agents = [Agent("vehicle", ego.x - 20.0, 0.0, 0.0, 2.0, 4.5, 1.9)]
        if step in pedestrian_steps:
            agents.append(Agent("pedestrian", ego.x + 4.0, -2.75, math.pi / 2, 1.0, 0.5, 0.5))
        frame = rasteriser.render(Scene(STREET, ego, 4.5, 1.9, tuple(agents)))
        local = to_ego_frame(np.array([[a.x, a.y] for a in agents]), ego)
        row = {field.name: _default(field.type) for field in RAW_STEP_SCHEMA}
        row.update(
            episode_id=episode_id, step=step, t=0.1 * step, backend="sumo", map="street", policy="expert",
            bev=encode_png(frame), x=ego.x, y=ego.y, speed=2.0, is_last=step == STEPS - 1,
            action=None if step == STEPS - 1 else [0.0, 0.1],
            agents=[{"kind": a.kind, "x": lx, "y": ly, "yaw": 0.0, "speed": a.speed, "length": a.length, "width": a.width}
                    for a, (lx, ly) in zip(agents, local)],
        )
        rows.append(row)
    return rows


def _default(t: pa.DataType) -> object:
    if pa.types.is_fixed_size_list(t):
        return [_default(t.value_type)] * t.list_size
    if pa.types.is_list(t):
        return []
    if pa.types.is_string(t):
        return ""
    if pa.types.is_binary(t):
        return b""
    if pa.types.is_boolean(t):
        return False
    return 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    ds = Dataset.create(str(tmp_path_factory.mktemp("samples") / "ds"))
    rows = _episode_rows("run-0000", range(10, 15)) + _episode_rows("run-0001", range(0))
    ds.write_episode_shard("20260101T000000-run-e000000", pa.Table.from_pylist(rows, schema=RAW_STEP_SCHEMA))
    assert ROUTE_AHEAD_POINTS == len(rows[0]["route_ahead"])
    return ds


def test_nearest_pedestrian_per_row() -> None:
    agents = pa.array(
        [
            [{"kind": "pedestrian", "x": 3.0, "y": 4.0, "yaw": 0.0, "speed": 0.0, "length": 0.5, "width": 0.5},
             {"kind": "vehicle", "x": 1.0, "y": 0.0, "yaw": 0.0, "speed": 0.0, "length": 4.0, "width": 2.0},
             {"kind": "pedestrian", "x": -12.0, "y": 0.0, "yaw": 0.0, "speed": 0.0, "length": 0.5, "width": 0.5}],
            [],
            [{"kind": "cyclist", "x": 1.0, "y": 1.0, "yaw": 0.0, "speed": 0.0, "length": 1.8, "width": 0.6}],
        ],
        type=pa.list_(AGENT_TYPE),
    )
    assert nearest_pedestrian(agents).tolist() == [5.0, math.inf, math.inf]


def test_pick_frames_prefers_pedestrians_and_fills_with_the_rest() -> None:
    distance = np.full(20, np.inf)
    distance[[3, 4, 5]] = [8.0, 30.0, 2.0]
    picked = pick_frames(distance, near_m=15.0, count=4)
    assert {3, 5} <= set(picked.tolist()) and len(picked) == 4 and 4 not in picked[:2]
    assert pick_frames(distance, 15.0, 1).tolist() == [3]
    assert len(pick_frames(np.full(3, np.inf), 15.0, 10)) == 3


def test_samples_from_a_dataset_show_the_pedestrian_frames(dataset: Dataset) -> None:
    samples = samples_from_dataset(dataset, episodes=["run-0000"], per_episode=3, near_m=10.0)
    assert [s.step for s in samples] == [10, 12, 14]  # spread over the frames with the pedestrian 4 m away
    assert all(s.pedestrian_m == pytest.approx(math.hypot(4.0, 2.75)) for s in samples)
    stored = dataset.read_shard(dataset.shards()[0], ["step", "bev"]).to_pylist()
    for sample in samples:
        assert np.array_equal(sample.frame, decode_image(stored[sample.step]["bev"]))  # the stored bytes, not a re-render
        assert np.all(sample.frame == BevPalette().pedestrian, axis=2).any()
    quiet = samples_from_dataset(dataset, episodes=["run-0001"], per_episode=3)
    assert [s.step for s in quiet] == [0, 14, 29]  # no pedestrian: spread over the episode
    assert all(not math.isfinite(s.pedestrian_m) for s in quiet)


def test_written_frames_are_the_stored_frames_enlarged(dataset: Dataset, tmp_path: Path) -> None:
    samples = samples_from_dataset(dataset, per_episode=2)
    paths = write_samples(samples, tmp_path, scale=3, columns=2)
    assert len(paths) == 5 and paths[-1] == tmp_path / "contact_sheet.png"
    for sample, path in zip(samples, paths):
        written = np.asarray(Image.open(path).convert("RGB"))
        assert written.shape == (384, 384, 3)
        assert np.array_equal(written[::3, ::3], sample.frame)
    sheet = Image.open(paths[-1])
    assert sheet.size == (2 * (256 + 4) + 4, 2 * (256 + 14 + 4) + 4)
    assert not list(tmp_path.rglob("*.tmp"))


def test_cli_on_a_dataset_and_a_clear_error_for_unknown_episodes(dataset: Dataset, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, [dataset.url, str(tmp_path / "out"), "--per-episode", "2", "--near-m", "10"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 frames (2 with a pedestrian within 10 m)" in result.output
    assert len(list((tmp_path / "out" / "frames").glob("*.png"))) == 4
    result = runner.invoke(main, [dataset.url, str(tmp_path / "bad"), "--episodes", "run-9999"])
    assert result.exit_code == 1 and "no episode run-9999 in the dataset" in result.output
    result = runner.invoke(main, [str(tmp_path / "nothing"), str(tmp_path / "bad")])
    assert result.exit_code == 1 and "dataset.json: not found" in result.output


def test_live_samples_from_sumo(tmp_path: Path) -> None:
    env = EnvSpec(backend=SumoConfig(pedestrians=60)).build()
    try:
        samples = samples_from_env(env, ExpertPolicy(), seed=1, steps=80, count=4)
    finally:
        env.close()
    assert len(samples) == 4
    assert all(s.frame.shape == (128, 128, 3) and s.episode_id.startswith("live-sumo-") for s in samples)
    steps = [(s.episode_id, s.step) for s in samples]
    assert len(set(steps)) == 4
    near = [s for s in samples if s.pedestrian_m <= 15.0]
    assert near, "60 pedestrians on the bundled town and none within 15 m in 80 steps"
    for sample in near:
        assert np.all(sample.frame == BevPalette().pedestrian, axis=2).any()
    paths = write_samples(samples, tmp_path)
    assert paths[-1].exists()


def test_frames_around_a_scenarios_hazard_show_it(tmp_path: Path) -> None:
    """The CLI's --scenario sheet: one row per episode, frames from just before the hazard was set off, the
    crossing cyclist drawn in them (the BEV is all the reward models see)."""
    result = CliRunner().invoke(
        main, ["sumo", str(tmp_path), "--live", "--scenario", "cyclist_crossing", "--policy", "expert-reckless", "--max-episodes", "2", "--per-episode", "4"]
    )
    assert result.exit_code == 0, result.output
    frames = sorted((tmp_path / "frames").glob("cyclist_crossing-s*.png"))
    assert len(frames) == 8 and {f.name.split("_")[1].split("-")[0] for f in frames} == {"crossing"}
    cyclist = [np.all(np.asarray(Image.open(f)) == BevPalette().cyclist, axis=2).any() for f in frames]
    assert sum(cyclist) >= 6  # it may be outside the picture in the first frame, before it sets off
    sheet = Image.open(tmp_path / "contact_sheet.png")
    frame = 128 * 2  # drawn at --scale 3 less one
    assert (sheet.width // (frame + 4), sheet.height // (frame + 18)) == (4, 2)  # a row of four frames per episode
    env = EnvSpec(backend=SumoConfig(cars=0, pedestrians=0), scenarios=("lead_brake",)).build()
    try:
        samples = samples_around_hazards(env, ExpertPolicy(), "lead_brake", seeds=[0], count=5, before_s=1.0, after_s=2.0)
        set_off = env.backend.stage.director.triggered_at
    finally:
        env.close()
    assert [s.title.split()[:2] for s in samples] == [["lead_brake", "s0"]] * 5
    offsets = [float(s.title.split()[2].rstrip("s")) for s in samples]
    assert offsets[0] == pytest.approx(-1.0, abs=0.05) and offsets[-1] == pytest.approx(2.0, abs=0.05) and set_off > 0
    with pytest.raises(SystemExit):
        main(["sumo", str(tmp_path / "x"), "--scenario", "lead_brake"], standalone_mode=True)
