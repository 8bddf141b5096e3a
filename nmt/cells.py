"""The recurrent-cell seam: the only module that knows cell names.

Everything downstream sees a ``State``, a tuple of tensors each ``[layers, B, H]`` — ``(h,)`` for
the GRUs and the tanh RNN, ``(h, c)`` for the LSTM — and the modules of ``rnn.py`` built from
:class:`CellLayer` (or the fused kernel the cell's :class:`CellSpec` names). A cell is one row of
``SPECS`` and its step function.

Cells:
- ``gru``: PyTorch's GRU (fused; reset gate applied after the recurrent product),
  n = tanh(W_n x + r ⊙ (U_n h + b)).
- ``gru_cho``: the GRU as Cho et al. (2014) wrote it, reset gate applied to h before the product,
  h̃ = tanh(W x + U (r ⊙ h)); h' = z ⊙ h + (1 - z) ⊙ h̃.
- ``lstm``: input, forget and output gates and a memory cell; forget-gate bias starts at 1.
- ``tanh``: the plain RNN, h' = tanh(W x + U h).

The step functions below are written from those gate equations; for ``gru``, ``lstm`` and ``tanh``
they are the reference implementations that tests compare with torch.nn.GRU / LSTM / RNN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]

# step(gx, state, w_hh, b_hh, h_mask=None): h_mask [B, H] multiplies h where it enters the
# recurrent products (variational dropout), never the state carried on.
Step = Callable[..., State]
Gates = Callable[[Tensor, State, Tensor, Tensor], dict[str, Tensor]]


def select(state: State, index: Tensor) -> State:
    """Reorder/select batch entries (dim 1) of every tensor of a state."""
    return tuple(t.index_select(1, index) for t in state)


def wrap(raw: Tensor | tuple[Tensor, Tensor]) -> State:
    """torch's RNN state (a tensor, or (h, c)) as a State; the only tuple-vs-tensor check."""
    return tuple(raw) if isinstance(raw, tuple) else (raw,)


def unwrap(state: State) -> Tensor | tuple[Tensor, ...]:
    """A State as torch's RNN modules expect it."""
    return state[0] if len(state) == 1 else state


# --------------------------------------------------------------------------------------------
# One step, from the gate equations. gx = W x + b_ih (precomputed), h/c: [B, H]. ``h_mask``:
# Gal & Ghahramani's (2016) variational dropout of the recurrent connections, one mask per
# sequence, applied to h inside the recurrent products U h only.


def _masked(h: Tensor, h_mask: Tensor | None) -> Tensor:
    return h if h_mask is None else h * h_mask


def _gru_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, h_mask=None) -> State:
    (h,) = state
    gh = F.linear(_masked(h, h_mask), w_hh, b_hh)
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (n + z * (h - n),)  # = (1 - z) * n + z * h


def _gru_cho_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, h_mask=None) -> State:
    (h,) = state
    size, hm = h.shape[-1], _masked(h, h_mask)
    gh_rz = F.linear(hm, w_hh[: 2 * size], b_hh[: 2 * size])
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z = gh_rz.chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + F.linear(r * hm, w_hh[2 * size :], b_hh[2 * size :]))
    return (n + z * (h - n),)  # = z * h + (1 - z) * n


def _lstm_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, h_mask=None) -> State:
    h, c = state
    gates = gx + F.linear(_masked(h, h_mask), w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _tanh_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, h_mask=None) -> State:
    (h,) = state
    return (torch.tanh(gx + F.linear(_masked(h, h_mask), w_hh, b_hh)),)


