from __future__ import annotations

import pytest
import torch
from conftest import bf16, relative_error, tiny_model, toy_batch, toy_pairs

from nmt.core.specials import BOS_ID, EOS_ID
from nmt.data.batching import collate
from nmt.model.attention import KINDS
from nmt.model.cells import CELLS
from nmt.model.loss import sequence_loss
from nmt.model.seq2seq import count_parameters

CASES = [(c, a) for c in CELLS for a in KINDS]


@pytest.mark.parametrize(("cell", "attention"), CASES)
def test_shapes_for_every_cell_and_attention(cell, attention):
    kw = {"dec_hidden": 32, "enc_hidden": 16} if attention != "luong_dot" else {"enc_hidden": 16}
    model = tiny_model(cell, attention, **kw).eval()
    batch = toy_batch()
    memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
    B, S = batch.src_ids.shape
    assert memory.outputs.shape == (B, S, 32) and memory.mask.shape == (B, S)
    hidden, attn = model.decoder(batch.tgt_in, memory)
    assert hidden.shape == (B, batch.tgt_in.shape[1], 32)
    state = model.decoder.init_state(memory)
    out = model.decoder.step(batch.tgt_in[:, 0], state, memory)
    assert out.logits.shape == (B, 40)
    if attention == "none":
        assert attn is None and out.attn is None
    else:
        assert attn.shape == (B, batch.tgt_in.shape[1], S)
        assert torch.all(out.attn[~batch.src_mask] == 0)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_padding_does_not_change_the_loss(cell, conditional):
    model = tiny_model(cell, conditional=conditional).eval()
    src, tgt = toy_pairs(6)
    together = sequence_loss(model, collate(src, tgt, range(6)), 0.1)
    alone = [
        sequence_loss(model, collate([s], [t], [0]), 0.1) for s, t in zip(src, tgt, strict=True)
    ]
    torch.testing.assert_close(together.loss, sum(a.loss for a in alone), atol=1e-4, rtol=1e-5)
    assert together.n_tokens == sum(len(t) + 1 for t in tgt)


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_overfits_20_pairs(cell):
    """Through the fused decoder loop, as training runs (autograd on the step for the rows
    without a hand-written derivative)."""
    torch.manual_seed(0)
    model = tiny_model(cell, dec_hidden=64, enc_hidden=32, emb_dim=32, fused=True)
    batch = toy_batch(20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        out = sequence_loss(model, batch, 0.0)
        loss = out.loss / out.n_tokens
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.05, f"{cell} did not overfit: {loss.item():.3f}"


def test_reference_size_and_tying():
    ref = tiny_model(
        "gru",
        emb_dim=256,
        enc_hidden=256,
        dec_hidden=512,
        vocab=8000,
        tie_output=False,
        tie_src_tgt=False,
    )
    assert 12.0e6 < count_parameters(ref) < 12.4e6  # the classic Bahdanau setup, ~12.2M
    tied = tiny_model("gru")
    assert tied.encoder.embedding is tied.decoder.embedding
    separate = tiny_model("gru", joint_vocab=False, src_vocab_size=30, tgt_vocab_size=50)
    assert separate.encoder.embedding is not separate.decoder.embedding
    assert separate.encoder.embedding.num_embeddings == 30
    assert separate.decoder.embedding.num_embeddings == 50


SIZES = [  # (emb_dim, enc_hidden, dec_hidden, layers, vocab)
    (16, 16, 32, 1, 40),
    (64, 64, 128, 2, 1000),
    (256, 256, 512, 1, 8000),
    (128, 192, 256, 2, 4000),
]


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong_general"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_parameter_matching_puts_every_cell_within_2_percent(sizes, attention):
    emb, enc, dec, layers, vocab = sizes
    arch = dict(emb_dim=emb, enc_hidden=enc, dec_hidden=dec, enc_layers=layers, vocab=vocab)
    arch["dec_layers"] = layers
    with torch.device("meta"):  # counts only: no memory, no initialisation time
        check_matching(arch, attention)


def check_matching(arch: dict, attention: str) -> None:
    enc, dec = arch["enc_hidden"], arch["dec_hidden"]
    target = count_parameters(tiny_model("gru", attention, **arch))
    counts = {}
    for cell in CELLS:
        unmatched = tiny_model(cell, attention, **arch)
        matched = tiny_model(cell, attention, **arch, match_params="gru")
        counts[cell] = count_parameters(matched)
        assert abs(counts[cell] - target) <= 0.02 * target, (cell, counts[cell], target)
        resized = matched.hidden_sizes != {"enc_hidden": enc, "dec_hidden": dec}
        # Only cells of another size than the GRU are resized, and toward the GRU's count.
        assert resized == (count_parameters(unmatched) != target)
        if count_parameters(unmatched) > target:
            assert matched.hidden_sizes["dec_hidden"] < dec
        elif count_parameters(unmatched) < target:
            assert matched.hidden_sizes["dec_hidden"] > dec
    # the gated cells shrink and the tanh RNN grows, each to the GRU's count
    assert count_parameters(tiny_model("lstm", attention, **arch)) > target
    assert count_parameters(tiny_model("tanh", attention, **arch)) < target


@pytest.mark.parametrize("attention", ["none", "bahdanau"])
@pytest.mark.parametrize("sizes", [(64, 64, 128), (128, 128, 256), (256, 256, 512)])
def test_parameter_matching_puts_every_row_within_0_2_percent_at_the_comparisons_sizes(
    sizes, attention
):
    """The cell comparison's small size, a middle one and the default model, 8000 pieces: every
    row of the cell table matched to the GRU within 0.2 % (the minimal cells, with no recurrent
    weights, grow the most)."""
    emb, enc, dec = sizes
    arch = dict(emb_dim=emb, enc_hidden=enc, dec_hidden=dec, vocab=8000)
    with torch.device("meta"):
        target = count_parameters(tiny_model("gru", attention, **arch))
        for cell in CELLS:
            matched = count_parameters(tiny_model(cell, attention, **arch, match_params="gru"))
            assert abs(matched - target) <= 0.002 * target, (cell, matched, target)


def test_parameter_matching_keeps_the_size_ratio_and_any_reference():
    arch = dict(emb_dim=64, enc_hidden=64, dec_hidden=128, vocab=500)
    lstm = tiny_model("tanh", **arch, match_params="lstm")  # real weights: it trains
    target = count_parameters(tiny_model("lstm", **arch))
    assert abs(count_parameters(lstm) - target) <= 0.02 * target
    sizes = lstm.hidden_sizes
    assert abs(sizes["enc_hidden"] / sizes["dec_hidden"] - 0.5) < 0.01
    with pytest.raises(ValueError, match="nope"):
        tiny_model("tanh", **arch, match_params="nope")


# --------------------------------------------------------------------------------------------
# bf16 autocast (the CUDA path, and CPUs with bf16 units): the two custom autograd functions
# against the plain PyTorch expressions under the same autocast.


def test_additive_attention_under_bf16_autocast():
    from nmt.model.attention import AdditiveScores

    torch.manual_seed(0)
    keys = torch.randn(3, 7, 16, requires_grad=True)
    query = torch.randn(3, 16, requires_grad=True)
    v = torch.randn(16, requires_grad=True)
    proj = torch.nn.Linear(16, 16)
    with bf16():
        k, q = proj(keys), proj(query)  # bf16, as the model's projections give them
        mine = AdditiveScores.apply(k, q.unsqueeze(1), v).squeeze(1)
        grads = torch.autograd.grad(mine.float().square().sum(), (keys, query, v))
    with bf16():
        k, q = proj(keys), proj(query)
        plain = torch.tanh(k + q.unsqueeze(1)) @ v
        expected = torch.autograd.grad(plain.float().square().sum(), (keys, query, v))
    assert mine.dtype == plain.dtype
    assert relative_error(mine.float(), plain.float()) < 1e-2
    for a, e in zip(grads, expected, strict=True):
        assert a.dtype == torch.float32
        assert relative_error(a, e) < 2e-2  # bf16 carries 8 bits of mantissa


@pytest.mark.parametrize("cell", CELLS)
def test_training_step_under_bf16_autocast(cell):
    """Loss and gradients of a whole step in bf16 stay finite and near fp32 (every cell)."""
    torch.manual_seed(0)
    model = tiny_model(cell, dropout=0.0, emb_dropout=0.0)
    src, tgt = toy_pairs(16)
    batch = collate(src, tgt, range(16))
    out32 = sequence_loss(model, batch, 0.1)
    (out32.loss / out32.n_tokens).backward()
    grads32 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with bf16():
        out16 = sequence_loss(model, batch, 0.1)
        memory = model.encode(batch.src_ids, batch.src_lens, batch.src_mask)
        assert model.decoder(batch.tgt_in, memory)[0].dtype == torch.bfloat16  # autocast is on
    (out16.loss / out16.n_tokens).backward()
    assert out16.loss.dtype == torch.float32
    torch.testing.assert_close(out16.loss, out32.loss, rtol=2e-2, atol=0)
    for p in model.parameters():
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
    grad16 = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert relative_error(grad16, torch.cat([g.flatten() for g in grads32])) < 5e-2


@pytest.mark.parametrize("cell", CELLS)
def test_decoding_under_bf16_autocast(cell):
    """Greedy and beam search under bf16 autocast (every cell): the attention softmax and the
    search's log-probabilities stay fp32, and both searches agree with their fp32 selves on
    the scores of what they found."""
    from nmt.decoding.search import SearchOptions, beam_search, greedy

    def options(beam_size: int, alpha: float) -> SearchOptions:
        return SearchOptions(
            beam_size=beam_size,
            alpha=alpha,
            max_len_a=1.5,
            max_len_b=5,
            min_len=0,
            n_best=1,
            coverage_penalty=0.0,
            no_repeat_ngram=0,
        )

    torch.manual_seed(0)
    model = tiny_model(cell).eval()
    batch = toy_batch(6)
    args = (batch.src_ids, batch.src_lens, batch.src_mask)
    memory = model.encode(*args)
    with bf16():
        out = model.decoder.step(batch.tgt_in[:, 0], model.decoder.init_state(memory), memory)
        assert out.logits.dtype == torch.bfloat16 and out.attn.dtype == torch.float32
        torch.testing.assert_close(out.attn.sum(-1), torch.ones(6))
        found16 = greedy(model, *args, options(1, 0.0))
        beams16 = beam_search(model, *args, options(3, 0.6))
    scores16 = torch.tensor([h.score for h in found16] + [b[0].score for b in beams16])
    assert torch.isfinite(scores16).all()

    # What bf16 found, its decoder steps rescored along the same tokens in bf16 and in fp32 over
    # one fp32 memory: near each other (an untrained model's near-ties may send the two
    # precisions' searches down different paths, so their own outputs are not compared).
    def rescored(i: int, tokens: list[int]) -> float:
        one = memory.select(torch.tensor([i]))
        state, prev, total = model.decoder.init_state(one), torch.tensor([BOS_ID]), 0.0
        for token in [*tokens, EOS_ID]:
            out = model.decoder.step(prev, state, one)
            total += float(torch.log_softmax(out.logits.float(), -1)[0, token])
            state, prev = out.state, torch.tensor([token])
        return total

    for i, hyp in enumerate([*found16, *(b[0] for b in beams16)]):
        with bf16():
            sum16 = rescored(i % 6, hyp.tokens)
        sum32 = rescored(i % 6, hyp.tokens)
        assert abs(sum16 - sum32) < 5e-2 * abs(sum32) + 1e-2


@pytest.mark.parametrize(
    ("name", "device", "flags", "expected"),
    [
        ("auto", "cpu", {"avx2", "fma"}, torch.float32),  # emulated bf16: slower than fp32
        ("auto", "cpu", {"avx2", "avx512f", "avx512_bf16"}, torch.bfloat16),
        ("auto", "cpu", {"avx2", "amx_bf16", "amx_tile"}, torch.bfloat16),
        ("fp32", "cpu", {"amx_bf16"}, torch.float32),
        ("bf16", "cpu", set(), torch.bfloat16),
    ],
)
def test_precision_auto_follows_the_hardware(name, device, flags, expected, monkeypatch):
    from nmt.core import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert runtime.pick_precision(name, torch.device(device)) == expected
    # Training on a CPU: auto is fp32 whatever the CPU (bf16 measured no faster there); a
    # precision named is kept.
    trained = runtime.pick_precision(name, torch.device(device), training=True)
    assert trained == (torch.float32 if name == "auto" else expected)


def test_precision_names_are_checked():
    from nmt.core.runtime import pick_precision

    with pytest.raises(ValueError, match="precision='fp16': expected one of auto, fp32, bf16"):
        pick_precision("fp16", torch.device("cpu"))


def test_precision_auto_on_this_machine_reads_its_cpu_flags():
    """The real /proc/cpuinfo: bf16 exactly when the CPU lists AMX or AVX-512 BF16."""
    from nmt.core.runtime import cpu_flags, pick_precision

    native = bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    expected = torch.bfloat16 if native else torch.float32
    assert pick_precision("auto", torch.device("cpu")) == expected


@pytest.mark.parametrize(("env", "expected"), [("3", 3), ("1", 1), ("0", None), ("many", None)])
def test_threads_follow_omp_num_threads_else_every_usable_core(env, expected, monkeypatch):
    """train.threads=null (and translate, eval): OMP_NUM_THREADS where it names a count, else
    the cores this process may run on; an explicit count wins over both."""
    import os

    from nmt.core.runtime import pick_device

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    try:
        pick_device("cpu")
        assert torch.get_num_threads() == (expected or len(os.sched_getaffinity(0)))
        pick_device("cpu", threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
