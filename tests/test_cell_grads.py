"""Each cell's step as the fused loop takes it (nmt.cell_grads) and its hand-written derivative,
against autograd's, in float64: the input's, the old state's and every weight row's gradient."""

from __future__ import annotations

import pytest
import torch

from nmt.cell_grads import CELL_GRADS
from nmt.cells import CELLS, spec


def test_every_cell_of_the_table_has_its_gradient():
    assert set(CELL_GRADS) == set(CELLS)


@pytest.mark.parametrize("cell", CELLS)
def test_a_steps_derivative_is_autograds(cell):
    torch.manual_seed(0)
    batch, hidden = 3, 4
    gates = len(spec(cell).blocks) * hidden
    double = dict(dtype=torch.float64, requires_grad=True)
    gx = torch.randn(batch, gates, **double)
    state = tuple(torch.randn(batch, hidden, **double) for _ in range(spec(cell).states))
    w_hh, b_hh = torch.randn(gates, hidden, **double), torch.randn(gates, **double)
    mask = torch.bernoulli(torch.full((batch, hidden), 0.7, dtype=torch.float64)) / 0.7
    step, back = CELL_GRADS[cell]
    hm = state[0] * mask
    new, saved = step(gx, state, w_hh, b_hh, hm)
    g_new = tuple(torch.randn_like(t) for t in new)
    inputs = (gx, *state, w_hh, b_hh)
    expected = torch.autograd.grad(new, inputs, g_new, allow_unused=True)
    with torch.no_grad():
        g_gx, rows, g_hm, direct = back(tuple(t.detach() for t in saved), g_new, w_hh.detach())
        g_w, g_b = torch.zeros_like(w_hh), torch.zeros_like(b_hh)
        for r, g, x in rows:
            g_w[r] += g.T @ x
            g_b[r] += g.sum(0)
    torch.testing.assert_close(g_gx, expected[0], rtol=1e-10, atol=1e-12)
    g_h = g_hm * mask + (0 if direct[0] is None else direct[0])
    torch.testing.assert_close(g_h, expected[1], rtol=1e-10, atol=1e-12)
    if len(state) == 2:
        torch.testing.assert_close(direct[1], expected[2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_w, expected[-2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_b, expected[-1], rtol=1e-10, atol=1e-12)
