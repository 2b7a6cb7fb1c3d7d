"""Sample BEV frames as PNGs for humans: what the policy and CLIP actually see, pedestrians near the ego first.

    python -m collect.render_samples DATASET OUT_DIR [--episodes ID ...] [--per-episode 6] [--near-m 15]
    python -m collect.render_samples --live sumo OUT_DIR [--seed 0] [--steps 400]
    python -m collect.render_samples --live sumo OUT_DIR --scenario ped_crossing [--scenario ...] [--policy NAME]

From a dataset it decodes the stored ``bev`` frames (nothing is re-rendered, so you see the exact bytes that
were written); live, it drives a policy (the expert by default) on a backend and renders its scenes; with
``--scenario`` it drives ``--max-episodes`` episodes of each scenario and keeps, per episode, frames from just
before its hazard was set off to a few seconds after (one row of the sheet per episode). Frames are written
enlarged (nearest neighbour, pixels stay crisp) to ``OUT_DIR/frames/`` with a ``contact_sheet.png`` beside them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from collect.env import DrivingEnv, EnvSpec
from collect.scene import Scene
from collect.policies import BUILTIN, make_policy
from collect.policies.base import Policy
from collect.rollout import drive
from collect.scenarios import FREE, SCENARIOS
from data_schema import Dataset, DatasetError, decode_image


@dataclass(frozen=True)
class Sample:
    """One chosen frame and what its caption says."""

    episode_id: str
    step: int
    pedestrian_m: float  # distance to the nearest pedestrian, inf if none
    frame: np.ndarray
    title: str = ""  # the caption's text, instead of episode, step and pedestrian distance

    @property
    def caption(self) -> str:
        if self.title:
            return self.title
        near = f"  ped {self.pedestrian_m:.1f} m" if math.isfinite(self.pedestrian_m) else ""
        return f"{self.episode_id[-14:]} #{self.step}{near}"


def nearest_pedestrian(agents: pa.Array) -> np.ndarray:
    """Per row of an ``agents`` column (ego frame), the distance to the nearest pedestrian (inf if none)."""
    agents = agents.combine_chunks() if isinstance(agents, pa.ChunkedArray) else agents
    out = np.full(len(agents), np.inf)
    if len(agents) == 0:
        return out
    parents = pc.list_parent_indices(agents).to_numpy()
    values = pc.list_flatten(agents)
    if len(values) == 0:
        return out
    is_ped = pc.equal(values.field("kind"), "pedestrian").to_numpy(zero_copy_only=False)
    dist = np.hypot(values.field("x").to_numpy(), values.field("y").to_numpy())
    np.minimum.at(out, parents[is_ped], dist[is_ped])
    return out


def _evenly(indices: np.ndarray, k: int) -> np.ndarray:
    if len(indices) <= k:
        return indices
    return np.unique(indices[np.round(np.linspace(0, len(indices) - 1, k)).astype(int)])


def pick_frames(pedestrian_m: np.ndarray, near_m: float, count: int) -> np.ndarray:
    """Up to ``count`` row indices: frames with a pedestrian within ``near_m`` first (spread over the episode),
    the rest of the budget spread over the other frames."""
    rows = np.arange(len(pedestrian_m))
    near = _evenly(rows[pedestrian_m <= near_m], count)
    rest = _evenly(np.setdiff1d(rows, near), count - len(near))
    return np.sort(np.concatenate([near, rest]))


def samples_from_dataset(
    dataset: Dataset, episodes: Sequence[str] = (), max_episodes: int = 8, per_episode: int = 6, near_m: float = 15.0
) -> list[Sample]:
    """Chosen frames of the named episodes (or of the first ``max_episodes``), read shard by shard."""
    wanted = set(episodes)
    found: set[str] = set()
    samples: list[Sample] = []
    for shard in dataset.shards():
        if not wanted and len(found) >= max_episodes:
            break
        table = dataset.read_shard(shard, ["episode_id", "step", "agents"])
        ids = table.column("episode_id").to_numpy(zero_copy_only=False)
        steps = table.column("step").to_numpy()
        distance = nearest_pedestrian(table.column("agents"))
        bev = None
        for episode in dict.fromkeys(ids):  # in order of appearance
            if (wanted and episode not in wanted) or (not wanted and len(found) >= max_episodes):
                continue
            found.add(episode)
            rows = np.flatnonzero(ids == episode)
            rows = rows[np.argsort(steps[rows], kind="stable")]
            if bev is None:  # images only for shards that contribute frames
                bev = dataset.read_shard(shard, ["bev"]).column("bev")
            for i in rows[pick_frames(distance[rows], near_m, per_episode)]:
                samples.append(Sample(str(episode), int(steps[i]), float(distance[i]), decode_image(bev[int(i)].as_py())))
    missing = sorted(wanted - found)
    if missing:
        raise DatasetError(f"{dataset.url}: no episode {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} in the dataset")
    if not samples:
        raise DatasetError(f"{dataset.url}: holds no episodes yet (`pipeline collect` writes them)")
    return samples


def _pedestrian_m(scene: Scene) -> float:
    return min((math.hypot(a.x - scene.ego.x, a.y - scene.ego.y) for a in scene.agents if a.kind == "pedestrian"), default=math.inf)


def samples_from_env(env: DrivingEnv, policy: Policy, seed: int, steps: int, count: int, near_m: float = 15.0) -> list[Sample]:
    """Drive ``policy`` for ``steps`` frames (episodes ``seed``, ``seed + 1``, ... as each ends) and keep ``count``."""
    frames: list[tuple[str, int, float, np.ndarray]] = []
    episode = seed
    while len(frames) < steps:
        for current, _ in drive(env, policy, episode):
            frames.append((f"live-{env.backend.name}-s{episode}", current.step, _pedestrian_m(current.obs.scene), current.bev))
            if len(frames) == steps:
                break
        episode += 1
    chosen = pick_frames(np.array([f[2] for f in frames]), near_m, count)
    return [Sample(*frames[i]) for i in chosen]


def samples_around_hazards(
    env: DrivingEnv, policy: Policy, scenario: str, seeds: Sequence[int], count: int, before_s: float = 1.0, after_s: float = 4.0
) -> list[Sample]:
    """Per episode of ``scenario`` (SUMO), ``count`` frames evenly from ``before_s`` before its hazard was set off
    to ``after_s`` after, or the episode's end; the whole episode where it never was. Captions give the
    scenario, seed, time from the hazard and how the episode ended."""
    samples = []
    for seed in seeds:
        frames = []
        for current, _ in drive(env, policy, seed, scenario):
            frames.append((current.obs.t, current.step, _pedestrian_m(current.obs.scene), current.bev))
        end = current.outcome
        set_off = env.backend.stage.director.triggered_at
        t = np.array([f[0] for f in frames])
        rows = np.arange(len(frames)) if set_off is None else np.flatnonzero((t >= set_off - before_s) & (t <= set_off + after_s))
        for i in _evenly(rows, count):
            since = "" if set_off is None else f" {t[i] - set_off:+.1f}s"
            title = f"{scenario} s{seed}{since}{' ' + end if i == len(frames) - 1 else ''}"
            samples.append(Sample(f"{scenario}-s{seed}", frames[i][1], frames[i][2], frames[i][3], title))
    return samples


def contact_sheet(samples: Sequence[Sample], scale: int, columns: int) -> Image.Image:
    """A grid of the frames, each captioned with episode, step and nearest pedestrian."""
    size = samples[0].frame.shape[0] * scale
    caption_h = 14
    columns = max(1, min(columns, len(samples)))
    rows = math.ceil(len(samples) / columns)
    sheet = Image.new("RGB", (columns * (size + 4) + 4, rows * (size + caption_h + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, sample in enumerate(samples):
        x = 4 + (k % columns) * (size + 4)
        y = 4 + (k // columns) * (size + caption_h + 4)
        sheet.paste(_enlarged(sample.frame, scale), (x, y))
        draw.text((x + 2, y + size + 1), sample.caption, fill=(0, 0, 0))
    return sheet


def _enlarged(frame: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(frame)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def _save(image: Image.Image, path: Path) -> None:
    """Write a PNG so that it appears complete or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_samples(
    samples: Sequence[Sample], out_dir: Path, scale: int = 3, columns: int = 6, sheet_max: int = 48, in_order: bool = False
) -> list[Path]:
    """Each frame as ``frames/<episode>_<step>.png`` and the first ``sheet_max`` on ``contact_sheet.png``.

    Frames with a pedestrian nearby come first on the sheet, unless ``in_order`` keeps the order given."""
    frames_dir = out_dir / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in samples:
        path = frames_dir / f"{sample.episode_id}_{sample.step:05d}.png"
        _save(_enlarged(sample.frame, scale), path)
        paths.append(path)
    ordered = samples if in_order else sorted(samples, key=lambda s: (not math.isfinite(s.pedestrian_m), s.episode_id, s.step))
    on_sheet = list(ordered)[:sheet_max]
    sheet = out_dir / "contact_sheet.png"
    _save(contact_sheet(on_sheet, max(1, scale - 1), columns), sheet)
    return paths + [sheet]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("source")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--live", is_flag=True, help="SOURCE names a simulator backend (sumo) to drive live instead of a dataset.")
