"""Actions become controls in one place, for every backend: ``Controls.from_action`` refuses what is not an action."""

from __future__ import annotations

import numpy as np
import pytest

from collect.backend import Controls
from collect.policies.random import RandomConfig, RandomPolicy


def test_an_action_splits_into_steer_throttle_and_brake() -> None:
    assert Controls.from_action(np.array([0.5, 0.25], dtype=np.float32)) == Controls(steer=0.5, throttle=0.25, brake=0.0)
    assert Controls.from_action([-1.0, -1.0]) == Controls(steer=-1.0, throttle=0.0, brake=1.0)
    assert Controls.from_action(np.array([[1.0, 1.0]])) == Controls(steer=1.0, throttle=1.0, brake=0.0)


@pytest.mark.parametrize(
    "action",
    [[0.0, np.nan], [np.inf, 0.0], [1.5, 0.0], [0.0, -1.0001], [0.0, 0.0, 0.0], [0.0], "fast", None],
    ids=["nan", "inf", "steer-over", "brake-over", "three", "one", "text", "none"],
)
def test_anything_but_two_finite_numbers_in_range_is_refused(action: object) -> None:
    with pytest.raises(ValueError, match=r"action must be 2 finite numbers \[steer, throttle/brake\] in \[-1, 1\]"):
        Controls.from_action(action)


def test_the_random_policy_stays_in_range_however_wild_its_noise() -> None:
    policy = RandomPolicy(RandomConfig(sigma=5.0, accel_mean=1.0), seed=3)
    actions = np.array([policy.act(None) for _ in range(500)])
    assert np.abs(actions).max() == 1.0  # it does reach the bounds, and no further
    for action in actions[:50]:
        Controls.from_action(action)
