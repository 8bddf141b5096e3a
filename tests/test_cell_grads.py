"""Each cell's step as the fused loop takes it (nmt.model.cell_grads.fused_step: the row's hand-written
derivative, or autograd on the step) against autograd's, in float64: the input's, the old
state's and every recurrent weight's gradient."""

from __future__ import annotations

import pytest
import torch

from nmt.model.cell_grads import fused_step
from nmt.model.cells import CELLS, spec


def test_the_classic_cells_have_hand_written_derivatives():
    """The four cells trained most keep their fast path; the variants may use autograd's."""
    for cell in ("tanh", "gru", "gru_cho", "lstm", "lstm_nog", "lstm_cifg"):
        assert spec(cell).training_path == "hand-written", cell
    assert spec("mingru").training_path == "autograd"


@pytest.mark.parametrize("cell", CELLS)
def test_a_steps_derivative_is_autograds(cell):
    torch.manual_seed(0)
    batch, hidden = 3, 4
    row = spec(cell)
    gates, recurrent = len(row.blocks) * hidden, len(row.recurrent_blocks) * hidden
    double = dict(dtype=torch.float64, requires_grad=True)
    gx = torch.randn(batch, gates, **double)
    state = tuple(torch.randn(batch, hidden, **double) for _ in range(row.states))
    w_hh, b_hh = torch.randn(recurrent, hidden, **double), torch.randn(recurrent, **double)
    mask = torch.bernoulli(torch.full((batch, hidden), 0.7, dtype=torch.float64)) / 0.7
    forward, back = fused_step(row.step, row.derivative)
    hm = state[0] * mask
    new, saved = forward(gx, state, w_hh, b_hh, hm)
    reference, _ = row.step(gx, state, w_hh, b_hh, hm)
    for mine, theirs in zip(new, reference, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    g_new = tuple(torch.randn_like(t) for t in new)
    inputs = (gx, *state, w_hh, b_hh)
    expected = [
        torch.zeros_like(t) if g is None else g
        for t, g in zip(
            inputs, torch.autograd.grad(new, inputs, g_new, allow_unused=True), strict=True
        )
    ]
    with torch.no_grad():
        saved = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in saved.items()}
        out = back(saved, g_new, w_hh.detach())
        g_w, g_b = torch.zeros_like(w_hh), torch.zeros_like(b_hh)
        for r, g, x in out.products:
            g_w[r] += g.T @ x
            g_b[r] += g.sum(0)
        if out.whole is not None:
            g_w += 0 if out.whole[0] is None else out.whole[0]
            g_b += 0 if out.whole[1] is None else out.whole[1]
    torch.testing.assert_close(out.gx, expected[0], rtol=1e-10, atol=1e-12)
    g_h = (0 if out.hm is None else out.hm * mask) + (0 if out.state[0] is None else out.state[0])
    torch.testing.assert_close(torch.as_tensor(g_h).expand_as(expected[1]), expected[1])
    if row.states == 2:
        torch.testing.assert_close(out.state[1], expected[2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_w, expected[-2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_b, expected[-1], rtol=1e-10, atol=1e-12)
