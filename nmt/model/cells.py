"""The recurrent-cell seam: the only module (with its derivatives, ``nmt.model.cell_grads``) that knows
cell names. A cell is one row of ``SPECS``: what its state holds, its weight blocks, its gates and
what each means, its step written once from its equations (used by the encoder, the decoder, the
fused training loop and the exported graphs alike), its derivative if hand-written, a PyTorch
kernel if one computes the same equations, and how its encoder becomes an ONNX graph.

Everything downstream sees a ``State``, a tuple of tensors each ``[layers, B, H]`` named by the
row's ``state`` (``(h,)``, or ``(h, c)`` for the LSTMs).

A step is ``step(gx, state, w_hh, b_hh, hm) -> (new state, saved)``: gx = W x + b_ih for this
step (projected for all steps at once), the state's tensors [B, H], hm = h as it enters the
recurrent products (h times Gal & Ghahramani's variational dropout mask, or h itself), and
``saved`` a dict of what the step computed: its gates by name (gate statistics, plots) and what a
hand-written derivative reads. The cells, in the order a report lists them:

``tanh``
    The plain RNN (Elman 1990): h' = tanh(W x + U h + b).
``gru``
    Cho et al. (2014) as PyTorch and cuDNN compute it, the reset gate after the recurrent
    product: r = σ(W_r x + U_r h + b_r), z = σ(W_z x + U_z h + b_z),
    n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)), h' = z ⊙ h + (1 − z) ⊙ n.
``gru_cho``
    The GRU as Cho et al. (2014) wrote it, the reset gate on h before the product:
    n = tanh(W_n x + U_n (r ⊙ h) + b_n).
``gru_noreset``
    The GRU with r ≡ 1 (what the reset gate buys): z = σ(W_z x + U_z h + b_z),
    n = tanh(W_n x + U_n h + b_n), h' = z ⊙ h + (1 − z) ⊙ n.
``lstm``
    Hochreiter & Schmidhuber (1997) with Gers et al.'s (2000) forget gate, as PyTorch computes it:
    i, f, o = σ(W x + U h + b) per gate, g = tanh(W_g x + U_g h + b_g), c' = f ⊙ c + i ⊙ g,
    h' = o ⊙ tanh(c'). Forget-gate bias starts at 1 (Jozefowicz et al. 2015), as for every LSTM.
``lstm_nog``
    No output gate (Greff et al. 2017, "NOG"): h' = tanh(c'), all of the memory shown, as the
    GRU shows all of its state.
``lstm_cifg``
    Input gate coupled to the forget gate (Greff et al. 2017, "CIFG"): i = 1 − f, so what is
    written is what is forgotten, as the GRU's one update gate couples them.
``lstm_cifg_nog``
    Both: c' = f ⊙ c + (1 − f) ⊙ g, h' = tanh(c') — the closest LSTM to a GRU without a reset gate.
``mingru``
    Feng et al. (2024, "Were RNNs All We Needed?"): gate and candidate from the input alone,
    z = σ(W_z x + b_z), h̃ = W_h x + b_h, h' = (1 − z) ⊙ h + z ⊙ h̃. A linear recurrence in h:
    the encoder computes it as a parallel scan over time. Its gate is recorded as ``update``
    = 1 − z, the share of the old state kept, as the GRU's z.
``minlstm``
    Feng et al. (2024): f = σ(W_f x + b_f), i = σ(W_i x + b_i), h̃ = W_h x + b_h, normalised
    f' = f / (f + i), i' = i / (f + i), h' = f' ⊙ h + i' ⊙ h̃; scanned like minGRU.

``tests/test_cells.py`` checks every row's step against a float64 reference written from these
equations, and the ones PyTorch has against torch.nn.GRU / LSTM / RNN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.model.cell_grads import Derivative, gru_back, gru_cho_back, lstm_back, tanh_back

State = tuple[Tensor, ...]
Step = Callable[..., tuple[State, dict]]
# A linear recurrence's coefficients from the projected input alone: h' = a ⊙ h + b, and the
# gates to record.
Coefficients = Callable[[Tensor], tuple[Tensor, Tensor, dict]]


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
# The steps, each from the equations above.


def _tanh_step(gx, state, w_hh, b_hh, hm):
    h2 = torch.tanh(gx + F.linear(hm, w_hh, b_hh))
    return (h2,), {"hm": hm, "h": h2}


def _gru_step(gx, state, w_hh, b_hh, hm):
    (h,) = state
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(hm, w_hh, b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    saved = {"h_old": h, "hm": hm, "reset": r, "update": z, "new": n, "h_n": h_n}
    return (n + z * (h - n),), saved  # = (1 - z) * n + z * h


def _gru_cho_step(gx, state, w_hh, b_hh, hm):
    (h,) = state
    size = h.shape[-1]
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z = F.linear(hm, w_hh[: 2 * size], b_hh[: 2 * size]).chunk(2, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    rh = r * hm
    n = torch.tanh(x_n + F.linear(rh, w_hh[2 * size :], b_hh[2 * size :]))
    saved = {"h_old": h, "hm": hm, "reset": r, "update": z, "new": n, "rh": rh}
    return (n + z * (h - n),), saved


def _gru_noreset_step(gx, state, w_hh, b_hh, hm):
    (h,) = state
    x_z, x_n = gx.chunk(2, dim=-1)
    h_z, h_n = F.linear(hm, w_hh, b_hh).chunk(2, dim=-1)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + h_n)
    return (n + z * (h - n),), {"update": z}


def _lstm_step(blocks: tuple[str, ...]) -> Step:
    """The step of every LSTM of the table, by its blocks: no ``input`` block: i = 1 − f
    (coupled); no ``output`` block: h' = tanh(c')."""

    def step(gx, state, w_hh, b_hh, hm):
        _, c = state
        pre = dict(zip(blocks, (gx + F.linear(hm, w_hh, b_hh)).chunk(len(blocks), -1), strict=True))
        f = torch.sigmoid(pre["forget"])
        i = torch.sigmoid(pre["input"]) if "input" in pre else 1 - f
        g = torch.tanh(pre["cell"])
        c2 = f * c + i * g
        tc = torch.tanh(c2)
        saved = {"c_old": c, "hm": hm, "input": i, "forget": f, "cell": g, "tanh_c": tc}
        if "output" in pre:
            saved["output"] = o = torch.sigmoid(pre["output"])
            return (o * tc, c2), saved
        return (tc, c2), saved

    return step


def _mingru(gx: Tensor) -> tuple[Tensor, Tensor, dict]:
    x_z, x_h = gx.chunk(2, dim=-1)
    z = torch.sigmoid(x_z)
    keep = 1 - z
    return keep, z * x_h, {"update": keep}


def _minlstm(gx: Tensor) -> tuple[Tensor, Tensor, dict]:
    x_f, x_i, x_h = gx.chunk(3, dim=-1)
    f, i = torch.sigmoid(x_f), torch.sigmoid(x_i)
    total = f + i
    keep = f / total
    return keep, (i / total) * x_h, {"forget": keep}


def linear_step(coefficients: Coefficients) -> Step:
    """The step of a linear recurrence h' = a ⊙ h + b whose a and b read the input alone."""

    def step(gx, state, w_hh, b_hh, hm):
        (h,) = state
        a, b, gates = coefficients(gx)
        return (a * h + b,), gates

    return step


