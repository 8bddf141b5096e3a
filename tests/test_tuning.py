"""The search rule: the best rate, and the next one past the edge that holds it."""

from __future__ import annotations

import pytest

from nmt.scoring.tuning import bracket


@pytest.mark.parametrize(
    ("scored", "expected"),
    [
        ({0.002: 20.0, 0.004: 22.0, 0.008: 21.0}, (0.004, None)),  # bracketed
        ({0.002: 20.0, 0.004: 21.0, 0.008: 22.0}, (0.008, 0.016)),  # best at the top: go up
        ({0.002: 22.0, 0.004: 21.0, 0.008: 20.0}, (0.002, 0.001)),  # at the bottom: go down
        ({0.002: 20.0, 0.004: 22.0, 0.008: None}, (0.004, None)),  # a failed run is worse
        ({0.002: None, 0.004: None}, (0.002, 0.001)),  # all failed: lower
        ({0.002: 21.0, 0.004: 22.0, 0.008: 22.0}, (0.004, 0.016)),  # a tie reaching the top
        ({0.001: 21.0, 0.002: 22.0, 0.004: 22.0, 0.008: 21.5}, (0.002, None)),  # tie inside
        ({0.004: 22.0}, (0.004, 0.002)),
    ],
)
def test_bracket_widens_past_the_edge_that_holds_the_best(scored, expected):
    assert bracket(scored, 2.0) == expected
