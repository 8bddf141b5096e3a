"""Where training stands (nmt.training.progress): the limits that stop it, the summary done.json gets, the
TensorBoard switch."""

from __future__ import annotations

import dataclasses

import pytest

from nmt.training.progress import Progress, TrainOptions, limit_reached


def options(**changes) -> TrainOptions:
    values = {f.name: 0 for f in dataclasses.fields(TrainOptions)}
    return TrainOptions(**{**values, **changes})


def test_limits_stop_at_their_step_and_minute():
    state = Progress(step=99, train_seconds=59.0)
    assert limit_reached(state, options(max_steps=100, max_minutes=1)) is None
    assert limit_reached(Progress(step=100), options(max_steps=100)) == "max_steps"
    assert limit_reached(Progress(train_seconds=60.0), options(max_minutes=1)) == "max_minutes"
    assert limit_reached(Progress(step=10**6, train_seconds=1e9), options()) is None  # 0: none


def test_the_summary_counts_validation_time_apart():
    state = Progress(step=40, best_step=30, train_seconds=120.0, valid_seconds=20.0, tokens=5000)
    summary = state.summary("early_stopping")
    assert summary["tokens_per_s"] == pytest.approx(5000 / 120)
    assert summary["train_tokens_per_s"] == pytest.approx(5000 / 100)
    assert (summary["minutes"], summary["valid_minutes"]) == (2.0, pytest.approx(1 / 3))
    assert (summary["steps"], summary["best_step"], summary["stop_reason"]) == (
        40,
        30,
        "early_stopping",
    )