# --------------------------------------------------------------------------------------------
# How an encoder of a cell without its own ONNX recurrence becomes one: a PyTorch kernel whose
# equations it is, given weights rewritten for it (a gate held open: zero weights, a bias that
# saturates the sigmoid to exactly 1.0), and an attribute of the ONNX op set after the trace.

OPEN = 1.0e4  # σ(OPEN) is 1.0 in float32 (and float64): a gate held open


@dataclass(frozen=True)
class Twin:
    kernel: type[nn.RNNBase]
    # (w_ih, w_hh, b_ih, b_hh, hidden) of one layer and direction -> the kernel's four tensors
    weights: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]] = lambda *w: w[:4]
    attributes: dict[str, int] = field(default_factory=dict)  # set on the op in the graph


def _open_block(at: int) -> Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The kernel's weights with an open gate block inserted at block index ``at``."""

    def weights(w_ih, w_hh, b_ih, b_hh, hidden):
        def insert(t: Tensor, fill: float) -> Tensor:
            block = t.new_full((hidden, *t.shape[1:]), fill)
            return torch.cat([t[: at * hidden], block, t[at * hidden :]])

        return insert(w_ih, 0.0), insert(w_hh, 0.0), insert(b_ih, OPEN), insert(b_hh, 0.0)

    return weights


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellSpec:
    """What the code knows about a cell type: one row of SPECS."""

    blocks: tuple[str, ...]  # the blocks of weight_ih's rows (and of gx), in order
    step: Step  # one step from the gate equations
    # What each gate means, by the name the step saves it under; {}: no gates.
    gates: dict[str, str]
    state: tuple[str, ...] = ("h",)  # the state's tensors
    # The blocks of weight_hh's rows; None: as ``blocks``; (): the gates read the input alone.
    recurrent: tuple[str, ...] | None = None
    derivative: Derivative | None = None  # hand-written; None: autograd on the step (fused loop)
    kernel: type[nn.RNNBase] | None = None  # PyTorch's kernel for the same equations, if any
    kernel_kwargs: dict = field(default_factory=dict)
    bias_one: str | None = None  # the block whose input bias starts at 1 (forget gates)
    scan: Coefficients | None = None  # a linear recurrence: the encoder scans it over time
    twin: Twin | None = None  # its encoder exported as this kernel's ONNX op
    cites: str = ""  # where its equations come from

    @property
    def states(self) -> int:
        return len(self.state)

    @property
    def recurrent_blocks(self) -> tuple[str, ...]:
        return self.blocks if self.recurrent is None else self.recurrent

    @property
    def export(self) -> str | None:
        """How the encoder becomes an ONNX graph: ``kernel`` (its own op), ``twin``, ``scan``
        (the scan's graph), or None: it cannot."""
        if self.kernel is not None:
            return "kernel"
        return "twin" if self.twin else ("scan" if self.scan else None)

    @property
    def training_path(self) -> str:
        """How the fused decoder loop differentiates its step: ``hand-written`` or ``autograd``."""
        return "hand-written" if self.derivative is not None else "autograd"


