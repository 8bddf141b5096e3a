"""The recurrent-cell seam: the only module that knows cell names.

Everything downstream sees a ``State``, a tuple of tensors each ``[layers, B, H]`` — ``(h,)`` for
the GRUs and the tanh RNN, ``(h, c)`` for the LSTM — and two kinds of module:

- :class:`Recurrent` runs a whole (packed) sequence: the encoder's bidirectional RNN.
- :class:`StackedCell` advances one time step: the decoder's RNN, driven by search.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

State = tuple[Tensor, ...]

CELLS = ("gru", "gru_cho", "lstm", "tanh")
_GATES = {"gru": 3, "gru_cho": 3, "lstm": 4, "tanh": 1}
_FUSED = {"gru": nn.GRU, "lstm": nn.LSTM, "tanh": nn.RNN}


def check_cell(cell: str) -> None:
    if cell not in _GATES:
        raise ValueError(f"model.cell={cell!r}: expected one of {', '.join(CELLS)}")


def state_size(cell: str) -> int:
    """How many tensors a state of this cell holds: 2 for the LSTM (h, c), else 1."""
    check_cell(cell)
    return 2 if cell == "lstm" else 1


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
# One step, from the gate equations. gx = W x + b_ih (precomputed), h/c: [B, H].


def _gru_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> State:
    (h,) = state
    gh = F.linear(h, w_hh, b_hh)
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (n + z * (h - n),)  # = (1 - z) * n + z * h


def _gru_cho_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> State:
    (h,) = state
    size = h.shape[-1]
    gh_rz = F.linear(h, w_hh[: 2 * size], b_hh[: 2 * size])
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z = gh_rz.chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + F.linear(r * h, w_hh[2 * size :], b_hh[2 * size :]))
    return (n + z * (h - n),)  # = z * h + (1 - z) * n


def _lstm_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> State:
    h, c = state
    gates = gx + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _tanh_step(gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> State:
    (h,) = state
    return (torch.tanh(gx + F.linear(h, w_hh, b_hh)),)


_STEPS: dict[str, Callable[[Tensor, State, Tensor, Tensor], State]] = {
    "gru": _gru_step,
    "gru_cho": _gru_cho_step,
    "lstm": _lstm_step,
    "tanh": _tanh_step,
}


def gate_values(
    cell: str, gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor
) -> dict[str, Tensor]:
    """The sigmoid gates a step computes from (gx, state): [B, H] each; none for tanh.

    ``update`` (GRU z) and ``forget`` (LSTM f) are both the share of the old state kept.
    """
    h = state[0]
    if cell in ("gru", "gru_cho"):
        size = h.shape[-1]
        x_r, x_z, _ = gx.chunk(3, dim=-1)
        h_r, h_z = F.linear(h, w_hh[: 2 * size], b_hh[: 2 * size]).chunk(2, dim=-1)
        return {"reset": torch.sigmoid(x_r + h_r), "update": torch.sigmoid(x_z + h_z)}
    if cell == "lstm":
        i, f, _, o = (gx + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
        return {"input": torch.sigmoid(i), "forget": torch.sigmoid(f), "output": torch.sigmoid(o)}
    return {}


def gate_names(cell: str) -> list[str]:
    """Names of the gate blocks of ``weight_ih`` rows, in order (for gate statistics)."""
    check_cell(cell)
    return {"gru": ["reset", "update", "new"], "gru_cho": ["reset", "update", "new"],
            "lstm": ["input", "forget", "cell", "output"], "tanh": ["hidden"]}[cell]  # fmt: skip


def _init_weights(cell: str, hidden_size: int, named: list[tuple[str, nn.Parameter]]) -> None:
    """Uniform ±1/sqrt(H) inputs, orthogonal recurrent blocks, LSTM forget bias 1."""
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
                if cell == "lstm" and "bias_ih" in name:
                    p[hidden_size : 2 * hidden_size] = 1.0


class CellLayer(nn.Module):
    """One layer of one cell type: ``project`` the input, then ``step`` the state."""

    def __init__(self, cell: str, input_size: int, hidden_size: int):
        super().__init__()
        check_cell(cell)
        gates = _GATES[cell] * hidden_size
        self.cell, self.hidden_size = cell, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates))
        self.bias_hh = nn.Parameter(torch.empty(gates))
        self._step = _STEPS[cell]
        # Called with gate_values(...) at every step when set (gate statistics); None in training.
        self.recorder: Callable[[dict[str, Tensor]], None] | None = None
        _init_weights(cell, hidden_size, list(self.named_parameters()))

    def project(self, x: Tensor) -> Tensor:
        """Input projection W x + b: [..., I] -> [..., G]; done for all time steps at once."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, gx: Tensor, state: State) -> State:
        """Advance one step from a projected input gx: [B, G]; state tensors [B, H]."""
        if self.recorder is not None:
            self.recorder(gate_values(self.cell, gx, state, self.weight_hh, self.bias_hh))
        return self._step(gx, state, self.weight_hh, self.bias_hh)


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

    def step(self, gx: Tensor, state: State) -> State:
        """gx: [B, G], the first layer's projected input; returns the new [layers, B, H] state."""
        new = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                gx = layer.project(self.dropout(new[-1][0]))
            new.append(layer.step(gx, tuple(t[i] for t in state)))
        return tuple(torch.stack(parts) for parts in zip(*new, strict=True))


