"""The training loss: label-smoothed cross-entropy over a batch's real target tokens, with the
output layer fused into it so the [tokens, vocabulary] logits are never held whole."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nmt.data.batching import Batch
from nmt.model.seq2seq import Seq2Seq


@dataclass
class LossOutput:
    """Sums over the batch's real target tokens (divide by n_tokens for means)."""

    loss: Tensor  # label-smoothed, for the gradient
    nll: Tensor  # plain negative log-likelihood, for perplexity
    n_tokens: int


def sequence_loss(
    model: Seq2Seq, batch: Batch, label_smoothing: float, forward: nn.Module | None = None
) -> LossOutput:
    """Label-smoothed cross-entropy over real tokens; the output layer skips padding.

    ``forward``: what runs the model's forward pass, when not the model itself (the
    DistributedDataParallel wrapper that holds it)."""
    hidden = (forward or model)(batch.src_ids, batch.src_lens, batch.src_mask, batch.tgt_in)
    x, weight, bias = model.decoder.output_layer(hidden[batch.tgt_mask])  # [N, E], N real tokens
    del hidden  # [B, T, H] with padding: not kept beside the loss's blocks (nothing saved it)
    target = batch.tgt_out[batch.tgt_mask]
    loss, nll = LinearSmoothedCrossEntropy.apply(x, weight, bias, target, label_smoothing)
    return LossOutput(loss=loss, nll=nll, n_tokens=int(target.numel()))


class LinearSmoothedCrossEntropy(torch.autograd.Function):
    """Summed label-smoothed cross-entropy of ``x @ weight.T + bias``, never holding [N, V].

    The output layer and the loss are the largest tensors of a training step ([N, V] logits and
    their gradient: 200 MB each for a 128-sentence batch of 50-token sentences at V = 8k). This
    runs them in chunks of rows and, since the loss is the last operation, computes the
    gradients in the same pass: backward only scales them. Values equal
    ``F.cross_entropy(logits, target, label_smoothing=eps, reduction="sum")``, the smoothing mass
    spread over all V classes.
    forward(x [N, E], weight [V, E], bias [V], target [N] int64, eps) -> (loss, nll) scalars
    """

    CHUNK = 1024

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, target: Tensor, eps: float):
        needs_grad = any(ctx.needs_input_grad[:3])
        acc = torch.promote_types(weight.dtype, torch.float32)  # fp32, or fp64 in gradcheck
        loss = x.new_zeros((), dtype=acc)
        nll_sum = x.new_zeros((), dtype=acc)
        grad_x = torch.empty_like(x) if needs_grad else None
        grad_w = torch.zeros_like(weight, dtype=acc) if needs_grad else None
        grad_b = torch.zeros_like(bias, dtype=acc) if needs_grad else None
        vocab = weight.shape[0]
        for start in range(0, x.shape[0], LinearSmoothedCrossEntropy.CHUNK):
            xs = x[start : start + LinearSmoothedCrossEntropy.CHUNK]
            ts = target[start : start + LinearSmoothedCrossEntropy.CHUNK]
            logits = torch.addmm(bias, xs, weight.t()).to(acc)  # [n, V]
            picked = logits.gather(1, ts.unsqueeze(1)).squeeze(1)
            mean = logits.mean(dim=-1)
            # log-sum-exp with the exponentials in the logits' own memory (torch.logsumexp
            # would allocate a second [n, V]): they become the softmax, the gradient's base.
            top = logits.amax(dim=-1, keepdim=True)
            total = logits.sub_(top).exp_().sum(dim=-1)
            lse = total.log() + top.squeeze(1)
            nll = lse - picked
            loss += ((1.0 - eps) * nll + eps * (lse - mean)).sum()
            nll_sum += nll.sum()
            if needs_grad:  # d loss / d logits = softmax - smoothed one-hot, in place
                grad = logits.div_(total.unsqueeze(1)).sub_(eps / vocab)
                grad[torch.arange(len(ts), device=grad.device), ts] -= 1.0 - eps
                grad_x[start : start + len(ts)] = (grad.to(weight.dtype) @ weight).to(x.dtype)
                grad_w.addmm_(grad.t(), xs.to(acc))
                grad_b += grad.sum(dim=0)
        # Saved as tensors, not as attributes of ctx: autograd frees them once backward has run
        # (unless the graph is retained), where ctx would keep them through the whole backward
        # pass of the model (29 MiB of the reference model's output layer).
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*(g for g in (grad_x, grad_w, grad_b) if g is not None))
        ctx.mark_non_differentiable(nll_sum)
        return loss, nll_sum

    @staticmethod
    def backward(ctx, grad_loss: Tensor | None, _grad_nll: Tensor | None):
        if grad_loss is None or not ctx.saved_tensors:  # the loss unused, or no input needs grad
            return None, None, None, None, None
        grad_x, grad_w, grad_b = (g * grad_loss for g in ctx.saved_tensors)
        return grad_x, grad_w, grad_b, None, None