_KEPT = "share of the old state kept"
# In the order tables and plots list them: the share kept first (update, forget), as the rows
# name their gates.
_LSTM = {
    "forget": "share of the memory kept",
    "input": "share of the new candidate written to the memory",
    "output": "share of the memory shown as h",
}
_GRU = {"update": _KEPT, "reset": "share of h the candidate reads"}


def _lstm(blocks: tuple[str, ...], cites: str, **extra) -> CellSpec:
    return CellSpec(
        blocks=blocks,
        step=_lstm_step(blocks),
        gates={g: meaning for g, meaning in _LSTM.items() if g in blocks},
        state=("h", "c"),
        derivative=lstm_back(blocks),
        bias_one="forget",
        cites=cites,
        **extra,
    )


_GREFF = "Greff et al. (2017), LSTM: A Search Space Odyssey"
_FENG = "Feng et al. (2024), Were RNNs All We Needed?"

# In the order a report lists them (nmt.report.runs, nmt.report.plots): the plain RNN, the gated cells that
# replaced it, each one gate changed, then the minimal cells.
SPECS = {
    "tanh": CellSpec(
        blocks=("hidden",),
        step=_tanh_step,
        gates={},
        derivative=tanh_back,
        kernel=nn.RNN,
        kernel_kwargs={"nonlinearity": "tanh"},
        cites="Elman (1990)",
    ),
    "gru": CellSpec(
        blocks=("reset", "update", "new"),
        step=_gru_step,
        gates=_GRU,
        derivative=gru_back,
        kernel=nn.GRU,
        cites="Cho et al. (2014); the reset gate after the product, as in cuDNN",
    ),
    "gru_cho": CellSpec(
        blocks=("reset", "update", "new"),
        step=_gru_cho_step,
        gates=_GRU,
        derivative=gru_cho_back,
        twin=Twin(nn.GRU, attributes={"linear_before_reset": 0}),
        cites="Cho et al. (2014), Eq. 5-8",
    ),
    "gru_noreset": CellSpec(
        blocks=("update", "new"),
        step=_gru_noreset_step,
        gates={"update": _KEPT},
        twin=Twin(nn.GRU, _open_block(0)),
        cites="Cho et al. (2014) with r = 1; Jozefowicz et al. (2015)",
    ),
    "lstm": _lstm(
        ("input", "forget", "cell", "output"),
        "Hochreiter & Schmidhuber (1997); Gers et al. (2000)",
        kernel=nn.LSTM,
    ),
    "lstm_nog": _lstm(
        ("input", "forget", "cell"), f"{_GREFF}: NOG", twin=Twin(nn.LSTM, _open_block(3))
    ),
    "lstm_cifg": _lstm(("forget", "cell", "output"), f"{_GREFF}: CIFG"),
    "lstm_cifg_nog": _lstm(("forget", "cell"), f"{_GREFF}: CIFG and NOG"),
    "mingru": CellSpec(
        blocks=("update", "new"),
        step=linear_step(_mingru),
        gates={"update": _KEPT},
        recurrent=(),
        scan=_mingru,
        cites=_FENG,
    ),
    "minlstm": CellSpec(
        blocks=("forget", "input", "new"),
        step=linear_step(_minlstm),
        gates={"forget": _KEPT + " (f / (f + i))"},
        recurrent=(),
        bias_one="forget",
        scan=_minlstm,
        cites=_FENG,
    ),
}
CELLS = tuple(SPECS)


