"""Search settings checked where they are built: one-line errors that name the key."""

from __future__ import annotations

import pytest

from nmt.search_options import SearchOptions


def test_bad_search_settings_are_one_line_errors():
    options = dict(
        beam_size=2,
        alpha=0.6,
        max_len_a=1.5,
        max_len_b=4,
        min_len=0,
        n_best=3,
        coverage_penalty=0.0,
        no_repeat_ngram=0,
    )
    with pytest.raises(ValueError, match=r"search.n_best=3 with search.beam_size=2"):
        SearchOptions(**options)
    with pytest.raises(ValueError, match=r"search.min_len=-1: must not be negative"):
        SearchOptions(**{**options, "n_best": 1, "min_len": -1})
    SearchOptions(**{**options, "n_best": 2})
