"""Generate the bundled SUMO town and its OpenDRIVE export (run once; outputs are committed).

    python -m collect.town.build_town

A 4 x 3 grid of 90 m blocks, one lane each way, sidewalks on every street, zebra crossings and traffic
lights at the inner junctions (the outer ones stay priority junctions, so both kinds occur). The
OpenDRIVE file is the same network for the CARLA map-geometry code, which runs offline on
``carla.Map(name, opendrive_text)``.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import sumo

HERE = Path(__file__).resolve().parent
NET = HERE / "town.net.xml"
XODR = HERE / "town.xodr"


def _tool(name: str) -> str:
    return str(Path(sumo.SUMO_HOME) / "bin" / name)


def build() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "grid.net.xml"
        subprocess.run(
            [
                _tool("netgenerate"), "--grid", "--grid.x-number", "4", "--grid.y-number", "3",
                "--grid.length", "90", "--default.lanenumber", "1", "--default.lanewidth", "3.5",
                "--default.speed", "13.89", "--no-turnarounds", "true", "--seed", "7",
                "--output-file", str(grid),
            ],
            check=True,
        )
        subprocess.run(
            [
                _tool("netconvert"), "--sumo-net-file", str(grid),
                "--sidewalks.guess", "true", "--default.sidewalk-width", "2.0",
                "--crossings.guess", "true", "--default.crossing-width", "3.0",
                "--tls.set", "B1,C1", "--tls.cycle.time", "40", "--tls.yellow.time", "3",
                "--no-turnarounds", "true", "--junctions.corner-detail", "5",
                "--walkingareas", "true", "--output-file", str(NET),
            ],
            check=True,
        )
    subprocess.run(
        [_tool("netconvert"), "--sumo-net-file", str(NET), "--opendrive-output", str(XODR), "--opendrive-output.straight-threshold", "1e-4"],
        check=True,
    )


if __name__ == "__main__":
    build()
