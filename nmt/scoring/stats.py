"""Statistics over seeds: what a cell's score is once the seed is a random variable.

A single training run is one draw: initialisation, dropout and batch order move BLEU by about
as much as the differences between cells. So a cell is summarised by its runs' mean, standard
deviation and a 95 % Student-t interval, and compared with the baseline cell by two tests that
count the seed variance in:

- ``welch``: Welch's t-test on the per-seed scores (unequal variances; needs two seeds a side);
- ``seed_bootstrap``: a two-level paired bootstrap (Clark et al. 2011, "Better Hypothesis
  Testing for Statistical Machine Translation: Controlling for Optimizer Instability"). Each
  sample draws the test sentences with replacement (the same draw for both cells: paired) and,
  for each cell, its seeds with replacement; a cell's score is the mean over its drawn seeds of
  the corpus metric on the drawn sentences. With one seed a side it is sacreBLEU's paired
  bootstrap; with several, a cell whose seeds disagree gets a wide interval.

Corpus metrics come from sacreBLEU's sufficient statistics (the per-sentence counts its own
paired tests sum), so every sample's score is sacreBLEU's BLEU or chrF of those sentences.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from scipy import stats as scipy_stats

METRICS = {"bleu": BLEU, "chrf": CHRF}


@dataclass(frozen=True)
class Summary:
    """Mean over runs, sample standard deviation and a two-sided Student-t interval."""

    n: int
    mean: float
    std: float | None  # None for one run
    low: float | None
    high: float | None

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci": [self.low, self.high]}


def summarize(values: list[float], confidence: float = 0.95) -> Summary:
    """mean ± t_{(1+c)/2, n-1} · s / sqrt(n); no interval from a single value."""
    if not values:
        raise ValueError("summarize: no values")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = statistics.stdev(values)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch(base: list[float], other: list[float]) -> float | None:
    """Two-sided p of Welch's t-test (other vs base); None without two values a side, or when
    both sides have no spread at all."""
    if len(base) < 2 or len(other) < 2:
        return None
    if statistics.pvariance(base) == 0 and statistics.pvariance(other) == 0:
        return None
    return float(scipy_stats.ttest_ind(other, base, equal_var=False).pvalue)


def sentence_statistics(metric: str, hyps: list[str], refs: list[str]) -> np.ndarray:
    """sacreBLEU's sufficient statistics per sentence: [sentences, k] (k = 10 for BLEU)."""
    return np.asarray(METRICS[metric]()._extract_corpus_statistics(hyps, [refs]), dtype=np.int64)


def corpus_score(metric: str, stats: np.ndarray) -> float:
    """The corpus score of summed statistics (what sacreBLEU's corpus_score gives)."""
    return float(METRICS[metric]()._compute_score_from_stats(stats.tolist()).score)


def seed_bootstrap(
    metric: str,
    base: list[np.ndarray],
    other: list[np.ndarray],
    *,
    samples: int,
    rng_seed: int = 12345,  # the resampling's own generator, not a training seed
) -> dict:
    """Two-level paired bootstrap of ``other`` against ``base`` (lists of per-seed sentence
    statistics from ``sentence_statistics``, all over the same test sentences).

    Returns the observed difference of seed means (other - base), the 95 % percentile interval
    of the bootstrap differences, and the two-sided p of the centred bootstrap distribution:
    how often a difference at least as large arises when the true difference is zero.
    """
    runs = [*base, *other]
    sentences = runs[0].shape[0]
    if any(r.shape[0] != sentences for r in runs):
        raise ValueError("seed_bootstrap: every run must be scored on the same sentences")
    rng = np.random.default_rng(rng_seed)
    rows = rng.integers(0, sentences, size=(samples, sentences))
    # [run, sample]: each run's corpus score on each sample of sentences (one draw for all).
    scores = np.array(
        [[corpus_score(metric, r[idx].sum(0)) for idx in rows] for r in runs], dtype=np.float64
    )
    n_base = len(base)
    pick_base = rng.integers(0, n_base, size=(samples, n_base))
    pick_other = n_base + rng.integers(0, len(other), size=(samples, len(other)))
    column = np.arange(samples)[:, None]
    deltas = scores[pick_other, column].mean(1) - scores[pick_base, column].mean(1)
    full = np.array([corpus_score(metric, r.sum(0)) for r in runs])
    observed = float(full[n_base:].mean() - full[:n_base].mean())
    centred = np.abs(deltas - deltas.mean())
    p = (1 + int((centred >= abs(observed)).sum())) / (1 + samples)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return {"delta": observed, "ci": [float(low), float(high)], "p": p, "samples": samples}