def spec(cell: str) -> CellSpec:
    if cell not in SPECS:
        raise ValueError(f"model.cell={cell!r}: expected one of {', '.join(CELLS)}")
    return SPECS[cell]


def state_size(cell: str) -> int:
    """How many tensors a state of this cell holds: 2 for the LSTMs (h, c), else 1."""
    return spec(cell).states


def gate_names() -> tuple[str, ...]:
    """Every gate name of the table, in the order rows name them (plots)."""
    names: dict[str, None] = {}
    for row in SPECS.values():
        names.update(dict.fromkeys(row.gates))
    return tuple(names)


def init_weights(cell: str, hidden_size: int, named: list[tuple[str, nn.Parameter]]) -> None:
    """Uniform ±1/sqrt(H) inputs, orthogonal recurrent blocks, zero biases but the spec's
    ``bias_one`` block of the input bias (forget gates) at 1."""
    blocks = spec(cell).blocks
    one = blocks.index(spec(cell).bias_one) if spec(cell).bias_one else None
    bound = 1.0 / math.sqrt(hidden_size)
    with torch.no_grad():
        for name, p in named:
            if "weight_hh" in name:
                for block in p.split(hidden_size, dim=0) if p.numel() else ():
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
        row = spec(cell)
        gates, recurrent = len(row.blocks) * hidden_size, len(row.recurrent_blocks) * hidden_size
        self.cell, self.hidden_size = cell, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.bias_ih = nn.Parameter(torch.empty(gates))
        if recurrent:
            self.weight_hh = nn.Parameter(torch.empty(recurrent, hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(recurrent))
        else:  # gates that read the input alone: empty, neither trained nor saved
            self.register_buffer("weight_hh", torch.empty(0, hidden_size), persistent=False)
            self.register_buffer("bias_hh", torch.empty(0), persistent=False)
        self._step = row.step
        # Called with the step's gates at every step when set (gate statistics); None in training.
        self.recorder: Callable[[dict[str, Tensor]], None] | None = None
        init_weights(cell, hidden_size, list(self.named_parameters()))

    def project(self, x: Tensor) -> Tensor:
        """Input projection W x + b: [..., I] -> [..., G]; done for all time steps at once."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, gx: Tensor, state: State, h_mask: Tensor | None = None) -> State:
        """Advance one step from a projected input gx: [B, G]; state tensors [B, H];
        ``h_mask``: the sequence's variational dropout mask of h, [B, H]."""
        hm = state[0] if h_mask is None else state[0] * h_mask
        new, saved = self._step(gx, state, self.weight_hh, self.bias_hh, hm)
        if self.recorder is not None:
            self.recorder(gates_of(self.cell, saved))
        return new


def gates_of(cell: str, saved: dict) -> dict[str, Tensor]:
    """The gates a step saved, by name: [B, H] each; none for tanh."""
    return {name: saved[name] for name in spec(cell).gates}


def sequence_mask(batch: int, size: int, p: float, like: Tensor) -> Tensor | None:
    """One inverted-dropout mask per sequence, the same at every time step (Gal & Ghahramani
    2016): [batch, size] of 0 and 1 / (1 - p); None when p is 0."""
    if p <= 0:
        return None
    return like.new_empty(batch, size).bernoulli_(1 - p) / (1 - p)
