"""Captions from ground truth: they say exactly what hand-built rows hold, the same way on every run."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from annotate.captions import TEMPLATES, Sentence, captions, template_hash

from episode_tables import episode_table


def agent(kind: str, x: float, y: float, yaw: float = 0.0, speed: float = 0.0, length: float = 0.5, width: float = 0.5) -> dict:
    return {"kind": kind, "x": x, "y": y, "yaw": yaw, "speed": speed, "length": length, "width": width}


def filled(slot: str, **fields: object) -> set[str]:
    """Every phrasing the slot may take with these fields."""
    return {variant.format(**fields) for variant in TEMPLATES[slot]}


def check(sentences: list[Sentence], expected: list[tuple[str, dict]]) -> None:
    assert [s.slot for s in sentences] == [slot for slot, _ in expected]
    for sentence, (slot, fields) in zip(sentences, expected):
        assert sentence.text in filled(slot, **fields), sentence


def scenes() -> pa.Table:
    ped = {"kind": "pedestrian", "a_kind": "a pedestrian", "A_kind": "A pedestrian"}
    # ego front bumper at 2.25 m; gaps are measured from it to the near side of each footprint
    road = episode_table(
        "road", 5, t=[0.0, 0.1, 0.2, 0.3, 0.4],
        speed=[5.0, 8.0, 0.0, 5.0, 5.0],
        lateral_offset=[0.0, 0.0, 1.2, 0.0, -1.0],
        agents=[
            [agent("pedestrian", 12.5, -0.5, yaw=math.pi / 2, speed=1.2)],  # crossing from the right, 10 m
            [agent("vehicle", 13.25, 0.0, length=4.5, width=1.8)],  # stopped 8.75 m ahead: within 8 + 8 m braking
            [],
            [agent("cyclist", 6.0, 5.0, speed=3.0, length=1.8, width=0.6)],  # on the sidewalk to the left
            [agent("vehicle", 30.25, 0.2, speed=6.0, length=4.5, width=1.8)],  # far ahead in the lane, 25.75 m
        ],
    )  # fmt: skip
    crash = episode_table(
        "crash", 3, t=[0.0, 1.5, 2.0], speed=6.0, collision=[False, False, True], collision_with=[None, None, "pedestrian"],
        red_light=[True, False, False],
    )  # fmt: skip
    return pa.concat_tables([road, crash]), ped


def test_captions_say_exactly_what_the_rows_hold():
    table, ped = scenes()
    rows = captions(table)
    check(rows[0], [("agent_crossing", {**ped, "gap": 10, "side": "right"}), ("slow_down", {}), ("driving", {"kmh": 18})])
    check(rows[1], [("vehicle_standing", {"gap": 9, "side": "left"}), ("slow_down", {}), ("driving", {"kmh": 29})])
    check(rows[2], [("clear", {}), ("drive_on", {}), ("standing_still", {}), ("drifting", {"side": "left"})])
    cyclist = {"kind": "cyclist", "a_kind": "a cyclist", "A_kind": "A cyclist"}
    check(rows[3], [("clear", {}), ("drive_on", {}), ("beside", {**cyclist, "gap": 3, "side": "left"}), ("driving", {"kmh": 18})])
    check(rows[4], [("clear", {}), ("drive_on", {}), ("vehicle_ahead", {"gap": 26}), ("driving", {"kmh": 18}), ("drifting", {"side": "right"})])
    # the crash episode: 1.5 s before the collision nothing is said of it, 0.5 s before it is imminent
    check(rows[5], [("clear", {}), ("drive_on", {}), ("driving", {"kmh": 22}), ("red_light", {})])
    check(rows[6], [("collision_soon", {"a_kind": "a pedestrian"}), ("slow_down", {}), ("driving", {"kmh": 22})])
    check(rows[7], [("collided", {"a_kind": "a pedestrian"}), ("slow_down", {}), ("driving", {"kmh": 22})])


def test_off_road_and_kinds_the_schema_does_not_list():
    table = episode_table("off", 2, t=[0.0, 0.5], speed=4.0, off_road=[False, True])
    rows = captions(table)
    assert rows[0][0].slot == "off_road_soon" and rows[1][0].slot == "left_road"
    odd = episode_table("odd", 1, collision=True, collision_with="traffic cone", speed=0.0)
    assert captions(odd)[0][0].text in filled("collided", a_kind="an obstacle")


def test_the_same_row_always_gets_the_same_caption_whatever_the_row_order():
    table, _ = scenes()
    once = captions(table)
    reversed_rows = captions(table.take(list(range(table.num_rows))[::-1]))
    assert captions(table) == once
    assert reversed_rows[::-1] == once
    # phrasing varies between rows: 200 clear frames use every variant of the slot
    clear = episode_table("many", 200)
    assert {rows[0].text for rows in captions(clear)} == set(TEMPLATES["clear"])


def test_the_template_hash_tracks_the_templates(monkeypatch):
    before = template_hash()
    assert template_hash() == before
    monkeypatch.setitem(TEMPLATES, "clear", ("The road is empty.",))  # type: ignore[index]
    assert template_hash() != before


def test_missing_columns_are_named():
    table, _ = scenes()
    with pytest.raises(KeyError, match="lateral_offset"):
        captions(table.drop_columns(["lateral_offset"]))


def test_mirrored_sentences_swap_the_sides_and_only_them():
    walker = [agent("pedestrian", 12.5, -0.5, yaw=math.pi / 2, speed=1.2)]  # crossing from the right
    sentences = [s for row in captions(episode_table("walk", 60, agents=[walker] * 60, lateral_offset=1.2)) for s in row]
    sided = [s for s in sentences if "from the right" in s.text or "to the left" in s.text]
    assert {s.slot for s in sided} == {"agent_crossing", "drifting"}
    for s in sided:
        assert s.mirrored == s.text.replace("from the right", "from the left").replace("to the left", "to the right")
    assert all(s.mirrored == s.text for s in sentences if s not in sided and "left" not in s.text and "right" not in s.text)
    off = captions(episode_table("off", 1, off_road=True))[0][0]
    assert off.slot == "left_road" and off.mirrored == off.text  # "left" the verb stays
