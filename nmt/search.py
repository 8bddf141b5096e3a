"""Search over the decoder's one-step interface: batched greedy and beam search.

Both run every sentence of a batch (times its beams) as one tensor, and sentences leave the
active batch as soon as they are decided, so a batch costs what its hardest sentence needs.
Beam search stops a sentence only when its n-th best finished hypothesis can no longer be beaten
by any live one. Scores are sums of token log-probabilities (end-of-sentence included), divided
by the GNMT length penalty ((5 + length) / 6) ** alpha, plus the optional coverage penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.batching import BatchSampler, collate
from nmt.model import Seq2Seq
from nmt.search_options import SearchOptions
from nmt.specials import BOS_ID, EOS_ID


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
    model: Seq2Seq, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor, options: SearchOptions
) -> list[Hypothesis]:
    """Greedy decoding of a batch: src_ids [B, S] -> one Hypothesis per sentence (the length
    options apply; beam ones do not).

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
        out = model.decoder.step(prev, state, memory)
        lprobs = torch.log_softmax(out.logits.float(), dim=-1)
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


def _decided(
    scores: Tensor,
    active: Tensor,
    finished: list[list[Hypothesis]],
    limits: Tensor,
    options: SearchOptions,
) -> Tensor:
    """Per active sentence: decided when nothing live can beat its n-th best finished
    hypothesis. Live log-probs only fall, so the best a live one can reach is score / lp(limit)."""
    done = []
    for i in range(active.shape[0]):
        sent = int(active[i])
        best_live = float(scores[i].max())
        if best_live == float("-inf"):
            done.append(True)
            continue
        if len(finished[sent]) < options.n_best:
            done.append(False)
            continue
        ranked = sorted((h.score for h in finished[sent]), reverse=True)
        bound = best_live
        if options.alpha > 0:
            bound = best_live / float(length_penalty(int(limits[sent]), options.alpha))
        done.append(ranked[options.n_best - 1] >= bound)
    return torch.tensor(done, device=scores.device)


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


