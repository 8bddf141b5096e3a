from __future__ import annotations

import pytest
import torch

from nmt.model.attention import KINDS, Attention


@pytest.mark.parametrize("kind", KINDS)
def test_padded_positions_get_exactly_zero_weight(kind):
    attn = Attention(kind=kind, query_size=8, memory_size=8, attn_size=6)
    values = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    summary = torch.randn(3, 8)
    context, weights = attn(torch.randn(3, 8), attn.keys(values), values, mask, summary)
    assert context.shape == (3, 8)
    if kind == "none":
        assert weights is None and torch.equal(context, summary)
        return
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    torch.testing.assert_close(context[2], values[2, 0])  # one real position: all weight on it


def test_padding_values_do_not_leak():
    attn = Attention(kind="bahdanau", query_size=4, memory_size=4, attn_size=4)
    values = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    noisy = values.clone()
    noisy[0, 2] = 1e6
    a, _ = attn(torch.ones(1, 4), attn.keys(values), values, mask, values[:, 0])
    b, _ = attn(torch.ones(1, 4), attn.keys(noisy), noisy, mask, values[:, 0])
    torch.testing.assert_close(a, b)


def test_bad_kind_and_dot_sizes():
    with pytest.raises(ValueError, match="model.attention='additive'"):
        Attention(kind="additive", query_size=4, memory_size=4, attn_size=4)
    with pytest.raises(ValueError, match="luong_dot needs decoder size 4 == encoder output size 6"):
        Attention(kind="luong_dot", query_size=4, memory_size=6, attn_size=4)


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general"])
def test_weights_are_the_softmax_of_the_published_scores(kind):
    """Bahdanau: v^T tanh(W_k k + W_q q + b); Luong dot: q^T k; Luong general: q^T W k
    (unscaled), each softmaxed over the real positions; the context is their weighted sum."""
    torch.manual_seed(0)
    attn = Attention(kind=kind, query_size=6, memory_size=6, attn_size=5)
    values, query = torch.randn(2, 4, 6), torch.randn(2, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    context, weights = attn(query, attn.keys(values), values, mask, values[:, 0])
    for b in range(2):
        real = int(mask[b].sum())
        k = values[b, :real]
        if kind == "bahdanau":
            q = attn.query_proj(query[b])
            scores = torch.tanh(attn.key_proj(k) + q) @ attn.v.weight.squeeze(0)
        elif kind == "luong_dot":
            scores = k @ query[b]
        else:
            scores = (k @ attn.key_proj.weight.T) @ query[b]
        expected = torch.softmax(scores, dim=0)
        torch.testing.assert_close(weights[b, :real], expected)
        torch.testing.assert_close(context[b], expected @ k)


@pytest.mark.parametrize("block", [None, 200])
@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_additive_scores_and_gradients_equal_the_plain_formula(dtype, group, block, monkeypatch):
    """v^T tanh(k + q) computed through the sigmoid (and recomputed in backward), in one block
    of sentences or several, gives the plain formula's values, not only up to the constant a
    softmax would forgive, and its gradients."""
    from nmt.model import attention
    from nmt.model.attention import AdditiveScores

    if block:  # 200 floats: one sentence per block at group 3, two at group 1
        monkeypatch.setattr(attention, "ENERGY_BLOCK", block)
        assert len(attention._blocks(torch.empty(3, 7, 16), torch.empty(3, group, 16))) > 1

    torch.manual_seed(0)
    keys = torch.randn(3, 7, 16, dtype=dtype, requires_grad=True)
    query = torch.randn(3, group, 16, dtype=dtype, requires_grad=True)  # group queries a sentence
    v = torch.randn(16, dtype=dtype, requires_grad=True)
    upstream = torch.randn(3, group, 7, dtype=dtype)
    mine = AdditiveScores.apply(keys, query, v)
    plain = torch.tanh(keys.unsqueeze(1) + query.unsqueeze(2)) @ v
    torch.testing.assert_close(mine, plain)
    for a, e in zip(
        torch.autograd.grad(mine, (keys, query, v), upstream),
        torch.autograd.grad(plain, (keys, query, v), upstream),
        strict=True,
    ):
        torch.testing.assert_close(a, e)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(AdditiveScores.apply, (keys, query, v))


def test_float32_additive_scores_ignore_bf16_autocast():
    """The fused decoder loop scores in float32 under bf16 autocast: the sigmoid form's products
    (2 v^T s - sum(v), and the gradient's sums) cancel, so autocast must not take them to bf16."""
    from conftest import bf16

    from nmt.model.attention import AdditiveScores

    torch.manual_seed(0)
    keys = torch.randn(3, 7, 16, requires_grad=True)
    query = torch.randn(3, 1, 16, requires_grad=True)
    v = torch.randn(16, requires_grad=True)
    upstream = torch.randn(3, 1, 7)
    plain = AdditiveScores.apply(keys, query, v)
    expected = torch.autograd.grad(plain, (keys, query, v), upstream)
    with bf16():
        scores = AdditiveScores.apply(keys, query, v)
        grads = torch.autograd.grad(scores, (keys, query, v), upstream)
    torch.testing.assert_close(scores, plain)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_queries_read_their_sentences_memory(kind):
    """K queries per sentence (beam search) against one copy of the memory give what K copies
    of the memory give: row i*K + j reads sentence i."""
    torch.manual_seed(0)
    attn = Attention(kind=kind, query_size=6, memory_size=6, attn_size=5)
    values, summary, query = torch.randn(2, 4, 6), torch.randn(2, 6), torch.randn(2 * 3, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    context, weights = attn(query, attn.keys(values), values, mask, summary)
    rep = torch.arange(2).repeat_interleave(3)
    values, mask, summary = values[rep], mask[rep], summary[rep]
    expected, expected_weights = attn(query, attn.keys(values), values, mask, summary)
    torch.testing.assert_close(context, expected)
    if kind != "none":
        torch.testing.assert_close(weights, expected_weights)


def test_no_module_outside_the_table_names_a_kind():
    """The attention table is the one place that names kinds: no string of a kind (but "none",
    which names much else) anywhere else in nmt/, and no comparison of an attention with one."""
    import ast
    from pathlib import Path

    import nmt

    found = []
    for path in sorted(Path(nmt.__file__).parent.rglob("*.py")):
        if path.name == "attention.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in KINDS and node.value != "none":
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                named = any(isinstance(s, ast.Constant) and s.value in KINDS for s in sides)
                if named and "attention" in ast.unparse(node):
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_a_kind_added_from_its_row_alone_trains_fused_as_with_autograd(monkeypatch):
    """A new row (the scaled dot product, q^T k / sqrt(d)) in the table at run time: the model
    builds with it, and the fused loop's gradients equal autograd's in float64."""
    import math

    from conftest import tiny_model, toy_batch
    from test_fused import gradients

    from nmt.model import attention

    def scaled(x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return x / math.sqrt(keys.shape[-1])

    def query_grad(w, g_e, kept, q, keys, acc, weight):
        return attention._dot_query_grad(w, scaled(g_e, keys), kept, q, keys, acc, weight)

    row = attention.AttentionKind(
        name="luong_scaled",
        score="q^T k_s / sqrt(d)",
        style=(0, (1, 1)),
        reads_memory=True,
        build=attention._luong_dot_build,
        keys=lambda module, outputs: outputs,
        scores=lambda module, query, keys: scaled(attention._dot_scores(module, query, keys), keys),
        step_scores=lambda w, q, keys: (
            scaled(attention._dot_step_scores(w, q, keys)[0], keys),
            None,
        ),
        query_grad=query_grad,
        keys_grad=attention._dot_keys_grad,
    )
    monkeypatch.setitem(attention._BY_NAME, row.name, row)
    torch.manual_seed(0)
    model = tiny_model("gru", "luong_scaled", var_dropout=0.3).double().train()
    assert model.decoder.attention.row is row
    batch = toy_batch(5, seed=3)
    plain_loss, plain = gradients(model, batch, seed=7)
    model.decoder.fused = True
    fused_loss, fused = gradients(model, batch, seed=7)
    assert fused_loss == pytest.approx(plain_loss, rel=1e-12)
    for name, grad in plain.items():
        torch.testing.assert_close(fused[name], grad, rtol=1e-9, atol=1e-10, msg=name)