# --------------------------------------------------------------------------------------------
# Whole sequences (the encoder).


class Recurrent(nn.Module):
    """A (bi)directional multi-layer RNN over padded sequences, padding costing nothing.

    forward(x: [B, S, I], lens: [B] CPU int64) -> (outputs [B, S, dirs*H] zero at padding,
    final State with tensors [layers*dirs, B, H] taken at each sequence's true end).
    """

    def __init__(self, *, cell: str, input_size: int, hidden_size: int, layers: int,
                 bidirectional: bool, dropout: float):  # fmt: skip
        super().__init__()
        check_cell(cell)
        self.cell, self.hidden_size, self.layers = cell, hidden_size, layers
        self.dirs = 2 if bidirectional else 1
        if cell in _FUSED:
            self.rnn = _FUSED[cell](
                input_size, hidden_size, num_layers=layers, batch_first=True,
                bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0,
                **({"nonlinearity": "tanh"} if cell == "tanh" else {}),
            )  # fmt: skip
            _init_weights(cell, hidden_size, list(self.rnn.named_parameters()))
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
        if self.rnn is not None:
            packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
            out, final = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            return out, wrap(final)
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

    def gate_sums(self, x: Tensor, lens: Tensor) -> dict[tuple[int, int, str], tuple[float, int]]:
        """Sum and count of each gate's activations over real positions, per (layer, direction,
        gate), by stepping the gate equations with this module's weights (fused kernels do not
        expose their gates). Also the check that those weights are read correctly: the stepped
        outputs equal ``forward``'s (tests)."""
        sums: dict[tuple[int, int, str], tuple[float, int]] = {}

        def record(layer: int, d: int, gates: dict[str, Tensor], keep: Tensor) -> None:
            for name, g in gates.items():
                total, count = sums.get((layer, d, name), (0.0, 0))
                sums[layer, d, name] = (
                    total + float((g * keep).sum()),
                    count + int(keep.sum()) * g.shape[-1],
                )

        with torch.no_grad():
            self._loop(x, lens, record)
        return sums

    def _loop(
        self, x: Tensor, lens: Tensor, record: Callable | None = None
    ) -> tuple[Tensor, State]:
        batch, length = x.shape[:2]
        mask = (torch.arange(length)[None, :] < lens[:, None]).to(x.device)  # [B, S]
        finals: list[State] = []
        weights = self.layer_weights()
        step = _STEPS[self.cell]
        for layer in range(self.layers):
            outs = []
            for d in range(self.dirs):
                w_ih, w_hh, b_ih, b_hh = weights[layer * self.dirs + d]
                gx = F.linear(x, w_ih, b_ih)  # [B, S, G] for all steps at once
                zero = x.new_zeros(batch, self.hidden_size)
                state = (zero,) * state_size(self.cell)
                steps = range(length) if d == 0 else reversed(range(length))
                out = [None] * length
                for t in steps:
                    new = step(gx[:, t], state, w_hh, b_hh)
                    keep = mask[:, t, None]
                    if record is not None:
                        record(layer, d, gate_values(self.cell, gx[:, t], state, w_hh, b_hh), keep)
                    # Padding leaves the state untouched, so the backward direction starts at
                    # each sentence's last real token and the final state is the true one.
                    state = tuple(torch.where(keep, n, o) for n, o in zip(new, state, strict=True))
                    out[t] = state[0] * keep
                outs.append(torch.stack(out, dim=1))
                finals.append(state)
            x = torch.cat(outs, dim=-1)
            if layer < self.layers - 1:
                x = self.dropout(x)
        final = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))
        return x, final


def final_top(state: State, layers: int, dirs: int) -> State:
    """The top layer's final state with directions concatenated: tensors [B, dirs*H]."""
    out = []
    for t in state:
        top = t.view(layers, dirs, *t.shape[1:])[-1]  # [dirs, B, H]
        out.append(torch.cat(list(top), dim=-1))
    return tuple(out)
