"""The fused decoder loop (nmt.model.fused) against autograd's: the same loss and the same gradient of
every parameter, in float64, for every cell, attention, conditional decoder and regulariser, with
padding in the batch; its own backward against finite differences with every dropout mask."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import bf16, relative_error, run_fit, tiny_model, toy_batch

from nmt.model import fused as fused_loop
from nmt.model.attention import KINDS
from nmt.model.cells import CELLS
from nmt.model.fused import FusedLoop
from nmt.model.loss import sequence_loss

CASES = [(c, a, conditional) for c in CELLS for a in KINDS for conditional in (False, True)]
# bf16: additive attention (scored in float32) for every cell, and each other kind once.
BF16_CASES = [(c, "bahdanau", conditional) for c in CELLS for conditional in (False, True)] + [
    ("gru", "none", True),
    ("lstm", "luong_dot", False),
    ("gru_cho", "luong_general", True),
    ("tanh", "luong_general", False),
]


def gradients(model, batch, seed: int) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same masks for both loops
    out = sequence_loss(model, batch, label_smoothing=0.1)
    out.loss.backward()
    return float(out.loss), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("cell,attention,conditional", CASES)
def test_fused_gradients_equal_autograds(cell, attention, conditional):
    """Two decoder layers, variational dropout on (one mask per sequence, drawn the same way by
    both loops), word and embedding dropout; standard and context dropout off here (the fused loop
    draws their per-step masks up front: the next test checks them)."""
    torch.manual_seed(0)
    model = tiny_model(
        cell, attention, conditional=conditional, dec_layers=2, var_dropout=0.3,
        word_dropout=0.1, emb_dropout=0.1,
    ).double().train()  # fmt: skip
    batch = toy_batch(5, seed=3)  # sentences of different lengths: padding in source and target
    plain_loss, plain = gradients(model, batch, seed=7)
    model.decoder.fused = True
    fused_loss, fused = gradients(model, batch, seed=7)
    assert fused_loss == pytest.approx(plain_loss, rel=1e-12)
    assert fused.keys() == plain.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(fused[name], grad, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("cell,attention,conditional", BF16_CASES)
def test_fused_gradients_under_bf16_autocast_are_near_float64s(cell, attention, conditional):
    """Under bf16 autocast the fused loop's products run in bf16 and additive attention scores
    in float32: every parameter's gradient within 5 % (relative norm) of float64's, and never
    much further than autograd's own bf16 loop, which loses the attention query's gradient."""
    torch.manual_seed(0)
    model = tiny_model(
        cell, attention, conditional=conditional, dec_layers=2, var_dropout=0.3,
        word_dropout=0.1, emb_dropout=0.1,
    ).train()  # fmt: skip
    batch = toy_batch(5, seed=3)
    exact = copy.deepcopy(model).double()
    exact.decoder.fused = False
    exact_loss, reference = gradients(exact, batch, seed=7)
    half = {}
    for fused in (False, True):
        model.decoder.fused = fused
        with bf16():
            half[fused] = gradients(model, batch, seed=7)
    assert half[True][0] == pytest.approx(exact_loss, rel=1e-3)
    assert half[True][1].keys() == reference.keys()
    for name, grad in reference.items():
        fused_error = relative_error(half[True][1][name].double(), grad)
        autograd_error = relative_error(half[False][1][name].double(), grad)
        assert fused_error < 0.05, (name, fused_error)
        assert fused_error < max(1.5 * autograd_error, 0.03), (name, fused_error, autograd_error)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_steps_projected_in_blocks_give_the_same_gradients(cell, monkeypatch):
    """Both loops project the target embeddings a block of steps at a time: blocks of 4 over 9
    steps (a short last block) and of 1 give the gradients of one block over all steps."""
    torch.manual_seed(0)
    model = tiny_model(cell, "bahdanau", conditional=True, dec_layers=2).double().train()
    batch = toy_batch(5, seed=3)
    assert batch.tgt_in.shape[1] == 9
    monkeypatch.setattr(fused_loop, "STEP_BLOCK", 16)
    _, whole = gradients(model, batch, seed=7)
    for block in (4, 1):
        monkeypatch.setattr(fused_loop, "STEP_BLOCK", block)
        for fused in (False, True):
            model.decoder.fused = fused
            _, grads = gradients(model, batch, seed=7)
            for name, grad in whole.items():
                torch.testing.assert_close(grads[name], grad, rtol=1e-9, atol=1e-10, msg=name)


class _Ctx:
    """Enough of autograd's context object to run FusedLoop.forward as plain autograd ops."""

    def mark_non_differentiable(self, *tensors) -> None:
        pass