def _gru_gates(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> dict[str, Tensor]:
    """Reset and update gates (either GRU: the reset gate's place does not change them)."""
    size = state[0].shape[-1]
    x_r, x_z, _ = gx.chunk(3, dim=-1)
    h_r, h_z = F.linear(state[0], w_hh[: 2 * size], b_hh[: 2 * size]).chunk(2, dim=-1)
    return {"reset": torch.sigmoid(x_r + h_r), "update": torch.sigmoid(x_z + h_z)}


def _lstm_gates(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> dict[str, Tensor]:
    i, f, _, o = (gx + F.linear(state[0], w_hh, b_hh)).chunk(4, dim=-1)
    return {"input": torch.sigmoid(i), "forget": torch.sigmoid(f), "output": torch.sigmoid(o)}


@dataclass(frozen=True)
class CellSpec:
    """What the code knows about a cell type. A new cell is one row of SPECS and its step."""

    blocks: tuple[str, ...]  # the gate blocks of weight_ih's rows, in order
    states: int  # tensors in a state: (h, c) for the LSTM, else (h,)
    step: Step  # one step from the gate equations
    gates: Gates | None  # its sigmoid gates, for gate statistics (``update`` and ``forget`` are
    #                      both the share of the old state kept); None: it has none
    fused: type[nn.RNNBase] | None = None  # PyTorch's kernel for the same equations, if any
    fused_kwargs: dict = field(default_factory=dict)
    bias_one: str | None = None  # the block whose input bias starts at 1 (LSTM forget gate)


# In the order a report lists them (nmt.runs, nmt.plots): the plain RNN, then the gated cells that
# replaced it.
SPECS = {
    "tanh": CellSpec(
        blocks=("hidden",),
        states=1,
        step=_tanh_step,
        gates=None,
        fused=nn.RNN,
        fused_kwargs={"nonlinearity": "tanh"},
    ),
    "gru": CellSpec(
        blocks=("reset", "update", "new"), states=1, step=_gru_step, gates=_gru_gates, fused=nn.GRU
    ),
    "gru_cho": CellSpec(
        blocks=("reset", "update", "new"), states=1, step=_gru_cho_step, gates=_gru_gates
    ),
    "lstm": CellSpec(
        blocks=("input", "forget", "cell", "output"),
        states=2,
        step=_lstm_step,
        gates=_lstm_gates,
        fused=nn.LSTM,
        bias_one="forget",
    ),
}
CELLS = tuple(SPECS)


def spec(cell: str) -> CellSpec:
    if cell not in SPECS:
        raise ValueError(f"model.cell={cell!r}: expected one of {', '.join(CELLS)}")
    return SPECS[cell]


def state_size(cell: str) -> int:
    """How many tensors a state of this cell holds: 2 for the LSTM (h, c), else 1."""
    return spec(cell).states


def gate_values(
    cell: str, gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor
) -> dict[str, Tensor]:
    """The sigmoid gates a step computes from (gx, state): [B, H] each; none for tanh."""
    gates = spec(cell).gates
    return {} if gates is None else gates(gx, state, w_hh, b_hh)


def init_weights(cell: str, hidden_size: int, named: list[tuple[str, nn.Parameter]]) -> None:
    """Uniform ±1/sqrt(H) inputs, orthogonal recurrent blocks, zero biases but the spec's
    ``bias_one`` block of the input bias (LSTM forget gate) at 1."""
    blocks = spec(cell).blocks
    one = blocks.index(spec(cell).bias_one) if spec(cell).bias_one else None
    bound = 1.0 / math.sqrt(hidden_size)
    with torch.no_grad():
        for name, p in named:
            if "weight_hh" in name:
                for block in p.split(hidden_size, dim=0):
                    nn.init.orthogonal_(block)
            elif "weight" in name:
                nn.init.uniform_(p, -bound, bound)
            else:
                p.zero_()
                if one is not None and "bias_ih" in name:
                    p[one * hidden_size : (one + 1) * hidden_size] = 1.0


class CellLayer(nn.Module):
    """One layer of one cell type: ``project`` the input, then ``step`` the state."""

    def __init__(self, cell: str, input_size: int, hidden_size: int):
        super().__init__()
        gates = len(spec(cell).blocks) * hidden_size
        self.cell, self.hidden_size = cell, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates))
        self.bias_hh = nn.Parameter(torch.empty(gates))
        self._step = spec(cell).step
        # Called with gate_values(...) at every step when set (gate statistics); None in training.
        self.recorder: Callable[[dict[str, Tensor]], None] | None = None
        init_weights(cell, hidden_size, list(self.named_parameters()))

    def project(self, x: Tensor) -> Tensor:
        """Input projection W x + b: [..., I] -> [..., G]; done for all time steps at once."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, gx: Tensor, state: State, h_mask: Tensor | None = None) -> State:
        """Advance one step from a projected input gx: [B, G]; state tensors [B, H];
        ``h_mask``: the sequence's variational dropout mask of h, [B, H]."""
        if self.recorder is not None:
            self.recorder(gate_values(self.cell, gx, state, self.weight_hh, self.bias_hh))
        return self._step(gx, state, self.weight_hh, self.bias_hh, h_mask)


def sequence_mask(batch: int, size: int, p: float, like: Tensor) -> Tensor | None:
    """One inverted-dropout mask per sequence, the same at every time step (Gal & Ghahramani
    2016): [batch, size] of 0 and 1 / (1 - p); None when p is 0."""
    if p <= 0:
        return None
    return like.new_empty(batch, size).bernoulli_(1 - p) / (1 - p)
