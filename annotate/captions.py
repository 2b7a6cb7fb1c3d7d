"""Captions of BEV frames from the simulator's ground truth: the text side of CLIP fine-tuning.

Each raw row gets a few sentences saying what the row holds: the hazards of
``data_schema.groundtruth.hazards`` first (a collision or leaving the road, now or within the rule's horizon;
the nearest pedestrian, cyclist or motorcycle in the corridor and how it moves; the nearest vehicle within
braking distance) and that the car must slow down, or that the road ahead is clear and the car may drive on;
then one road user nearby that is no hazard; then the ego's own state (speed, drifting in its lane, a red
light it ran). Captions are derived on the fly and never
stored as raw columns.

Raw rows hold no traffic-light state, only the ``red_light`` event (the ego crossed a stop line on red), so
that event is the one thing said about lights.

Phrasing varies between rows but not between runs: each sentence's phrasing is chosen by a hash of the row's
key and the sentence's slot, so the same row always gets the same caption. Every template, word and
threshold enters :func:`template_hash`; change one and bump ``TEMPLATE_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from data_schema.groundtruth import CRITICAL_KINDS, HAZARD_COLUMNS, HazardRule, HazardSources, agent_motion, hazard_sources, nearest_per_row

__all__ = ["CAPTION_COLUMNS", "CONTEXT_SLOTS", "Sentence", "TEMPLATES", "TEMPLATE_VERSION", "captions", "template_hash"]

TEMPLATE_VERSION = 1
#: Raw step columns the captions read.
CAPTION_COLUMNS = (*HAZARD_COLUMNS, "collision_with", "red_light", "lateral_offset")

#: Phrasings per sentence slot. Fields: ``{a_kind}`` ("a pedestrian", "an obstacle"), ``{kind}``,
#: ``{gap}`` (metres from the front bumper, rounded), ``{side}`` (left / right), ``{kmh}``.
TEMPLATES: Mapping[str, tuple[str, ...]] = {
    # events (the row's own, or coming within the hazard rule's horizon)
    "collided": ("The car has hit {a_kind}.", "The car crashed into {a_kind}.", "A collision with {a_kind} has happened."),
    "left_road": ("The car has left the road.", "The car is off the road.", "The car drove off the road."),
    "collision_soon": ("The car is about to hit {a_kind}.", "A crash with {a_kind} is imminent.", "The car will collide with {a_kind}."),
    "off_road_soon": ("The car is about to leave the road.", "The car is running off the road.", "The car will leave the road."),
    # a critical road user in the corridor, by how it moves
    "agent_crossing": (
        "{A_kind} is crossing {gap} m ahead, from the {side}.",
        "{A_kind} crosses the road from the {side}, {gap} m ahead.",
        "{A_kind} is crossing the lane in front of the car.",
    ),
    "agent_standing": (
        "{A_kind} is standing in the lane {gap} m ahead.",
        "{A_kind} stands on the road {gap} m ahead.",
        "{A_kind} is waiting in the road in front of the car.",
    ),
    "agent_same_way": (
        "{A_kind} is moving in the lane {gap} m ahead.",
        "{A_kind} travels ahead of the car in its lane, {gap} m away.",
        "{A_kind} is in the lane in front of the car.",
    ),
    "agent_oncoming": (
        "{A_kind} is coming towards the car, {gap} m ahead.",
        "{A_kind} approaches the car in its lane, {gap} m ahead.",
        "{A_kind} is heading for the car.",
    ),
    # a vehicle within braking distance in the lane
    "vehicle_standing": ("A car is stopped close ahead.", "A stopped car blocks the lane {gap} m ahead.", "A car stands in the lane just ahead."),
    "vehicle_crossing": ("A car is crossing close ahead, from the {side}.", "A car crosses the lane {gap} m ahead.", "A car is turning across the lane just ahead."),
    "vehicle_same_way": ("A car is close ahead, {gap} m away.", "The car follows another car closely.", "Another car is just ahead in the lane."),
    "vehicle_oncoming": ("An oncoming car is close ahead.", "A car comes towards the car in its lane, {gap} m ahead.", "A car is heading for the car."),
    # nothing of the above
    "clear": (
        "The road ahead is clear.",
        "The lane ahead is empty.",
        "Nothing is in the way ahead.",
        "The lane in front of the car is free.",
        "No road user is ahead of the car.",
    ),
    # what the hazards above imply for the ego, or their absence
    "slow_down": ("The car must slow down.", "The car has to brake.", "Danger: the car must be ready to stop."),
    "drive_on": ("The car can keep its speed.", "The car may drive on.", "It is safe to drive on."),
    # context that is no hazard
    "beside": ("{A_kind} is beside the road on the {side}.", "{A_kind} is at the {side} side of the road.", "{A_kind} is on the sidewalk to the {side}."),
    "vehicle_ahead": ("A car drives {gap} m ahead.", "Another car is far ahead in the lane.", "A car is in the lane well ahead."),
    # the ego
    "standing_still": ("The car is standing still.", "The car is stopped.", "The car waits."),
    "driving": ("The car is driving at {kmh} km/h.", "The car drives {kmh} km/h.", "The speed of the car is {kmh} km/h."),
    "drifting": ("The car is drifting to the {side} of its lane.", "The car is off the centre of its lane, to the {side}."),
    "red_light": ("The car has run a red light.", "The car drove through a red light."),
}

#: Slots a fine-tune leaves out of its training text by default: the ego's speed, which one BEV frame does not
#: show, and road users that are no hazard, which dilute what a few minutes of training learn about danger.
CONTEXT_SLOTS = ("standing_still", "driving", "beside", "vehicle_ahead")

_OTHER_SIDE = {"left": "right", "right": "left"}
#: Words for agent kinds (``collision_with`` may hold a kind the schema does not list).
KIND_WORDS = {"vehicle": "car", "pedestrian": "pedestrian", "cyclist": "cyclist", "motorcycle": "motorcycle", "static": "obstacle"}
#: A road user that is no hazard is mentioned within this box around the ego (metres ahead / behind / aside).
NEARBY_AHEAD_M, NEARBY_BEHIND_M, NEARBY_SIDE_M = 20.0, 5.0, 8.0
#: A vehicle in the lane beyond braking distance is mentioned up to this far ahead.
VEHICLE_AHEAD_M = 40.0
#: Speeds below this are standing still (m/s); lateral offsets beyond this are drifting (m).
STANDING_MPS = 0.3
DRIFT_M = 0.9


def template_hash(rule: HazardRule = HazardRule()) -> str:
    """``sha256-<hex>`` of everything that decides a caption: version, templates, words, thresholds, hazard rule."""
    document = {
        "version": TEMPLATE_VERSION,
        "templates": TEMPLATES,
        "kinds": KIND_WORDS,
        "thresholds": [NEARBY_AHEAD_M, NEARBY_BEHIND_M, NEARBY_SIDE_M, VEHICLE_AHEAD_M, STANDING_MPS, DRIFT_M],
        "rule": repr(rule),
    }
    return "sha256-" + hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


class Sentence(NamedTuple):
    """One sentence of a caption, the template slot it was made from, and the same sentence for the scene
    mirrored left to right (sides swapped; the text itself where it names no side)."""

    slot: str
    text: str
    mirrored: str


def captions(table: pa.Table, rule: HazardRule = HazardRule()) -> list[list[Sentence]]:
    """Per row of ``table`` (``CAPTION_COLUMNS`` at least, rows in any order), its caption's sentences."""
    missing = [c for c in CAPTION_COLUMNS if c not in table.column_names]
    if missing:
        raise KeyError(f"captions need raw column(s) {missing}")
    sources = hazard_sources(table, rule)
    motion = agent_motion(sources.fields, STANDING_MPS)
    nearby = _nearby(sources, rule)
    vehicle_ahead = _vehicle_ahead(sources, rule)
    columns = {c: table.column(c).to_pylist() for c in ("episode_id", "step", "collision", "collision_with", "off_road", "red_light")}
    speed = table.column("speed").to_numpy()
    offset = table.column("lateral_offset").to_numpy()
    out = []
    for row in range(table.num_rows):
        say = _Phrasing(columns["episode_id"][row], columns["step"][row])
        sentences = _events(say, row, sources, columns)
        if sources.critical[row] >= 0:
            agent = sources.critical[row]
            sentences.append(say(f"agent_{_motion_slot(motion[agent])}", **_agent_fields(sources, motion, agent)))
        if sources.vehicle[row] >= 0:
            agent = sources.vehicle[row]
            sentences.append(say(f"vehicle_{_motion_slot(motion[agent])}", **_agent_fields(sources, motion, agent)))
        if sentences:
            sentences.append(say("slow_down"))
        else:
            sentences += [say("clear"), say("drive_on")]
        if nearby[row] >= 0:
            sentences.append(say("beside", **_agent_fields(sources, motion, nearby[row])))
        elif vehicle_ahead[row] >= 0 and sources.vehicle[row] < 0:
            sentences.append(say("vehicle_ahead", **_agent_fields(sources, motion, vehicle_ahead[row])))
        if speed[row] < STANDING_MPS:
            sentences.append(say("standing_still"))
        else:
            sentences.append(say("driving", kmh=int(round(float(speed[row]) * 3.6))))
        if abs(offset[row]) > DRIFT_M:
            sentences.append(say("drifting", side="left" if offset[row] > 0 else "right"))
        if columns["red_light"][row]:
            sentences.append(say("red_light"))
        out.append(sentences)
    return out


