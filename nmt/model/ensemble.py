"""Ensembles: several models behind the one-step interface search already talks to.

``Ensemble(models)`` has what search uses of a ``Seq2Seq`` (``encode``, ``decoder.init_state``,
``decoder.step``, and the memories and states it selects rows of), so greedy and beam search
decode with it unchanged. At each step every member takes the same previous tokens and the
ensemble's logits are the mean of the members' log-probabilities (search's log-softmax then
renormalises that geometric mean of the distributions). The members share the target
vocabulary; their shapes and cells may differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nmt.model.decoder import DecoderState, StepOutput
from nmt.model.encoder import Memory
from nmt.model.seq2seq import Seq2Seq

__all__ = ["Ensemble"]


@dataclass
class EnsembleMemory:
    members: tuple[Memory, ...]

    def select(self, index: Tensor) -> EnsembleMemory:
        return EnsembleMemory(tuple(m.select(index) for m in self.members))


@dataclass
class EnsembleState:
    members: tuple[DecoderState, ...]

    def select(self, index: Tensor) -> EnsembleState:
        return EnsembleState(tuple(s.select(index) for s in self.members))


class _Decoders:
    """The members' decoders stepped together."""

    def __init__(self, models: nn.ModuleList):
        self.models = models

    def init_state(self, memory: EnsembleMemory) -> EnsembleState:
        pairs = zip(self.models, memory.members, strict=True)
        return EnsembleState(tuple(m.decoder.init_state(mem) for m, mem in pairs))

    def step(self, prev_ids: Tensor, state: EnsembleState, memory: EnsembleMemory) -> StepOutput:
        outs = [
            m.decoder.step(prev_ids, s, mem)
            for m, s, mem in zip(self.models, state.members, memory.members, strict=True)
        ]
        lprobs = torch.stack([torch.log_softmax(o.logits.float(), dim=-1) for o in outs])
        attns = [o.attn.float() for o in outs if o.attn is not None]
        return StepOutput(
            logits=lprobs.mean(dim=0),
            state=EnsembleState(tuple(o.state for o in outs)),
            # The members' mean attention, for heatmaps and the coverage penalty (those with
            # attention; None when none has it).
            attn=torch.stack(attns).mean(dim=0) if attns else None,
        )


class Ensemble(nn.Module):
    """Models decoded as one; see the module docstring."""

    def __init__(self, models: list[Seq2Seq]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        sizes = {m.decoder.embedding.num_embeddings for m in models}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members disagree on the target vocabulary size ({sizes})")
        self.models = nn.ModuleList(models)
        self.decoder = _Decoders(self.models)

    def encode(self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor) -> EnsembleMemory:
        return EnsembleMemory(tuple(m.encode(src_ids, src_lens, src_mask) for m in self.models))
