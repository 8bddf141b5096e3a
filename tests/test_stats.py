"""Across-seed statistics against answers known by hand or published."""

from __future__ import annotations

import random

import pytest
from sacrebleu.metrics import BLEU, CHRF

from nmt.scoring.stats import corpus_score, seed_bootstrap, sentence_statistics, summarize, welch


def test_summary_of_five_runs():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.n == 5 and s.mean == 3.0
    assert s.std == pytest.approx(1.5811388, abs=1e-6)  # sqrt(2.5)
    # t(0.975, 4) = 2.776445: 3 ± 2.776445 * sqrt(2.5) / sqrt(5)
    assert s.low == pytest.approx(3 - 1.9632432, abs=1e-6)
    assert s.high == pytest.approx(3 + 1.9632432, abs=1e-6)


def test_summary_of_three_seeds_uses_the_wide_t_quantile():
    s = summarize([36.0, 37.0, 38.0])
    # t(0.975, 2) = 4.302653 (not the normal 1.96): 37 ± 4.302653 * 1 / sqrt(3)
    assert (s.low, s.high) == pytest.approx((37 - 2.4841377, 37 + 2.4841377), abs=1e-6)
    assert summarize([37.0]).as_dict() == {"n": 1, "mean": 37.0, "std": None, "ci": [None, None]}
    with pytest.raises(ValueError):
        summarize([])


def test_welch_matches_the_published_example():
    # Welch's t-test, worked example 1 of its Wikipedia article: t = -2.46, df = 24.99, p = 0.021
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    assert welch(b, a) == pytest.approx(0.021, abs=0.0005)
    assert welch(a, b) == welch(b, a)  # two-sided
    # Unequal spread and sizes, by hand: s² = 1 and 27.7, t = -6.2 / sqrt(1/3 + 27.7/5) = -2.558,
    # Welch-Satterthwaite df = 4.46, two-sided p = 0.0565 (Student's pooled test says 0.098).
    assert welch([1.0, 2.0, 3.0], [2.0, 4.0, 9.0, 11.0, 15.0]) == pytest.approx(0.0565, abs=5e-4)
    assert welch([1.0], [2.0, 3.0]) is None  # no spread from one seed
    assert welch([1.0, 1.0], [1.0, 1.0]) is None


REFS = [
    f"a small {w} is walking on the {p} near a {q} ."
    for w, p, q in [
        (w, p, q)
        for w in ("dog", "cat", "man", "girl", "boy")
        for p in ("street", "grass", "beach")
        for q in ("tree", "house", "car", "wall")
    ]
]


def degrade(refs: list[str], rate: float, seed: int) -> list[str]:
    """The references with about ``rate`` of their words replaced."""
    rng = random.Random(seed)
    return [" ".join(w if rng.random() > rate else "xx" for w in r.split()) for r in refs]


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_sentence_statistics_sum_to_sacrebleus_corpus_score(metric):
    hyps = degrade(REFS, 0.3, 1)
    expected = {"bleu": BLEU, "chrf": CHRF}[metric]().corpus_score(hyps, [REFS]).score
    assert corpus_score(metric, sentence_statistics(metric, hyps, REFS).sum(0)) == expected


def stats(rates: list[float], seed: int = 0) -> list:
    return [
        sentence_statistics("bleu", degrade(REFS, r, seed + i), REFS) for i, r in enumerate(rates)
    ]


def test_bootstrap_of_a_system_against_itself_finds_nothing():
    runs = stats([0.3, 0.3, 0.3])
    out = seed_bootstrap("bleu", runs, runs, samples=200)
    assert out["delta"] == 0.0 and out["p"] == 1.0
    assert out["ci"][0] <= 0.0 <= out["ci"][1]
    # Paired: one seed a side, every sample draws the same sentences for both, so every sample's
    # difference is exactly 0 (drawn apart, the same system would differ from itself).
    one = seed_bootstrap("bleu", runs[:1], runs[:1], samples=200)
    assert one["ci"] == [0.0, 0.0]


def test_bootstrap_finds_a_clear_difference_and_its_size():
    good, bad = stats([0.1, 0.1, 0.1]), stats([0.5, 0.5, 0.5], seed=10)
    out = seed_bootstrap("bleu", good, bad, samples=300)
    means = [sum(corpus_score("bleu", r.sum(0)) for r in rs) / 3 for rs in (good, bad)]
    assert out["delta"] == pytest.approx(means[1] - means[0])
    assert out["delta"] < -20 and out["p"] < 0.01
    assert out["ci"][1] < 0


def test_seeds_that_disagree_widen_the_interval_and_weaken_the_evidence():
    """The other cell's seeds agree in one case and scatter in the other: the scattered cell is
    even further ahead on average, and still the evidence for it is weaker, as it should be.
    A test of one seed pair sees only one draw of the scatter."""
    base = stats([0.25, 0.25, 0.25])
    steady = stats([0.2, 0.2, 0.2], seed=20)
    scattered = stats([0.0, 0.2, 0.4], seed=20)
    a = seed_bootstrap("bleu", base, steady, samples=400)
    b = seed_bootstrap("bleu", base, scattered, samples=400)
    width = lambda o: o["ci"][1] - o["ci"][0]  # noqa: E731
    assert b["delta"] > a["delta"] > 0
    assert width(b) > 2 * width(a)
    assert b["p"] > a["p"]


def test_bootstrap_refuses_runs_on_other_sentences():
    runs = stats([0.3])
    with pytest.raises(ValueError, match="same sentences"):
        seed_bootstrap("bleu", runs, [runs[0][:10]], samples=100)
