"""The rule of a learning-rate search on a log grid: which rate wins, and where to look next
while the winner is at an edge of what was tried (an optimum at an edge is not yet an optimum).
Used by the sweep that runs the search (``nmt.sweep``) and the report that shows it."""

from __future__ import annotations

import math


def bracket(scored: dict[float, float | None], factor: float) -> tuple[float, float | None]:
    """For one cell's tuning: the chosen rate (the best validation BLEU; a tie goes to the smaller
    rate; a failed run, None, counts as worst) and the next rate to try, None when the best is
    bracketed (a strictly worse rate on each side of every rate that reaches the best)."""
    rates = sorted(scored)
    values = [-math.inf if scored[r] is None else scored[r] for r in rates]
    best = max(values)
    first = values.index(best)
    last = len(values) - 1 - values[::-1].index(best)
    if first == 0:  # lower still might be better (and when every rate failed, lower it is)
        return rates[first], _grid(rates[0] / factor)
    if last == len(rates) - 1:
        return rates[first], _grid(rates[-1] * factor)
    return rates[first], None


def _grid(rate: float) -> float:
    return float(f"{rate:.6g}")  # 0.004 * 2 is 0.008, not 0.008000000000000002
