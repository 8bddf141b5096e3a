"""Each cell's step as the fused decoder loop (nmt.fused) runs it, keeping what its derivative
needs, and that derivative, written by hand from the gate equations of ``nmt.cells``.

``CELL_GRADS[cell] = (step, back)``, keyed by the cell table's names (a cell added to
``cells.SPECS`` needs its row here; ``tests/test_cell_grads.py`` asks for it and checks every row
against autograd). ``step(gx, state, w_hh, b_hh, hm) -> (new state, saved)``, where hm is h as it
enters the recurrent product (times the variational mask); ``back(saved, grads of the new state,
w_hh) -> (grad of gx, [(rows of w_hh, grad of those rows' pre-activations, their input)], grad
of hm, grads of the old state that bypass the product (None: zero))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _tanh_fwd(gx, state, w_hh, b_hh, hm):
    h2 = torch.tanh(gx + F.linear(hm, w_hh, b_hh))
    return (h2,), (hm, h2)


def _tanh_back(saved, grads, w_hh):
    hm, h2 = saved
    pre = grads[0] * (1 - h2 * h2)
    return pre, [(slice(None), pre, hm)], pre @ w_hh, (None,)


def _gru_fwd(gx, state, w_hh, b_hh, hm):
    (h,) = state
    h_r, h_z, h_n = F.linear(hm, w_hh, b_hh).chunk(3, dim=-1)
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (n + z * (h - n),), (h, hm, r, z, n, h_n)


def _gru_back(saved, grads, w_hh):
    h, hm, r, z, n, h_n = saved
    (g,) = grads
    n_pre = g * (1 - z) * (1 - n * n)
    r_pre = n_pre * h_n * r * (1 - r)
    z_pre = g * (h - n) * z * (1 - z)
    g_gh = torch.cat([r_pre, z_pre, n_pre * r], dim=-1)
    g_gx = torch.cat([r_pre, z_pre, n_pre], dim=-1)
    return g_gx, [(slice(None), g_gh, hm)], g_gh @ w_hh, (g * z,)


def _gru_cho_fwd(gx, state, w_hh, b_hh, hm):
    (h,) = state
    size = h.shape[-1]
    h_r, h_z = F.linear(hm, w_hh[: 2 * size], b_hh[: 2 * size]).chunk(2, dim=-1)
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    rh = r * hm
    n = torch.tanh(x_n + F.linear(rh, w_hh[2 * size :], b_hh[2 * size :]))
    return (n + z * (h - n),), (h, hm, r, z, n, rh)


def _gru_cho_back(saved, grads, w_hh):
    h, hm, r, z, n, rh = saved
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
    return g_gx, rows, g_hm, (g * z,)


def _lstm_fwd(gx, state, w_hh, b_hh, hm):
    _, c = state
    i, f, g, o = (gx + F.linear(hm, w_hh, b_hh)).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c2 = f * c + i * g
    tc = torch.tanh(c2)
    return (o * tc, c2), (c, hm, i, f, g, o, tc)


def _lstm_back(saved, grads, w_hh):
    c, hm, i, f, g, o, tc = saved
    g_h, g_c = grads
    g_c2 = g_h * o * (1 - tc * tc) + (0 if g_c is None else g_c)
    pre = torch.cat(
        [
            g_c2 * g * i * (1 - i),
            g_c2 * c * f * (1 - f),
            g_c2 * i * (1 - g * g),
            g_h * tc * o * (1 - o),
        ],
        dim=-1,
    )
    return pre, [(slice(None), pre, hm)], pre @ w_hh, (None, g_c2 * f)


CELL_GRADS = {
    "tanh": (_tanh_fwd, _tanh_back),
    "gru": (_gru_fwd, _gru_back),
    "gru_cho": (_gru_cho_fwd, _gru_cho_back),
    "lstm": (_lstm_fwd, _lstm_back),
}
