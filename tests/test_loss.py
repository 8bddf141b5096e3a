"""The fused output layer and label-smoothed loss against PyTorch's own, in fp64 and bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import bf16

from nmt.model.loss import LinearSmoothedCrossEntropy


@pytest.mark.parametrize("n", [7, 5000])  # one chunk, and several
def test_fused_output_layer_loss_matches_torch(n):
    torch.manual_seed(0)
    x = torch.randn(n, 6, dtype=torch.double, requires_grad=True)
    w = torch.randn(13, 6, dtype=torch.double, requires_grad=True)
    b = torch.randn(13, dtype=torch.double, requires_grad=True)
    t = torch.randint(0, 13, (n,))
    loss, nll = LinearSmoothedCrossEntropy.apply(x, w, b, t, 0.1)
    logits = F.linear(x, w, b)
    expected = F.cross_entropy(logits, t, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, F.cross_entropy(logits, t, reduction="sum"))
    grads = torch.autograd.grad(loss * 0.5, (x, w, b))
    for mine, theirs in zip(grads, torch.autograd.grad(expected * 0.5, (x, w, b)), strict=True):
        torch.testing.assert_close(mine, theirs)
    if n < 100:
        assert torch.autograd.gradcheck(
            lambda *a: LinearSmoothedCrossEntropy.apply(*a, t, 0.1)[0], (x, w, b)
        )


def test_fused_output_layer_under_bf16_autocast():
    from nmt.model.loss import LinearSmoothedCrossEntropy

    torch.manual_seed(0)
    x = torch.randn(300, 24, requires_grad=True)
    w = torch.randn(50, 24, requires_grad=True)
    b = torch.randn(50, requires_grad=True)
    t = torch.randint(0, 50, (300,))
    with bf16():
        h = x * 1.0  # an activation as autocast hands it over
        loss, nll = LinearSmoothedCrossEntropy.apply(F.linear(h, torch.eye(24)), w, b, t, 0.1)
        mine = torch.autograd.grad(loss, (x, w, b))
    with bf16():
        logits = F.linear(F.linear(x * 1.0, torch.eye(24)), w, b)
        expected = F.cross_entropy(logits.float(), t, label_smoothing=0.1, reduction="sum")
        theirs = torch.autograd.grad(expected, (x, w, b))
    assert loss.dtype == torch.float32  # the loss stays fp32
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-2)
    for a, e in zip(mine, theirs, strict=True):
        assert a.dtype == e.dtype == torch.float32  # parameter gradients in fp32
        torch.testing.assert_close(a, e, rtol=2e-2, atol=2e-2)
