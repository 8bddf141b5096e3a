"""Cells in layers and over time: :class:`StackedCell` steps a multi-layer state once (the
decoder), :class:`Recurrent` runs a (bi)directional multi-layer RNN over padded sequences (the
encoder). Both take the cell by name and ask ``cells.spec`` for everything about it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.model.cells import CellLayer, State, gates_of, init_weights, sequence_mask, spec, wrap

# Variational dropout masks of a layer: (input [B, I], h [B, H]), each None when off.
Masks = list[tuple[Tensor | None, Tensor | None]]


class StackedCell(nn.Module):
    """``layers`` CellLayers with dropout between them; states are ``[layers, B, H]``."""

    def __init__(
        self, *, cell: str, input_size: int, hidden_size: int, layers: int, dropout: float
    ):
        super().__init__()
        sizes = [input_size] + [hidden_size] * (layers - 1)
        self.layers = nn.ModuleList(CellLayer(cell, size, hidden_size) for size in sizes)
        self.dropout = nn.Dropout(dropout)

    @property
    def first(self) -> CellLayer:
        return self.layers[0]

    def sequence_masks(self, batch: int, p: float, like: Tensor) -> Masks | None:
        """Each layer's variational dropout masks for a batch of sequences (None when p is 0).
        The first layer's input mask is the caller's to apply (to its unprojected input)."""
        if p <= 0:
            return None
        return [
            (
                sequence_mask(batch, layer.weight_ih.shape[1], p, like),
                sequence_mask(batch, layer.hidden_size, p, like),
            )
            for layer in self.layers
        ]

    def step(self, gx: Tensor, state: State, masks: Masks | None = None) -> State:
        """gx: [B, G], the first layer's projected input; returns the new [layers, B, H] state.
        ``masks``: per-sequence variational dropout (``sequence_masks``) in place of the
        ordinary dropout between layers."""
        new = []
        for i, layer in enumerate(self.layers):
            x_mask, h_mask = masks[i] if masks is not None else (None, None)
            if i > 0:
                below = new[-1][0]
                below = self.dropout(below) if masks is None else below * x_mask
                gx = layer.project(below)
            new.append(layer.step(gx, tuple(t[i] for t in state), h_mask))
        return tuple(torch.stack(parts) for parts in zip(*new, strict=True))


# --------------------------------------------------------------------------------------------
# Whole sequences (the encoder).


class Recurrent(nn.Module):
    """A (bi)directional multi-layer RNN over padded sequences, padding costing nothing.

    forward(x: [B, S, I], lens: [B] CPU int64) -> (outputs [B, S, dirs*H] zero at padding,
    final State with tensors [layers*dirs, B, H] taken at each sequence's true end).
    """

    def __init__(
        self,
        *,
        cell: str,
        input_size: int,
        hidden_size: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        var_dropout: float,
    ):
        super().__init__()
        fused = spec(cell).kernel
        # Variational dropout (training only) needs the stepped loop: a fused kernel cannot
        # mask its recurrent state.
        self.var_dropout = var_dropout
        # A linear recurrence (spec.scan) runs as a parallel scan over time: None, over the
        # batch's length; a number, always over that many positions (the exported graph's).
        self.scan_positions: int | None = None
        self.cell, self.hidden_size, self.layers = cell, hidden_size, layers
        self.dirs = 2 if bidirectional else 1
        if fused is not None:
            self.rnn = fused(
                input_size,
                hidden_size,
                num_layers=layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=dropout if layers > 1 else 0.0,
                **spec(cell).kernel_kwargs,
            )
            init_weights(cell, hidden_size, list(self.rnn.named_parameters()))
        else:
            self.rnn = None
            self.loop = nn.ModuleList(
                CellLayer(
                    cell, input_size if i < self.dirs else hidden_size * self.dirs, hidden_size
                )
                for i in range(layers * self.dirs)
            )
        self.dropout = nn.Dropout(dropout)  # between layers of the stepped loop

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, State]:
        if self.training and self.var_dropout > 0:
            return self._loop(x, lens, variational=self.var_dropout)
        if self.rnn is not None:
            packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
            out, final = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            return out, wrap(final)
        if spec(self.cell).scan is not None:
            return self._scan(x, lens)
        return self._loop(x, lens)

    def layer_weights(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of each layer and direction, layer-major."""
        if self.rnn is None:
            return [(c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh) for c in self.loop]
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return [
            tuple(getattr(self.rnn, f"{n}_l{layer}{'_reverse' if d else ''}") for n in names)
            for layer in range(self.layers)
            for d in range(self.dirs)
        ]

    def gate_steps(self, x: Tensor, lens: Tensor) -> dict[tuple[int, int, str], Tensor]:
        """Each gate's activations at every position, ``[B, S, H]`` per (layer, direction, gate),
        in source order for both directions and zero at padding, by stepping the gate equations
        with this module's weights (fused kernels do not expose their gates). Also the check that
        those weights are read correctly: the stepped outputs equal ``forward``'s (tests)."""
        steps: dict[tuple[int, int, str], list[Tensor]] = {}
        length = x.shape[1]

        def record(layer: int, d: int, t: int, gates: dict[str, Tensor], keep: Tensor) -> None:
            for name, g in gates.items():
                steps.setdefault((layer, d, name), [g] * length)[t] = g * keep

        with torch.no_grad():
            self._loop(x, lens, record)
        return {key: torch.stack(per, dim=1) for key, per in steps.items()}

    def _loop(
        self, x: Tensor, lens: Tensor, record: Callable | None = None, variational: float = 0.0
    ) -> tuple[Tensor, State]:
        """The stepped RNN; ``variational``: the rate of per-sequence masks on each layer's
        input and recurrent state (in place of the dropout between layers)."""
        batch, length = x.shape[:2]
        mask = (torch.arange(length)[None, :] < lens[:, None]).to(x.device)  # [B, S]
        finals: list[State] = []
        weights = self.layer_weights()
        row = spec(self.cell)
        for layer in range(self.layers):
            outs = []
            for d in range(self.dirs):
                w_ih, w_hh, b_ih, b_hh = weights[layer * self.dirs + d]
                x_mask = sequence_mask(batch, x.shape[-1], variational, x)
                h_mask = sequence_mask(batch, self.hidden_size, variational, x)
                inputs = x if x_mask is None else x * x_mask[:, None, :]
                # [B, S, G] for all steps at once, unbound: one stack in backward, where a slice
                # per step would zero-fill a whole [B, S, G] gradient each time.
                gxs = F.linear(inputs, w_ih, b_ih).unbind(1)
                zero = x.new_zeros(batch, self.hidden_size)
                state = (zero,) * row.states
                steps = range(length) if d == 0 else reversed(range(length))
                out = [None] * length
                for t in steps:
                    hm = state[0] if h_mask is None else state[0] * h_mask
                    new, saved = row.step(gxs[t], state, w_hh, b_hh, hm)
                    keep = mask[:, t, None]
                    if record is not None:
                        record(layer, d, t, gates_of(self.cell, saved), keep)
                    # Padding leaves the state untouched, so the backward direction starts at
                    # each sentence's last real token and the final state is the true one.
                    state = tuple(torch.where(keep, n, o) for n, o in zip(new, state, strict=True))
                    out[t] = state[0] * keep
                outs.append(torch.stack(out, dim=1))
                finals.append(state)
            x = torch.cat(outs, dim=-1)
            if layer < self.layers - 1 and not variational:
                x = self.dropout(x)
        final = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))
        return x, final

    def _scan(self, x: Tensor, lens: Tensor) -> tuple[Tensor, State]:
        """A linear recurrence h_t = a_t ⊙ h_{t-1} + b_t, its a and b from the input alone, as
        a parallel (Hillis-Steele) scan: log2(S) rounds of whole-sequence products, the same
        values as the stepped loop up to rounding. Padding is the identity (a = 1, b = 0): the
        forward direction carries each sentence's last state to the end, the backward one starts
        at each sentence's last token; outputs are zero at padding."""
        length = x.shape[1]
        keep = torch.arange(length, device=x.device)[None, :] < lens.to(x.device)[:, None]
        keep = keep[..., None]  # [B, S, 1]
        coefficients = spec(self.cell).scan
        positions = self.scan_positions or length
        finals: list[State] = []
        weights = self.layer_weights()
        for layer in range(self.layers):
            outs = []
            for d in range(self.dirs):
                w_ih, _, b_ih, _ = weights[layer * self.dirs + d]
                a, b, _ = coefficients(F.linear(x, w_ih, b_ih))
                a = torch.where(keep, a, torch.ones_like(a))
                b = torch.where(keep, b, torch.zeros_like(b))
                h = scan(a, b, positions, reverse=d == 1)
                outs.append(h * keep)
                finals.append((h[:, 0] if d == 1 else h[:, -1],))
            x = torch.cat(outs, dim=-1)
            if layer < self.layers - 1:
                x = self.dropout(x)
        final = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))
        return x, final


def scan(a: Tensor, b: Tensor, positions: int, *, reverse: bool = False) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t over dim 1 from h = 0 (``reverse``: from the end), for up to
    ``positions`` steps, in ceil(log2(positions)) rounds; every shift a constant, so a traced
    graph with ``positions`` fixed serves any length up to it."""
    shift = 1
    while shift < positions:
        if reverse:  # combine with the element ``shift`` later; identity (1, 0) past the end
            a_far = F.pad(a, (0, 0, 0, shift), value=1.0)[:, shift:]
            b_far = F.pad(b, (0, 0, 0, shift))[:, shift:]
        else:
            a_far = F.pad(a, (0, 0, shift, 0), value=1.0)[:, :-shift]
            b_far = F.pad(b, (0, 0, shift, 0))[:, :-shift]
        a, b = a * a_far, a * b_far + b
        shift *= 2
    return b


def final_top(state: State, layers: int, dirs: int) -> State:
    """The top layer's final state with directions concatenated: tensors [B, dirs*H]."""
    out = []
    for t in state:
        top = t.view(layers, dirs, *t.shape[1:])[-1]  # [dirs, B, H]
        out.append(torch.cat(list(top), dim=-1))
    return tuple(out)
