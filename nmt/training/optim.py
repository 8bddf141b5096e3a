"""The optimizer and the learning-rate schedule of the ``optim`` config group."""

from __future__ import annotations

import functools
import inspect
import math

import torch
from torch import nn
from torch.autograd.graph import increment_version


def build_optimizer(
    model: nn.Module, *, optimizer: str, lr: float, weight_decay: float, betas: list[float]
) -> torch.optim.Optimizer:
    """adam or adamw (with ``betas``), or sgd: plain stochastic gradient descent, the update of
    the classic recipes (Luong et al. 2015: rate 1.0, halved when validation stalls), and one
    whose step shows the gradient's scale, which Adam's normalisation hides."""
    # PyTorch's fused implementations: one kernel over every parameter instead of a handful of
    # operations per tensor (Adam's step for the reference GRU's 12.3M parameters: 8.9 ms fused
    # against 29.1 ms, 2 threads of an AVX2 EPYC; the same updates to rounding).
    fused = _fusable(model)
    kinds = {"adam": eager(torch.optim.Adam), "adamw": eager(torch.optim.AdamW)}
    if optimizer == "sgd":
        opt = eager(torch.optim.SGD)(
            model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused
        )
    elif optimizer in kinds:
        opt = kinds[optimizer](
            model.parameters(), lr=lr, weight_decay=weight_decay, betas=tuple(betas), fused=fused
        )
    else:
        raise ValueError(f"optim.optimizer={optimizer!r}: expected adam, adamw or sgd")
    opt.register_step_post_hook(_count_the_write)
    return opt


# The methods PyTorch marks for torch.compile to leave untraced: each mark imports torch's
# compiler (torch._dynamo) on its first call, and step's on every call.
_MARKED = ("step", "zero_grad", "add_param_group", "state_dict", "load_state_dict")


@functools.cache
def eager(kind: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``kind`` with its methods called straight rather than through their marks for
    torch.compile. Nothing here compiles an optimizer, and the marks would import torch's
    compiler in every process that trains, which takes about as long as importing torch itself
    (tests/test_optim.py checks that a process that trains never imports it). The same functions
    run, with step's gradient mode set as PyTorch's mark sets it (on for a differentiable
    optimizer only); the state, its dictionary and the hooks are the optimizer's own."""
    body = {name: inspect.unwrap(getattr(kind, name)) for name in _MARKED}
    unmarked_step = body["step"]

    @functools.wraps(unmarked_step)
    def step(self, *args, **kwargs):
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return unmarked_step(self, *args, **kwargs)

    body["step"] = step
    return type(kind.__name__, (kind,), {**body, "__module__": __name__})


def _count_the_write(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Count the step as a write to every parameter, as PyTorch's in-place operations do. The
    fused kernels update the weights without moving their version counter, and what keeps a copy
    of a weight until its version moves (the decoder's output-layer copy for decoding) would go
    on using the weights of before the step."""
    increment_version([p for group in optimizer.param_groups for p in group["params"]])


def _fusable(model: nn.Module) -> bool | None:
    """True where PyTorch has a fused optimizer kernel for every parameter (floating point, on
    the CPU or CUDA); None (its own choice) elsewhere."""
    params = list(model.parameters())
    ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if params and ok else None


class Schedule:
    """constant | warmup_decay (linear warmup, then inverse square root) | plateau (on the
    validation metric). ``after_step`` runs every update, ``after_validation`` every validation."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        schedule: str,
        warmup_steps: int,
        decay_factor: float,
        patience: int,
        min_lr: float,
    ):
        if schedule not in ("constant", "warmup_decay", "plateau"):
            raise ValueError(
                f"optim.schedule={schedule!r}: expected constant, warmup_decay or plateau"
            )
        self.kind, self.optimizer = schedule, optimizer
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=decay_factor, patience=patience, min_lr=min_lr
        )
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.decay_factor = decay_factor
        self.warmup = max(1, warmup_steps)

    def after_step(self, step: int) -> None:
        if self.kind != "warmup_decay":
            return
        scale = min(step / self.warmup, math.sqrt(self.warmup / max(step, 1)))
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * scale

    def after_validation(self, score: float) -> None:
        if self.kind == "plateau":
            self.plateau.step(score)

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state["plateau"])

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def decays(self) -> int:
        """How many times the plateau schedule has cut the rate so far (read off the rate itself,
        so it holds after a resume: the optimizer's state carries the rate)."""
        if self.kind != "plateau" or not 0 < self.decay_factor < 1 or self.lr <= 0:
            return 0
        return round(math.log(self.lr / self.base[0]) / math.log(self.decay_factor))