class _Phrasing:
    """Fills a slot's template, the phrasing chosen by a hash of the row key and the slot."""

    def __init__(self, episode_id: str, step: int) -> None:
        self.key = f"{episode_id}\x00{step}\x00"

    def __call__(self, slot: str, **fields: object) -> Sentence:
        variants = TEMPLATES[slot]
        digest = hashlib.blake2b((self.key + slot).encode(), digest_size=8).digest()
        template = variants[int.from_bytes(digest, "little") % len(variants)]
        mirror = {**fields, "side": _OTHER_SIDE[fields["side"]]} if "side" in fields else fields
        return Sentence(slot, template.format(**fields), template.format(**mirror))


def _events(say: _Phrasing, row: int, sources: HazardSources, columns: dict[str, list]) -> list[Sentence]:
    event = int(sources.event_row[row])
    if event < 0:
        return []
    now = event == row
    if columns["collision"][event]:
        kind = _article(KIND_WORDS.get(columns["collision_with"][event] or "", "obstacle"))
        return [say("collided" if now else "collision_soon", a_kind=kind)]
    return [say("left_road" if now else "off_road_soon")]


def _motion_slot(motion: str) -> str:
    return "crossing" if motion.startswith("crossing") else motion


def _agent_fields(sources: HazardSources, motion: np.ndarray, agent: int) -> dict[str, object]:
    word = KIND_WORDS[str(sources.fields["kind"][agent])]
    if str(motion[agent]).startswith("crossing"):
        side = "left" if motion[agent] == "crossing_from_left" else "right"
    else:
        side = "left" if sources.fields["y"][agent] > 0 else "right"
    a_kind = _article(word)
    return {"kind": word, "a_kind": a_kind, "A_kind": a_kind.capitalize(), "gap": int(round(float(sources.gap_m[agent]))), "side": side}


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _nearby(sources: HazardSources, rule: HazardRule) -> np.ndarray:
    """Per row, the nearest critical road user around the ego that is not the row's corridor hazard."""
    x, y = sources.fields["x"], sources.fields["y"]
    near = np.isin(sources.fields["kind"], list(CRITICAL_KINDS)) & (x > -NEARBY_BEHIND_M) & (x < NEARBY_AHEAD_M) & (np.abs(y) < NEARBY_SIDE_M)
    near[sources.critical[sources.critical >= 0]] = False
    return nearest_per_row(sources.parents, near, np.hypot(x, y), len(sources.critical))


def _vehicle_ahead(sources: HazardSources, rule: HazardRule) -> np.ndarray:
    """Per row, the nearest vehicle in the lane ahead within ``VEHICLE_AHEAD_M``."""
    x, y = sources.fields["x"], sources.fields["y"]
    ahead = (sources.fields["kind"] == "vehicle") & (x > 0) & (x < VEHICLE_AHEAD_M) & (np.abs(y) < rule.corridor.half_width)
    return nearest_per_row(sources.parents, ahead, x, len(sources.critical))