@pytest.mark.parametrize("attention", KINDS)
@pytest.mark.parametrize("cell", CELLS)
def test_fused_backward_equals_autograd_through_the_same_loop_with_every_mask(
    cell, attention, monkeypatch
):
    """Standard dropout between layers and on the output, context dropout, the conditional
    decoder: the loop's inputs (masks drawn once) captured, then its forward run by autograd as
    the reference; every input's gradient equal to 1e-10 in float64."""
    torch.manual_seed(0)
    model = tiny_model(
        cell, attention, conditional=True, dec_layers=2, dropout=0.3, ctx_dropout=0.2,
    ).double().train()  # fmt: skip
    model.decoder.fused = True
    captured = {}
    apply = FusedLoop.apply

    def capture(plan, *tensors):
        captured.update(plan=plan, tensors=tensors)
        return apply(plan, *tensors)

    monkeypatch.setattr(FusedLoop, "apply", capture)
    batch = toy_batch(4, seed=2)
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    model.decoder(batch.tgt_in, memory)
    plan = captured["plan"]
    assert {"drop1", "ctx_mask", "feed_mask", "w2_hh"} <= set(plan.names)
    weights = torch.randn_like(model.decoder(batch.tgt_in, memory)[0])

    def grads(run) -> list:
        leaves = [
            t.detach().clone().requires_grad_(t.is_floating_point()) for t in captured["tensors"]
        ]
        (run(plan, *leaves)[0] * weights).sum().backward()
        return [leaf.grad for leaf in leaves]

    reference = grads(lambda *a: FusedLoop.forward(_Ctx(), *a))
    fused = grads(apply)
    for name, mine, theirs in zip(plan.names, fused, reference, strict=True):
        if name in ("mask", "drop1", "ctx_mask", "feed_mask"):
            continue  # masks: constants
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10, msg=name)


def test_sixty_updates_train_the_same_with_and_without_fusion(tmp_path):
    """A tiny LSTM trained 60 updates from the same start, fused and not (dropout off: the two
    loops draw their masks differently): the same weights to float tolerance."""

    def model_fn(fused: bool):
        return lambda: tiny_model("lstm", "luong_general", conditional=True, fused=fused)

    plain, _ = run_fit(tmp_path / "plain", max_steps=60, model_fn=model_fn(False))
    fused, _ = run_fit(tmp_path / "fused", max_steps=60, model_fn=model_fn(True))
    assert fused.decoder.fused and not plain.decoder.fused
    for (name, a), b in zip(plain.state_dict().items(), fused.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("cell", ["gru", "lstm_cifg", "mingru"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong_general"])
def test_under_bf16_a_step_casts_its_weights_as_often_whatever_the_length(cell, attention):
    """One bf16 training step, forward and backward through the fused loop, casts the parameters
    (and views of them, such as the first layer's embedding and feed columns) as many times for
    8 target steps as for 24: once per autocast region, never per time step. Counted, not timed:
    the same on every CPU, native bf16 or not."""
    from nmt.core.runtime import OperatorCounter
    from nmt.data.batching import collate

    counts = {}
    for steps in (8, 24):
        torch.manual_seed(0)
        model = tiny_model(cell, attention, fused=True, dropout=0.3).train()
        src = [[5 + (i * 7 + j) % 30 for i in range(6 + j)] for j in range(4)]
        tgt = [[6 + (i * 5 + j) % 30 for i in range(steps - j)] for j in range(4)]
        batch = collate(src, tgt, range(4))
        with OperatorCounter(watch=list(model.parameters())) as ops:
            with bf16():
                out = sequence_loss(model, batch, 0.1)
            (out.loss / out.n_tokens).backward()
        counts[steps] = ops.watched_casts
    assert counts[8] == counts[24] > 0, counts
