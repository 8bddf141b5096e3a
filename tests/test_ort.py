"""Decoding over onnxruntime: the same search over the exported graphs gives PyTorch's output for
every cell, attention and the conditional decoder, greedy and beam; what does not apply is refused."""

from __future__ import annotations

import pytest
import torch
from conftest import forced, greedy_alike, tiny_model, toy_pairs

from nmt.core.search_options import SearchOptions
from nmt.core.specials import EOS_ID
from nmt.decoding.decode import decode_corpus
from nmt.model.attention import KINDS
from nmt.model.cells import CELLS, spec
from nmt.serving.onnx_export import Signature, export_graphs
from nmt.serving.ort import BackendError, OrtSeq2Seq, check_backend, resolve_backend

CPU = torch.device("cpu")


def options(beam: int) -> SearchOptions:
    return SearchOptions(
        beam_size=beam,
        alpha=0.6,
        max_len_a=1.5,
        max_len_b=5,
        min_len=0,
        n_best=beam,
        coverage_penalty=0.0,
        no_repeat_ngram=0,
    )


# Every cell with every attention, with and without the conditional decoder.
# Every cell that exports, each attention for the cells with an ONNX op of their own (the step
# graph is the same traced code for all cells: the encoder's strategy is what differs).
CASES = [
    (c, a, conditional)
    for c in CELLS
    if spec(c).export
    for a in (KINDS if spec(c).export == "kernel" else ("bahdanau",))
    for conditional in (False, True)
]


def assert_same_function(model, ort, src: list[int], hyp) -> None:
    """Both backends, fed this hypothesis's tokens, give the same log-probabilities and attention,
    and those add up to the log-probability the search reported."""
    (mine, mine_attn), (theirs, theirs_attn) = (forced(m, src, hyp.tokens) for m in (model, ort))
    torch.testing.assert_close(theirs, mine, atol=1e-4, rtol=1e-4)
    if mine_attn is not None:
        torch.testing.assert_close(theirs_attn, mine_attn, atol=1e-5, rtol=1e-4)
    path = torch.tensor([*hyp.tokens, EOS_ID])[:, None]
    sums = [float(lprobs.gather(1, path).sum()) for lprobs in (mine, theirs)]
    assert max(abs(s - hyp.log_prob) for s in sums) < 1e-3  # each step within 1e-4 above


@pytest.mark.parametrize("cell,attention,conditional", CASES)
def test_onnxruntime_decodes_as_pytorch(cell, attention, conditional, tmp_path):
    """Two layers each side, a bidirectional encoder, batches of sentences of mixed lengths.

    Every hypothesis either backend found is rescored by both, step by step: same numbers. Greedy
    outputs are the same tokens up to the first step where the two best nearly tie (TIE), and the
    same scores and attention where the whole output is decided by clear margins; beam outputs
    differ only where a kernel's last bits could decide (then both sets are checked as above)."""
    torch.manual_seed(1)
    model = tiny_model(cell, attention, conditional=conditional, enc_layers=2, dec_layers=2)
    model.eval()
    graphs = export_graphs(model, tmp_path, int8=False)
    ort = OrtSeq2Seq(graphs, Signature.of(model), quantize="none", threads=1)
    src = toy_pairs(9, seed=4)[0]
    decided = 0
    for beam in (1, 3):
        found = [
            decode_corpus(m, src, options(beam), device=CPU, max_sentences=4, max_tokens=None)
            for m in (model, ort)
        ]
        for sentence, mine, theirs in zip(src, *found, strict=True):
            assert len(mine) == len(theirs) == beam
            for hyp in (*mine, *theirs):
                assert_same_function(model, ort, sentence, hyp)
            same = [a.tokens for a in mine] == [b.tokens for b in theirs]
            if beam == 1:
                greedy_alike(model, sentence, mine[0].tokens, theirs[0].tokens)
            if same:
                decided += 1
                for a, b in zip(mine, theirs, strict=True):
                    assert a.score == pytest.approx(b.score, abs=1e-4)
                    if a.attn is not None:
                        torch.testing.assert_close(a.attn, b.attn, atol=1e-5, rtol=1e-4)
    assert decided >= len(src)  # most outputs are decided by clear margins: compared whole