@torch.no_grad()
def beam_search(
    model: Seq2Seq, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor, options: SearchOptions
) -> list[list[Hypothesis]]:
    """Beam search of a batch: src_ids [B, S] -> for each sentence its n_best hypotheses, best first.

    One loop over time steps whose stages read in order (score, finish, continue, decide, drop
    decided sentences); it is longer than most functions here because cutting it further would pass
    its nine per-step tensors back and forth between functions."""
    alpha, n_best, coverage_penalty = options.alpha, options.n_best, options.coverage_penalty
    batch, device, K = src_ids.shape[0], src_ids.device, options.beam_size
    memory = model.encode(src_ids, src_lens, src_mask)
    flat = torch.arange(batch, device=device).repeat_interleave(K)
    memory = memory.select(flat)
    state = model.decoder.init_state(memory)
    limits = _limits(src_lens, options).to(device)
    lens = src_lens.tolist()
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    active = torch.arange(batch, device=device)  # original sentence of each active block of K
    scores = torch.full((batch, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # only the first beam is live at the start
    history = torch.full((batch * K, 0), BOS_ID, dtype=torch.long, device=device)
    prev = torch.full((batch * K,), BOS_ID, dtype=torch.long, device=device)
    attn_hist: Tensor | None = None  # [n*K, t, S]
    coverage: Tensor | None = None  # [n*K, S]

    for t in range(int(limits.max())):
        n = active.shape[0]
        out = model.decoder.step(prev, state, memory)
        lprobs = torch.log_softmax(out.logits.float(), dim=-1)  # [n*K, V]
        V = lprobs.shape[1]
        eos = lprobs[:, EOS_ID].clone()
        if t < options.min_len:
            lprobs[:, EOS_ID] = float("-inf")
        if options.no_repeat_ngram > 0:
            _block_repeats(lprobs, history, options.no_repeat_ngram)
        _force_end(lprobs, eos, (t + 1 >= limits[active]).repeat_interleave(K))
        if out.attn is not None:
            step_attn = out.attn.float().unsqueeze(1)
            attn_hist = step_attn if attn_hist is None else torch.cat([attn_hist, step_attn], dim=1)
            if coverage_penalty > 0:
                coverage = out.attn.float() if coverage is None else coverage + out.attn.float()

        cand = (scores.view(n * K, 1) + lprobs).view(n, K * V)
        top_scores, top_ids = cand.topk(min(2 * K, K * V), dim=1)  # [n, 2K]
        top_beam, top_tok = top_ids // V, top_ids % V
        is_eos = (top_tok == EOS_ID) & torch.isfinite(top_scores)

        # Finish end-of-sentence candidates ranked within the top K.
        rank = torch.arange(top_ids.shape[1], device=device).expand_as(top_ids)
        for i, j in (is_eos & (rank < K)).nonzero().tolist():
            sent = int(active[i])
            row = i * K + int(top_beam[i, j])
            log_prob = float(top_scores[i, j])
            length = history.shape[1] + 1
            score = log_prob / float(length_penalty(length, alpha))
            if coverage is not None:
                covered = coverage[row, : lens[sent]].clamp(max=1.0).log().sum()
                score += coverage_penalty * float(covered)
            attn = None if attn_hist is None else attn_hist[row, :, : lens[sent]].cpu()
            finished[sent].append(Hypothesis(history[row].tolist(), log_prob, score, attn))

        # Continue with the K best candidates that are not end-of-sentence. A beam row has one end
        # token, so at most K of the top 2K are finished: the first K after pushing those back are
        # live (an end token kept there scored -inf, and stays dead).
        order = (rank + is_eos.long() * (2 * K)).argsort(dim=1)[:, :K]
        scores = top_scores.gather(1, order)
        beams = top_beam.gather(1, order)
        prev = top_tok.gather(1, order).view(-1)
        rows = (torch.arange(n, device=device).unsqueeze(1) * K + beams).view(-1)

        done_t = _decided(scores, active, finished, limits, options)
        if bool(done_t.all()):
            break
        history = torch.cat([history.index_select(0, rows), prev.unsqueeze(1)], dim=1)
        state = out.state.select(rows)
        if attn_hist is not None:
            attn_hist = attn_hist.index_select(0, rows)
        if coverage is not None:
            coverage = coverage.index_select(0, rows)
        if bool(done_t.any()):
            keep = (~done_t).nonzero().squeeze(1)
            keep_rows = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1)
            active, scores = active[keep], scores[keep]
            prev, history = prev[keep_rows], history[keep_rows]
            state, memory = state.select(keep_rows), memory.select(keep_rows)
            if attn_hist is not None:
                attn_hist = attn_hist[keep_rows]
            if coverage is not None:
                coverage = coverage[keep_rows]
    return [sorted(h, key=lambda h: -h.score)[:n_best] for h in finished]


def search_batch(
    model: Seq2Seq, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor, options: SearchOptions
) -> list[list[Hypothesis]]:
    """Greedy when nothing needs a beam, else beam search; n_best hypotheses per sentence."""
    if options.is_greedy:
        return [[h] for h in greedy(model, src_ids, src_lens, src_mask, options)]
    return beam_search(model, src_ids, src_lens, src_mask, options)


def decode_corpus(
    model: Seq2Seq,
    src: list[list[int]],
    options: SearchOptions,
    *,
    device: torch.device,
    max_sentences: int,
    max_tokens: int | None = None,
) -> list[list[Hypothesis]]:
    """Decode many sentences (pieces without specials) in length-sorted batches, in input order.

    A batch holds at most ``max_sentences`` sentences and ``max_tokens`` padded source tokens.
    """
    was_training = model.training
    model.eval()
    sampler = BatchSampler(
        src_lens=[len(s) for s in src],
        tgt_lens=[0] * len(src),
        max_tokens=max_tokens,
        batch_size=max_sentences,
        pool_size=1,
        seed=0,
        shuffle=False,
    )
    results: list[list[Hypothesis]] = [[] for _ in src]
    for chunk in sampler.batches(0):
        batch = collate([src[i] for i in chunk], None, chunk).to(device)
        hyps = search_batch(model, batch.src_ids, batch.src_lens, batch.src_mask, options)
        for i, h in zip(chunk, hyps, strict=True):
            results[i] = h
    model.train(was_training)
    return results
