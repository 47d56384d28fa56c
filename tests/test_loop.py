"""common/loop.py: the learning-rate schedule, the epoch and the evaluation."""

import math

import pytest

from common.loop import lr_at


def test_cosine_schedule_by_hand():
    assert lr_at(0, 100, 2e-3, "cosine") == pytest.approx(2e-3)
    assert lr_at(50, 100, 2e-3, "cosine") == pytest.approx(1e-3)  # cos(pi/2) = 0
    assert lr_at(25, 100, 2e-3, "cosine") == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)))
    assert lr_at(100, 100, 2e-3, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_at(70, 100, 2e-3, "constant") == 2e-3
