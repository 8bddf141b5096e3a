"""Optimizers and learning-rate schedules: warm-up and decay, plateau halving, constant."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import metrics_rows, run_fit, tiny_model

from nmt.training.optim import Schedule, build_optimizer


def test_sgd_steps_against_the_gradient():
    model = tiny_model("tanh")
    opt = build_optimizer(model, optimizer="sgd", lr=0.5, weight_decay=0.0, betas=[0.9, 0.98])
    param = next(model.parameters())
    before = param.detach().clone()
    param.grad = torch.ones_like(param)
    opt.step()
    assert torch.allclose(param, before - 0.5)
    with pytest.raises(ValueError, match="expected adam, adamw or sgd"):
        build_optimizer(model, optimizer="rmsprop", lr=1.0, weight_decay=0.0, betas=[0.9, 0.9])


def test_warmup_decay_schedule():
    model = tiny_model("tanh")
    opt = build_optimizer(model, optimizer="adamw", lr=1.0, weight_decay=0.01, betas=[0.9, 0.98])
    s = Schedule(
        opt, schedule="warmup_decay", warmup_steps=4, decay_factor=0.5, patience=1, min_lr=0
    )
    lrs = []
    for step in range(1, 17):
        s.after_step(step)
        lrs.append(s.lr)
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[15] == pytest.approx(0.5)


def test_plateau_schedule_halves_the_rate_when_validation_stalls(tmp_path):
    _, result = run_fit(tmp_path, max_steps=16, validate=lambda m: {"bleu": 1.0})
    lrs = [float(row["lr"]) for row in metrics_rows(tmp_path)]
    # patience 0: the first validation sets the best, each later one (no gain) halves the rate.
    assert lrs == pytest.approx([3e-3, 1.5e-3, 7.5e-4, 3.75e-4])


def test_constant_schedule_keeps_the_rate(tmp_path):
    model = tiny_model("gru")
    opt = build_optimizer(model, optimizer="adam", lr=3e-3, weight_decay=0.0, betas=[0.9, 0.999])
    schedule = Schedule(
        opt, schedule="constant", warmup_steps=0, decay_factor=0.5, patience=0, min_lr=1e-5
    )
    _, result = run_fit(
        tmp_path,
        max_steps=12,
        validate=lambda m: {"bleu": 1.0},
        optimizer=opt,
        schedule=schedule,
        model=model,
    )
    assert {float(row["lr"]) for row in metrics_rows(tmp_path)} == {3e-3}


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_optimizer_is_pytorchs_fused_one_and_updates_as_the_plain_one(optimizer):
    """One kernel over every parameter (fused=True on the CPU), the same updates as PyTorch's
    per-tensor loop to rounding, over a few steps."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 5), torch.nn.Linear(6, 5)
    b.load_state_dict(a.state_dict())
    mine = build_optimizer(a, optimizer=optimizer, lr=0.01, weight_decay=0.01, betas=[0.9, 0.99])
    assert mine.defaults["fused"] is True
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    extra = {} if optimizer == "sgd" else {"betas": (0.9, 0.99)}
    plain = kinds[optimizer](b.parameters(), lr=0.01, weight_decay=0.01, foreach=False, **extra)
    for _ in range(5):
        x = torch.randn(4, 6)
        for model, opt in ((a, mine), (b, plain)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_decoding_after_an_update_uses_the_updated_weights(optimizer):
    # Decoding keeps a copy of the output weight while the weight's version stays the same;
    # PyTorch's fused optimizers write the weights without counting a version, so a copy made at
    # one validation was used at every later one (validation BLEU of a GRU at update 200: 4.98
    # with the copy from update 100, 7.14 with its own weights).
    model = tiny_model("gru").eval()
    hidden = torch.randn(3, model.decoder.combine.out_features)
    with torch.no_grad():
        before = model.decoder.logits(hidden)
    opt = build_optimizer(model, optimizer=optimizer, lr=0.1, weight_decay=0.0, betas=[0.9, 0.98])
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model.decoder.logits(hidden)
    with torch.enable_grad():
        reference = model.decoder.logits(hidden).detach()  # the product on the weight itself
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, reference)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_step_counts_as_a_write_to_every_parameter(optimizer):
    model = tiny_model("lstm")
    opt = build_optimizer(model, optimizer=optimizer, lr=0.1, weight_decay=0.0, betas=[0.9, 0.98])
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p._version for p in model.parameters()]
    opt.step()
    assert all(p._version > v for p, v in zip(model.parameters(), before, strict=True))


def test_training_never_imports_torchs_compiler():
    """PyTorch's optimizers import torch._dynamo (as long to import as torch) on their first
    call, only to mark their methods for torch.compile; ours call the same methods unmarked: a
    fresh process that steps, clears, saves and loads each of them never imports it, a step
    writes with gradients off as PyTorch's does, and the weights and state are a stock fused
    optimizer's to the bit."""
    code = """
import sys
import torch
from nmt.training.optim import build_optimizer, eager
kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
runs = {}
for name, kind in kinds.items():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 5), torch.nn.Linear(6, 5)
    b.load_state_dict(a.state_dict())
    xs = [torch.randn(4, 6) for _ in range(3)]
    mine = build_optimizer(a, optimizer=name, lr=0.01, weight_decay=0.01, betas=[0.9, 0.99])
    assert isinstance(mine, kind)
    written = []
    mine.register_step_post_hook(lambda opt, args, kwargs: written.append(1))
    for x in xs:
        mine.zero_grad()
        a(x).square().sum().backward()
        mine.step()
    again = build_optimizer(
        torch.nn.Linear(6, 5), optimizer=name, lr=0.5, weight_decay=0.0, betas=[0.5, 0.5]
    )
    again.load_state_dict(mine.state_dict())
    assert again.param_groups[0]["lr"] == 0.01 and len(written) == 3
    runs[name] = (kind, xs, a, b, mine)
# the per-tensor loop (not fused) writes the weights in place: with gradients off, as PyTorch's
weight = torch.nn.Parameter(torch.ones(3))
weight.grad = torch.ones(3)
eager(torch.optim.Adam)([weight], lr=0.1, foreach=True).step()
assert weight.grad_fn is None and weight.lt(1).all()
assert "torch._dynamo" not in sys.modules
for name, (kind, xs, a, b, mine) in runs.items():
    extra = {} if name == "sgd" else {"betas": (0.9, 0.99)}
    stock = kind(b.parameters(), lr=0.01, weight_decay=0.01, fused=True, **extra)
    for x in xs:
        stock.zero_grad()
        b(x).square().sum().backward()
        stock.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    for s, t in zip(mine.state.values(), stock.state.values(), strict=True):
        assert s.keys() == t.keys() and all(torch.equal(s[k], t[k]) for k in s), name
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
