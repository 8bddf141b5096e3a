"""Search over the decoder's one-step interface: batched greedy and beam search.

Both run every sentence of a batch (times its beams) as one tensor, and sentences leave the
active batch as soon as they are decided, so a batch costs what its hardest sentence needs.
Beam search stops a sentence only when its n-th best finished hypothesis can no longer be beaten
by any live one. Scores are sums of token log-probabilities (end-of-sentence included), divided
by the GNMT length penalty ((5 + length) / 6) ** alpha, plus the optional coverage penalty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from nmt.core.search_options import SearchOptions
from nmt.core.specials import BOS_ID, EOS_ID
from nmt.model.decoder import StepOutput


class StepDecoder(Protocol):
    """A decoder's one-step interface: a state from the encoder's memory, then one step."""

    def init_state(self, memory: Any) -> Any: ...

    def step(self, prev_ids: Tensor, state: Any, memory: Any) -> StepOutput: ...


@runtime_checkable
class Decodable(Protocol):
    """What search needs of a model: ``encode`` the source, a ``decoder`` to step, and the
    module's train/eval mode. ``nmt.model.seq2seq.Seq2Seq`` and ``nmt.model.ensemble.Ensemble`` both are one;
    the states and memories they pass around have ``select(index)`` (rows kept or reordered)."""

    decoder: StepDecoder
    training: bool

    def encode(self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor) -> Any: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


class Cancelled(Exception):
    """A search stopped between two steps because its caller asked it to (``stop``)."""


# What a search asks between two steps: whether to give up (the service's time budget ran out).
Stop = Callable[[], bool]


def _check(stop: Stop | None) -> None:
    if stop is not None and stop():
        raise Cancelled("search stopped by its caller")


@dataclass
class Hypothesis:
    """tokens: ids without bos/eos; log_prob: summed (eos included); score: as ranked;
    attn: [len(tokens) + 1, S] attention over the real source positions, or None."""

    tokens: list[int]
    log_prob: float
    score: float
    attn: Tensor | None = None


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty; length counts the end-of-sentence token."""
    return ((5.0 + length) / 6.0) ** alpha


def log_softmax_(logits: Tensor, block: int = 64) -> Tensor:
    """``logits`` [rows, V] turned into log-probabilities in place, ``block`` rows at a time.

    A step's logits are the search's largest tensor (beam 5 x 64 sentences x 8k pieces: 10 MiB);
    a new tensor of that size every step comes fresh from the kernel, page faults and all (glibc
    maps allocations of 8 MiB and more: ``runtime.return_freed_memory``), which cost beam search
    a fifth of its time. Blocks keep the temporaries small and reused."""
    for rows in logits.split(block):
        rows.copy_(torch.log_softmax(rows, dim=-1))
    return logits


def _limits(src_lens: Tensor, options: SearchOptions) -> Tensor:
    return (src_lens.float() * options.max_len_a + options.max_len_b).long().clamp(min=1)


def _force_end(lprobs: Tensor, eos: Tensor, last: Tensor) -> None:
    """At a sentence's length limit only the end may follow, with the model's own probability:
    the limit wins over min_len, so every sentence ends with a hypothesis."""
    if bool(last.any()):
        lprobs[last] = float("-inf")
        lprobs[last, EOS_ID] = eos[last]


