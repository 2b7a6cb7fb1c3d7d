"""Route metrics every backend reports: ``collect.route``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collect.route import Route, route_state
from collect.scene import Pose


def test_route_state_against_the_route() -> None:
    route = Route(np.array([[0.0, 0.0], [100.0, 0.0]]))
    state = route_state(route, Pose(25.0, 0.5, 0.1), hint=None)
    assert state.progress == pytest.approx(25.0)
    assert state.completion == pytest.approx(0.25)
    assert state.distance_to_goal == pytest.approx(math.hypot(75.0, 0.5))
    assert state.lateral_offset == pytest.approx(0.5)  # left of the route is positive
    assert state.heading_error == pytest.approx(0.1)
    assert state.ahead.shape == (8, 2) and state.ahead[0, 0] > 0  # points ahead are in front of the ego
