"""Search settings checked where they are built: one-line errors that name the key, one case per
check of SearchOptions (each fails alone when its check is removed)."""

from __future__ import annotations

import math

import pytest

from nmt.core.search_options import MAX_ALPHA, SearchError, SearchOptions

GOOD = dict(
    beam_size=2,
    alpha=0.6,
    max_len_a=1.5,
    max_len_b=4,
    min_len=0,
    n_best=2,
    coverage_penalty=0.0,
    no_repeat_ngram=0,
)
NUMERIC = sorted(GOOD)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"beam_size": 0}, "search.beam_size=0: must be at least 1"),
        ({"n_best": 3}, "search.n_best=3 with search.beam_size=2: a beam keeps at most"),
        ({"n_best": 0}, "search.n_best=0 with search.beam_size=2"),
        ({"alpha": MAX_ALPHA + 1}, f"search.alpha=11.0: at most {MAX_ALPHA}"),
        ({"alpha": 1e308}, "search.alpha=1e+308: at most"),  # its length penalty overflows
        ({"alpha": math.nan}, "search.alpha=nan: expected a finite number"),
        ({"max_len_a": math.inf}, "search.max_len_a=inf: expected a finite number"),
        ({"coverage_penalty": "x"}, "search.coverage_penalty='x': expected a finite number"),
        ({"alpha": True}, "search.alpha=True: expected a finite number"),
        ({"beam_size": "5"}, "search.beam_size='5': expected a whole number"),
        ({"max_len_b": 2.5}, "search.max_len_b=2.5: expected a whole number"),
        ({"no_repeat_ngram": False}, "search.no_repeat_ngram=False: expected a whole number"),
    ]
    + [
        ({key: -1}, f"search.{key}=-1: must not be negative")
        for key in NUMERIC
        if key != "beam_size"
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else None,
)
def test_each_bad_setting_is_one_line_naming_its_key(changes, says):
    if changes.get("n_best") == -1:
        says = "search.n_best=-1 with"  # the beam's check comes first
    with pytest.raises(SearchError) as refused:
        SearchOptions(**{**GOOD, **changes})
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_good_settings_pass_and_replace_checks_again():
    options = SearchOptions(**GOOD)
    assert options.replace(alpha=2) == SearchOptions(**{**GOOD, "alpha": 2})  # an int is a number
    assert options.replace(n_best=1).greedy().is_greedy
    with pytest.raises(SearchError, match=r"unknown search options \['beam'\]"):
        options.replace(beam=3)
    with pytest.raises(SearchError, match="search.min_len=-2: must not be negative"):
        options.replace(min_len=-2)