def test_int8_decodes_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    model = tiny_model("gru", "bahdanau").eval()
    graphs = export_graphs(model, tmp_path)
    signature = Signature.of(model)
    int8 = OrtSeq2Seq(graphs, signature, quantize="int8", threads=1)
    batch = toy_pairs(4)[0]
    from nmt.data.batching import collate

    b = collate(batch, None, range(4))
    with torch.no_grad():
        memory = model.encode(b.src_ids, b.src_lens, b.src_mask)
    quantized = int8.encode(b.src_ids, b.src_lens, b.src_mask)
    error = (quantized.outputs - memory.outputs).abs().max() / memory.outputs.abs().max()
    assert 0 < error < 0.05  # int8 weights: not the fp32 values, but close to them


def test_what_does_not_apply_is_refused(tmp_path):
    with pytest.raises(
        BackendError, match="backend=tensorrt: expected one of auto, torch, onnxruntime"
    ):
        check_backend("tensorrt", "none", ensemble=False)
    with pytest.raises(BackendError, match="quantize=int8 .* add backend=onnxruntime"):
        check_backend("torch", "int8", ensemble=False)
    with pytest.raises(BackendError, match="quantize=int4: expected one of auto, none, int8"):
        check_backend("onnxruntime", "int4", ensemble=False)
    with pytest.raises(BackendError, match="ensemble decodes with backend=torch only"):
        check_backend("onnxruntime", "none", ensemble=True)
    model = tiny_model("tanh", "none")
    ort = OrtSeq2Seq(
        export_graphs(model, tmp_path, int8=False), Signature.of(model), quantize="none", threads=1
    )
    assert ort.to("cpu") is ort and ort.eval() is ort
    with pytest.raises(BackendError, match="runs on the CPU here, not on cuda"):
        ort.to("cuda")
    with pytest.raises(BackendError, match="decodes only"):
        ort.train()


@pytest.mark.parametrize("cell", [c for c in CELLS if not spec(c).export])
def test_a_cell_without_a_graph_is_refused_in_one_line_and_auto_decodes_with_torch(cell):
    from nmt.serving.onnx_export import ExportError, refusal

    model = tiny_model(cell, "bahdanau")
    why = refusal(model)
    assert why and "\n" not in why and f"model.cell={cell}" in why and "backend=torch" in why
    with pytest.raises(ExportError, match=f"model.cell={cell} cannot be exported"):
        export_graphs(model, "unused")
    auto = resolve_backend("auto", "auto", device=CPU, ensemble=False, refused=why)
    assert auto == ("torch", "none")
    with pytest.raises(BackendError, match=f"model.cell={cell} cannot be exported"):
        resolve_backend("onnxruntime", "auto", device=CPU, ensemble=False, refused=why)


def test_backend_auto_is_onnxruntime_int8_on_every_cpu_and_pytorch_elsewhere():
    """Measured fastest at equal BLEU on an AVX2 CPU and on one with AMX: whatever the CPU's bf16."""
    assert resolve_backend("auto", "auto", device=CPU, ensemble=False) == ("onnxruntime", "int8")
    assert resolve_backend("auto", "none", device=CPU, ensemble=False) == ("onnxruntime", "none")
    assert resolve_backend("auto", "auto", device=CPU, ensemble=True) == ("torch", "none")
    cuda = torch.device("cuda")
    assert resolve_backend("auto", "auto", device=cuda, ensemble=False) == ("torch", "none")
    assert resolve_backend("torch", "auto", device=CPU, ensemble=False) == ("torch", "none")