@torch.no_grad()
def greedy(
    model: Decodable,
    src_ids: Tensor,
    src_lens: Tensor,
    src_mask: Tensor,
    options: SearchOptions,
    stop: Stop | None = None,
) -> list[Hypothesis]:
    """Greedy decoding of a batch: src_ids [B, S] -> one Hypothesis per sentence (the length
    options apply; beam ones do not). ``stop`` is asked before every step; when it answers true
    the search raises :class:`Cancelled`.

    Tokens, log-probabilities and attention go into per-batch tensors, indexed by each active
    row's original sentence; the host reads one number per step (how many rows ended, to drop
    them) and everything else once, at the end."""
    min_len = options.min_len
    batch, device = src_ids.shape[0], src_ids.device
    memory = model.encode(src_ids, src_lens, src_mask)
    state = model.decoder.init_state(memory)
    limits = _limits(src_lens, options).to(device)
    steps = int(limits.max())
    active = torch.arange(batch, device=device)  # original rows still decoding
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    tokens = torch.full((batch, steps), EOS_ID, dtype=torch.long, device=device)
    log_probs = torch.zeros(batch, device=device)
    attns: Tensor | None = None  # [B, steps, S]
    for t in range(steps):
        _check(stop)
        out = model.decoder.step(prev, state, memory)
        lprobs = log_softmax_(out.logits.float())
        eos = lprobs[:, EOS_ID].clone()
        if t < min_len:
            lprobs[:, EOS_ID] = float("-inf")
        _force_end(lprobs, eos, t + 1 >= limits[active])
        best, prev = lprobs.max(dim=-1)
        tokens[active, t] = prev
        log_probs.index_add_(0, active, best)
        if out.attn is not None:
            if attns is None:
                attns = out.attn.new_zeros(batch, steps, out.attn.shape[-1])
            attns[active, t] = out.attn
        done = prev == EOS_ID
        ended = int(done.sum())
        if ended == done.shape[0]:
            break
        state = out.state
        if ended:
            keep = (~done).nonzero().squeeze(1)
            active, prev = active[keep], prev[keep]
            memory, state = memory.select(keep), state.select(keep)
    rows = tokens.tolist()
    lengths = [row.index(EOS_ID) if EOS_ID in row else len(row) for row in rows]
    lens = src_lens.tolist()
    if attns is not None:
        attns = attns.cpu()
    return [
        Hypothesis(
            tokens=rows[i][: lengths[i]],
            log_prob=lp,
            score=lp,
            attn=None if attns is None else attns[i, : lengths[i] + 1, : lens[i]],
        )
        for i, lp in enumerate(log_probs.tolist())
    ]


def _block_repeats(lprobs: Tensor, history: Tensor, n: int) -> None:
    """Forbid each row the tokens that would repeat an n-gram of its history."""
    for row, hist in enumerate(history.tolist()):
        banned = _banned_ngrams(hist, n)
        if banned:
            lprobs[row, banned] = float("-inf")


