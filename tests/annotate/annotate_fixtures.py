"""Small real datasets for the annotate orchestration tests (imported by test_label_set*, test_shard_task*, ...).

Raw shards are written through ``Dataset.write_episode_shard`` with BEV-like PNG frames (road, lane marks,
ego, agents drawn where the ``agents`` column puts them) and ground-truth agents: a pedestrian crosses the
road ahead during part of each episode, so the scene gate fires on some frames and not on others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from annotate.config import load_config
from data_schema import Dataset, encode_jpeg, encode_png
from episode_tables import episode_table

#: CLIP with random weights (seeded, identical in every process) and a small architecture; no VLM.
FAST_OVERRIDES = (
    "clip.model=ViT-S-32-alt",
    "clip.pretrained=none",
    "clip.device=cpu",
    "clip.batch_size=32",
    "gate.source=scene",
    "gate.corridor_half_width=3.0",  # wider than the lane default, so the short test episodes gate some frames
    "vlm.backend=none",
)

_SIZE = 64
_PX_PER_M = 2.0


#: Collected SUMO episodes for the end-to-end tests: short, one per shard.
SUMO_EPISODES = 4
SUMO_STEPS = 12


def fast_config(*extra: str):
    return load_config(None, [*FAST_OVERRIDES, *extra])


def bev_frame(step: int, agents: list[dict]) -> np.ndarray:
    """An ego-centred, heading-up BEV-like picture: grass, road, dashed centre line, agents, ego."""
    img = np.full((_SIZE, _SIZE, 3), (70, 110, 60), np.uint8)
    img[:, 20:44] = (60, 60, 60)
    for y0 in range(-16 + (2 * step) % 16, _SIZE, 16):
        img[max(y0, 0) : max(y0 + 8, 0), 31:33] = (230, 230, 230)
    ego_row, ego_col = 48, 32
    for agent in agents:
        row = int(round(ego_row - agent["x"] * _PX_PER_M))
        col = int(round(ego_col - agent["y"] * _PX_PER_M))
        half = 2 if agent["kind"] == "pedestrian" else 4
        colour = (220, 40, 40) if agent["kind"] == "pedestrian" else (40, 80, 220)
        img[max(row - half, 0) : max(row + half, 0), max(col - half, 0) : max(col + half, 0)] = colour
    img[ego_row - 4 : ego_row + 4, ego_col - 2 : ego_col + 2] = (250, 250, 250)
    return img


def episode_agents(steps: int, crossing: range) -> list[list[dict]]:
    """A car ahead in the other lane all along; a pedestrian crossing 10 m ahead during ``crossing``."""
    out = []
    for t in range(steps):
        agents = [{"kind": "vehicle", "x": 30.0 - t, "y": 3.5, "yaw": 3.14, "speed": 5.0, "length": 4.5, "width": 1.9}]
        if t in crossing:
            y = 6.0 - 12.0 * (t - crossing.start) / max(len(crossing) - 1, 1)
            agents.append({"kind": "pedestrian", "x": 10.0, "y": y, "yaw": -1.57, "speed": 1.3, "length": 0.5, "width": 0.5})
        else:
            agents.append({"kind": "pedestrian", "x": -15.0, "y": 8.0, "yaw": 0.0, "speed": 1.0, "length": 0.5, "width": 0.5})
        out.append(agents)
    return out


def raw_episode(
    episode_id: str,
    steps: int,
    seed: int,
    crossing: range = range(0),
    camera_frames: list[np.ndarray] | None = None,
    collision_at: int | None = None,
    agents: list[list[dict]] | None = None,
    bev_frames: list[np.ndarray] | None = None,
) -> pa.Table:
    """One episode; ``camera_frames`` (one per step) fill the camera column, which is null otherwise.

    ``agents`` (one list per step) replaces the default scene of :func:`episode_agents`, ``bev_frames``
    the pictures drawn from it.
    """
    rng = np.random.default_rng(seed)
    camera = camera_frames is not None
    agents = agents if agents is not None else episode_agents(steps, crossing)
    frames = bev_frames if bev_frames is not None else [bev_frame(t + seed, a) for t, a in enumerate(agents)]
    collision = [t == collision_at for t in range(steps)]
    return episode_table(
        episode_id,
        steps,
        backend="carla" if camera else "sumo",
        seed=seed,
        policy="expert",
        bev=[encode_png(f) for f in frames],
        camera=[encode_jpeg(f) for f in camera_frames] if camera else None,
        speed=rng.uniform(2, 8, steps),
        steer=rng.uniform(-0.2, 0.2, steps),
        throttle=rng.uniform(0, 1, steps),
        lateral_offset=rng.normal(0, 0.3, steps),
        heading_error=rng.normal(0, 0.1, steps),
        agents=agents,
        action=[[0.0, 0.5]] * (steps - 1) + [None],
        collision=collision,
        collision_with=["pedestrian" if c else None for c in collision],
    )


def make_dataset(root: str, shards: int = 3, episodes_per_shard: int = 2, steps: int = 10) -> Dataset:
    """``shards`` raw shards named s00, s01, ... of whole episodes with a pedestrian crossing mid-episode."""
    ds = Dataset.create(root)
    for s in range(shards):
        episodes = []
        for e in range(episodes_per_shard):
            index = s * episodes_per_shard + e
            episodes.append(raw_episode(f"ep{index:03d}", steps, seed=index, crossing=range(2 + index % 3, 7 + index % 3),
                                        collision_at=steps - 1 if index % 4 == 3 else None))
        ds.write_episode_shard(f"s{s:02d}", pa.concat_tables(episodes))
    return ds


def collect_sumo(root: Path) -> Dataset:
    """A real SUMO dataset (bundled town, expert policy, pedestrians and cyclists), built once per session."""
    from collect.collector import collect_episodes
    from collect.env import EnvSpec, EpisodeLimits

    done = root / "collected"
    if not done.is_file():
        collect_episodes(str(root / "ds"), EnvSpec(sim="sumo", limits=EpisodeLimits(max_steps=SUMO_STEPS)), "expert",
                         episodes=SUMO_EPISODES, seed=3, episodes_per_shard=1)
        done.touch()
    return Dataset.open(str(root / "ds"))


@pytest.fixture(scope="session")
def sumo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Read-only: copy it before labelling (``shutil.copytree(sumo_dataset.path, ...)``)."""
    return collect_sumo(tmp_path_factory.getbasetemp() / "annotate_sumo")
