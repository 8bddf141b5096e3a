"""Search settings: the ``search`` config group as one checked, immutable object.

Built once (``SearchOptions.from_config(cfg.search)``) and handed to every search function, which
keep no defaults of their own: ``conf/search/`` holds the defaults, and the config schema
(``config.py``) derives its keys from this dataclass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from nmt.core.errors import UserError


class SearchError(UserError):
    """Search settings no search can honour."""


# The largest length-penalty exponent: ((5 + length) / 6) ** alpha overflows a float past ~130 at
# a thousand tokens, and the GNMT paper's useful range is 0-1 (nmt-tune-search tries 0-1.4).
MAX_ALPHA = 10.0


@dataclass(frozen=True)
class SearchOptions:
    """The ``search`` config group's settings, built once and checked on creation: the search
    functions take this object and keep no defaults of their own (``conf/search/`` holds them)."""

    beam_size: int
    alpha: float  # GNMT length penalty exponent
    max_len_a: float  # an output stops at int(a * source length + b) tokens, end included
    max_len_b: int
    min_len: int  # tokens before the end may be chosen
    n_best: int
    coverage_penalty: float
    no_repeat_ngram: int  # 0: off

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise SearchError(f"search.{f.name}={value!r}: expected a whole number")
            if f.type == "float" and (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
            ):
                raise SearchError(f"search.{f.name}={value!r}: expected a finite number")
        if self.alpha > MAX_ALPHA:
            raise SearchError(f"search.alpha={self.alpha}: at most {MAX_ALPHA}")
        if self.beam_size < 1:
            raise SearchError(f"search.beam_size={self.beam_size}: must be at least 1")
        if not 1 <= self.n_best <= self.beam_size:
            raise SearchError(
                f"search.n_best={self.n_best} with search.beam_size={self.beam_size}: a beam "
                f"keeps at most beam_size hypotheses; set search.beam_size={max(self.n_best, 1)} "
                "or more"
            )
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise SearchError(f"search.{f.name}={getattr(self, f.name)}: must not be negative")

    @classmethod
    def from_config(cls, node: Mapping) -> SearchOptions:
        """From a mapping with the group's keys; others (``name``, ``max_sentences``) ignored."""
        return cls(**{f.name: node[f.name] for f in fields(cls)})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> SearchOptions:
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise SearchError(f"unknown search options {unknown}")
        return dataclasses.replace(self, **changes)

    def output_limit(self, src_len: int) -> int:
        """The most tokens an output may have (its end included) for a source of ``src_len``
        pieces (its end included): what the search functions stop at."""
        return max(1, int(src_len * self.max_len_a + self.max_len_b))

    @property
    def is_greedy(self) -> bool:
        """Nothing here needs a beam: greedy search finds the same output, faster."""
        return (
            self.beam_size == 1
            and self.n_best == 1
            and self.coverage_penalty == 0
            and self.no_repeat_ngram == 0
        )

    def greedy(self) -> SearchOptions:
        """The same length limits, searched greedily without extras (validation during training)."""
        return self.replace(
            beam_size=1, alpha=0.0, min_len=0, n_best=1, coverage_penalty=0.0, no_repeat_ngram=0
        )
