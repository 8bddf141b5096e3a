"""The derivatives of the cells' steps, for the fused decoder loop (nmt.model.fused).

A cell's step (``nmt.model.cells``) returns its new state and ``saved``, a dict of what it computed: its
gates by name, and what a derivative needs. A row of the cell table may name a hand-written
derivative, ``back(saved, grads of the new state, w_hh) -> Back``, written here from the cell's
equations (``tests/test_cell_grads.py`` checks each against autograd in float64). A row without one
still trains in the fused loop: :func:`fused_step` then keeps the step's inputs and, in the
backward pass, runs the step again under autograd (one more forward per step and cell, no
calculus to write), which ``make bench`` reports as the ``autograd`` path.

``hm`` is h as it enters the recurrent product (times the variational dropout mask); the state's
gradient that bypasses that product comes back in ``Back.state``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


class Back(NamedTuple):
    """A step's gradients: of gx; of the recurrent weights as products ``(rows, g, x)`` with
    grad(w_hh[rows]) += g^T x and grad(b_hh[rows]) += sum(g) (``whole``: the two gradients at
    once instead); of hm; of the old state's tensors that bypass the product (None: zero)."""

    gx: Tensor
    products: list[tuple[slice, Tensor, Tensor]]
    hm: Tensor | None
    state: tuple[Tensor | None, ...]
    whole: tuple[Tensor | None, Tensor | None] | None = None


Derivative = Callable[[dict, tuple, Tensor], Back]


def tanh_back(saved: dict, grads: tuple, w_hh: Tensor) -> Back:
    """h' = tanh(gx + U hm + b)."""
    hm, h2 = saved["hm"], saved["h"]
    pre = grads[0] * (1 - h2 * h2)
    return Back(pre, [(slice(None), pre, hm)], pre @ w_hh, (None,))


def gru_back(saved: dict, grads: tuple, w_hh: Tensor) -> Back:
    """r, z = σ(x_r + U_r hm + b_r), σ(x_z + U_z hm + b_z); n = tanh(x_n + r ⊙ h_n) with
    h_n = U_n hm + b_n; h' = n + z ⊙ (h − n)."""
    h, hm, r, z, n, h_n = (saved[k] for k in ("h_old", "hm", "reset", "update", "new", "h_n"))
    (g,) = grads
    n_pre = g * (1 - z) * (1 - n * n)
    r_pre = n_pre * h_n * r * (1 - r)
    z_pre = g * (h - n) * z * (1 - z)
    g_gh = torch.cat([r_pre, z_pre, n_pre * r], dim=-1)
    g_gx = torch.cat([r_pre, z_pre, n_pre], dim=-1)
    return Back(g_gx, [(slice(None), g_gh, hm)], g_gh @ w_hh, (g * z,))


def gru_cho_back(saved: dict, grads: tuple, w_hh: Tensor) -> Back:
    """As the GRU, with n = tanh(x_n + U_n (r ⊙ hm) + b_n)."""
    h, hm, r, z, n, rh = (saved[k] for k in ("h_old", "hm", "reset", "update", "new", "rh"))
    (g,) = grads
    size = h.shape[-1]
    n_pre = g * (1 - z) * (1 - n * n)
    g_rh = n_pre @ w_hh[2 * size :]
    r_pre = g_rh * hm * r * (1 - r)
    z_pre = g * (h - n) * z * (1 - z)
    g_rz = torch.cat([r_pre, z_pre], dim=-1)
    g_gx = torch.cat([r_pre, z_pre, n_pre], dim=-1)
    g_hm = g_rz @ w_hh[: 2 * size] + g_rh * r
    rows = [(slice(0, 2 * size), g_rz, hm), (slice(2 * size, 3 * size), n_pre, rh)]
    return Back(g_gx, rows, g_hm, (g * z,))


def lstm_back(blocks: tuple[str, ...]) -> Derivative:
    """The derivative of every LSTM of the table, by its blocks: c' = f ⊙ c + i ⊙ g, with
    i = 1 − f when there is no input block (coupled, CIFG), and h' = o ⊙ tanh(c'), or tanh(c')
    when there is no output block."""
    coupled, shows = "input" not in blocks, "output" in blocks

    def back(saved: dict, grads: tuple, w_hh: Tensor) -> Back:
        c, hm, i, f, g, tc = (
            saved[k] for k in ("c_old", "hm", "input", "forget", "cell", "tanh_c")
        )
        g_h, g_c = grads
        o = saved["output"] if shows else None
        g_c2 = g_h * (1 - tc * tc) * (1 if o is None else o) + (0 if g_c is None else g_c)
        pre = {"cell": g_c2 * i * (1 - g * g)}
        if coupled:  # c' = f c + (1 - f) g
            pre["forget"] = g_c2 * (c - g) * f * (1 - f)
        else:
            pre["forget"] = g_c2 * c * f * (1 - f)
            pre["input"] = g_c2 * g * i * (1 - i)
        if shows:
            pre["output"] = g_h * tc * o * (1 - o)
        g_pre = torch.cat([pre[block] for block in blocks], dim=-1)
        return Back(g_pre, [(slice(None), g_pre, hm)], g_pre @ w_hh, (None, g_c2 * f))

    return back


# --------------------------------------------------------------------------------------------


def fused_step(step: Callable, derivative: Derivative | None) -> tuple[Callable, Derivative]:
    """(forward, backward) for the fused loop: the step and its hand-written derivative, or the
    step keeping its inputs and a backward that runs it again under autograd."""
    if derivative is not None:
        return step, derivative

    def forward(gx, state, w_hh, b_hh, hm):
        new, _ = step(gx, state, w_hh, b_hh, hm)
        return new, {"inputs": (gx, state, w_hh, b_hh, hm)}

    return forward, autograd_back(step)


def autograd_back(step: Callable) -> Derivative:
    """A derivative from autograd on the step, recomputed from its inputs."""

    def back(saved: dict, grads: tuple, w_hh: Tensor) -> Back:
        gx, state, w, b, hm = saved["inputs"]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (gx, *state, w, b, hm)]
            gx_, *rest = leaves
            state_, (w_, b_, hm_) = tuple(rest[: len(state)]), rest[len(state) :]
            new, _ = step(gx_, state_, w_, b_, hm_)
            pairs = [(t, g) for t, g in zip(new, grads, strict=True) if g is not None]
            found = torch.autograd.grad(
                [t for t, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True
            )
        g_gx, *g_rest = found
        g_state, (g_w, g_b, g_hm) = tuple(g_rest[: len(state)]), g_rest[len(state) :]
        if g_gx is None:
            g_gx = torch.zeros_like(gx)
        return Back(g_gx, [], g_hm, g_state, whole=(g_w, g_b))

    return back