def _banned_ngrams(history: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in history."""
    if n <= 0 or len(history) < n - 1:
        return []
    prefix = tuple(history[len(history) - n + 1 :]) if n > 1 else ()
    return [
        history[i + n - 1]
        for i in range(len(history) - n + 1)
        if tuple(history[i : i + n - 1]) == prefix
    ]


@dataclass
class _Finished:
    """Finished hypotheses per sentence, and the n-th best score of each as a tensor [B] (-inf
    while a sentence has fewer than n), so the stopping rule is one comparison per step."""

    hyps: list[list[Hypothesis]]
    nth: Tensor  # float64, the exact comparison of the Python scores

    def add(self, sents: list[int], hyps: list[Hypothesis], n_best: int) -> None:
        for sent, hyp in zip(sents, hyps, strict=True):
            self.hyps[sent].append(hyp)
        for sent in set(sents):
            if len(self.hyps[sent]) >= n_best:
                ranked = sorted((h.score for h in self.hyps[sent]), reverse=True)
                self.nth[sent] = ranked[n_best - 1]


@dataclass
class _Beams:
    """The live beams of the sentences still undecided: K rows per sentence, in blocks.

    ``active``: the original sentence of each block; ``scores`` [n, K]; ``prev`` [n*K] the last
    token, ``history`` [n*K, t] every token; the decoder's ``state`` and ``memory``; the
    attention of every step ``attn`` [n*K, t, S] and its running sum ``coverage`` [n*K, S]
    (None without attention, or without a coverage penalty)."""

    active: Tensor
    scores: Tensor
    prev: Tensor
    history: Tensor
    state: Any
    memory: Any
    attn: Tensor | None = None
    coverage: Tensor | None = None

    def record_attention(self, attn: Tensor | None, coverage_penalty: float) -> None:
        if attn is None:
            return
        step = attn.float().unsqueeze(1)
        self.attn = step if self.attn is None else torch.cat([self.attn, step], dim=1)
        if coverage_penalty > 0:
            self.coverage = attn.float() if self.coverage is None else self.coverage + attn.float()

    def follow(self, rows: Tensor, prev: Tensor, state: Any) -> None:
        """Each new beam continues row ``rows[i]`` with token ``prev[i]``."""
        self.history = torch.cat([self.history.index_select(0, rows), prev.unsqueeze(1)], dim=1)
        self.prev, self.state = prev, state.select(rows)
        if self.attn is not None:
            self.attn = self.attn.index_select(0, rows)
        if self.coverage is not None:
            self.coverage = self.coverage.index_select(0, rows)

    def keep(self, blocks: Tensor, K: int) -> None:
        """Only the sentences of ``blocks`` go on (the others are decided)."""
        rows = (blocks.unsqueeze(1) * K + torch.arange(K, device=blocks.device)).view(-1)
        self.active, self.scores, self.memory = (
            self.active[blocks],
            self.scores[blocks],
            self.memory.select(blocks),
        )
        self.prev, self.history, self.state = (
            self.prev[rows],
            self.history[rows],
            self.state.select(rows),
        )
        if self.attn is not None:
            self.attn = self.attn[rows]
        if self.coverage is not None:
            self.coverage = self.coverage[rows]


def _scored_step(out: StepOutput, t: int, ending: Tensor, history: Tensor, options) -> Tensor:
    """A step's log-probabilities [n*K, V] with the search's rules applied: no end before
    ``min_len``, no repeated n-gram, the end forced where a beam reaches its length limit
    (``ending`` [n*K])."""
    lprobs = log_softmax_(out.logits.float())
    eos = lprobs[:, EOS_ID].clone()
    if t < options.min_len:
        lprobs[:, EOS_ID] = float("-inf")
    if options.no_repeat_ngram > 0:
        _block_repeats(lprobs, history, options.no_repeat_ngram)
    _force_end(lprobs, eos, ending)
    return lprobs


def _ended(
    beams: _Beams,
    block: Tensor,
    slot: Tensor,
    top_beam: Tensor,
    top_scores: Tensor,
    K: int,
    real: Tensor,
    lens: list[int],
    options: SearchOptions,
) -> tuple[list[int], list[Hypothesis]]:
    """The hypotheses that end at this step (candidate ``slot`` of each ``block``) and their
    sentences: scores with the length and coverage penalties, attention cut to the source."""
    sents, rows = beams.active[block], block * K + top_beam[block, slot]
    covered = [0.0] * len(rows)
    if beams.coverage is not None:
        logs = beams.coverage[rows].clamp(max=1.0).log().masked_fill(~real[sents], 0.0)
        covered = logs.sum(dim=1).tolist()
    lp = float(length_penalty(beams.history.shape[1] + 1, options.alpha))
    hyps = [
        Hypothesis(
            tokens=tokens,
            log_prob=log_prob,
            score=log_prob / lp + options.coverage_penalty * cov,
            attn=None if beams.attn is None else beams.attn[row, :, : lens[sent]].cpu(),
        )
        for sent, row, tokens, log_prob, cov in zip(
            sents.tolist(),
            rows.tolist(),
            beams.history[rows].tolist(),
            top_scores[block, slot].tolist(),
            covered,
            strict=True,
        )
    ]
    return sents.tolist(), hyps


@torch.no_grad()
def beam_search(
    model: Decodable,
    src_ids: Tensor,
    src_lens: Tensor,
    src_mask: Tensor,
    options: SearchOptions,
    stop: Stop | None = None,
) -> list[list[Hypothesis]]:
    """Beam search of a batch: src_ids [B, S] -> for each sentence its n_best hypotheses, best first
    (``stop`` as in :func:`greedy`).

    One loop over time steps whose stages read in order: score (``_scored_step``), finish
    (``_ended``), continue, decide, drop the decided sentences (``_Beams``). The K beams of a
    sentence read one copy of its encoder memory (attention takes K queries per sentence)."""
    n_best, batch, device, K = options.n_best, src_ids.shape[0], src_ids.device, options.beam_size
    memory = model.encode(src_ids, src_lens, src_mask)  # [n, ...]: one copy per sentence
    flat = torch.arange(batch, device=device).repeat_interleave(K)
    limits = _limits(src_lens, options).to(device)
    # Live log-probs only fall, so the best score a live beam can reach is score / lp(limit).
    alpha = options.alpha
    reach = length_penalty(limits.double(), alpha) if alpha > 0 else torch.ones_like(limits)
    real = torch.arange(src_ids.shape[1], device=device) < src_lens.to(device)[:, None]  # [B, S]
    lens = src_lens.tolist()
    finished = _Finished(
        [[] for _ in range(batch)],
        torch.full((batch,), float("-inf"), dtype=torch.float64, device=device),
    )
    beams = _Beams(
        active=torch.arange(batch, device=device),  # original sentence of each block of K
        scores=torch.full((batch, K), float("-inf"), device=device),
        prev=torch.full((batch * K,), BOS_ID, dtype=torch.long, device=device),
        history=torch.full((batch * K, 0), BOS_ID, dtype=torch.long, device=device),
        state=model.decoder.init_state(memory).select(flat),  # [n*K, ...]: one row per beam
        memory=memory,
    )
    beams.scores[:, 0] = 0.0  # only the first beam is live at the start

    for t in range(int(limits.max())):
        _check(stop)
        n = beams.active.shape[0]
        out = model.decoder.step(beams.prev, beams.state, beams.memory)
        ending = (t + 1 >= limits[beams.active]).repeat_interleave(K)
        lprobs = _scored_step(out, t, ending, beams.history, options)
        beams.record_attention(out.attn, options.coverage_penalty)
        V = lprobs.shape[1]
        cand = lprobs.add_(beams.scores.view(n * K, 1)).view(n, K * V)  # lprobs not read again
        top_scores, top_ids = cand.topk(min(2 * K, K * V), dim=1)  # [n, 2K]
        top_beam, top_tok = top_ids // V, top_ids % V
        is_eos = (top_tok == EOS_ID) & torch.isfinite(top_scores)

        # Finish end-of-sentence candidates ranked within the top K, all of a step at once.
        rank = torch.arange(top_ids.shape[1], device=device).expand_as(top_ids)
        block, slot = (is_eos & (rank < K)).nonzero().unbind(1)
        if block.numel():
            sents, hyps = _ended(beams, block, slot, top_beam, top_scores, K, real, lens, options)
            finished.add(sents, hyps, n_best)

        # Continue with the K best candidates that are not end-of-sentence. A beam row has one end
        # token, so at most K of the top 2K are finished: the first K after pushing those back are
        # live (an end token kept there scored -inf, and stays dead).
        order = (rank + is_eos.long() * (2 * K)).argsort(dim=1)[:, :K]
        beams.scores = top_scores.gather(1, order)
        rows = (torch.arange(n, device=device).unsqueeze(1) * K + top_beam.gather(1, order)).view(
            -1
        )

        # Decided: nothing live can beat the sentence's n-th best finished hypothesis.
        best_live = beams.scores.max(dim=1).values.double()
        active = beams.active
        done = (best_live == float("-inf")) | (finished.nth[active] >= best_live / reach[active])
        ended = int(done.sum())
        if ended == n:
            break
        beams.follow(rows, top_tok.gather(1, order).view(-1), out.state)
        if ended:
            beams.keep((~done).nonzero().squeeze(1), K)
    return [sorted(h, key=lambda h: -h.score)[:n_best] for h in finished.hyps]


def search_batch(
    model: Decodable,
    src_ids: Tensor,
    src_lens: Tensor,
    src_mask: Tensor,
    options: SearchOptions,
    stop: Stop | None = None,
) -> list[list[Hypothesis]]:
    """Greedy when nothing needs a beam, else beam search; n_best hypotheses per sentence."""
    if options.is_greedy:
        return [[h] for h in greedy(model, src_ids, src_lens, src_mask, options, stop)]
    return beam_search(model, src_ids, src_lens, src_mask, options, stop)