@click.option("--episodes", "episodes", multiple=True, help="Episode id to sample (repeatable). Default: the first --max-episodes.")
@click.option("--max-episodes", type=click.IntRange(min=1), default=8, show_default=True, help="Episodes to sample when none are named.")
@click.option("--per-episode", type=click.IntRange(min=1), default=6, show_default=True,
              help="Frames per episode (live: in all); frames with a pedestrian within --near-m are chosen first.")
@click.option("--near-m", type=click.FloatRange(min=0.0), default=15.0, show_default=True, help="What counts as a pedestrian near the ego (m).")
@click.option("--scale", type=click.IntRange(min=1, max=8), default=3, show_default=True, help="Enlargement of the written frames.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Live: first episode's seed.")
@click.option("--steps", type=click.IntRange(min=1), default=400, show_default=True, help="Live: steps to drive.")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice([s for s in SCENARIOS if s != FREE]),
              help="Live: frames around this scenario's hazard, --max-episodes episodes of it (repeatable).")
@click.option("--policy", type=click.Choice(BUILTIN), default="expert", show_default=True, help="Live: the policy that drives.")
def main(source: str, out_dir: Path, live: bool, episodes: tuple[str, ...], max_episodes: int, per_episode: int,
         near_m: float, scale: int, seed: int, steps: int, scenarios: tuple[str, ...], policy: str) -> None:  # fmt: skip
    """Write sample BEV frames of SOURCE (a dataset path or URL) as PNGs and a contact sheet into OUT_DIR."""
    if scenarios and not live:
        raise click.BadParameter("--scenario drives scenarios live: add --live", param_hint="--scenario")
    if live:
        if source != "sumo":
            raise click.BadParameter(f"live sampling drives the embedded SUMO backend only, got {source!r}", param_hint="SOURCE")
        env = EnvSpec(sim="sumo", scenarios=scenarios or (FREE,)).build()
        driver = make_policy(policy, seed)
        seeds = range(seed, seed + max_episodes)
        try:
            if scenarios:
                samples = [s for name in scenarios for s in samples_around_hazards(env, driver, name, seeds, per_episode)]
            else:
                samples = samples_from_env(env, driver, seed, steps, per_episode, near_m)
        finally:
            env.close()
        if scenarios:
            paths = write_samples(samples, out_dir, scale, columns=per_episode, sheet_max=len(samples), in_order=True)
            click.echo(f"wrote {len(samples)} frames around the hazards of {', '.join(scenarios)} and {paths[-1]}")
            return
    else:
        try:
            samples = samples_from_dataset(Dataset.open(source), episodes, max_episodes, per_episode, near_m)
        except DatasetError as e:
            raise click.ClickException(str(e)) from None
    paths = write_samples(samples, out_dir, scale)
    near = sum(math.isfinite(s.pedestrian_m) and s.pedestrian_m <= near_m for s in samples)
    click.echo(f"wrote {len(samples)} frames ({near} with a pedestrian within {near_m:g} m) and {paths[-1]}")


if __name__ == "__main__":
    main()
