"""A translation's gates token by token (nmt.decoding.gates): a row per source piece on the
encoder's side and per output piece on the decoder's, each cell's gates by name, and the values
those the decoding itself computed."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from nmt.core.search_options import SearchOptions
from nmt.data.batching import collate
from nmt.decoding.gates import GatesRefused, decoder_layers, recording, trace
from nmt.decoding.search import greedy
from nmt.model.cells import spec

SRC = [5, 9, 12, 7, 30, 6]


def greedy_options() -> SearchOptions:
    return SearchOptions(
        beam_size=1,
        alpha=0.0,
        min_len=0,
        n_best=1,
        coverage_penalty=0.0,
        no_repeat_ngram=0,
        max_len_a=1.5,
        max_len_b=4,
    )


def traced(model, tokens):
    labels = [f"s{i}" for i in range(len(SRC))] + ["</s>"]
    target = [f"t{i}" for i in range(len(tokens))] + ["</s>"]
    return trace(model, SRC, tokens, device=torch.device("cpu"), source=labels, target=target)


@pytest.mark.parametrize(
    ("cell", "overrides", "names"),
    [
        ("gru", {}, ["encoder layer 1, forward", "encoder layer 1, backward", "decoder layer 1"]),
        (
            "lstm",
            {"enc_layers": 2, "dec_layers": 2, "conditional": True},
            [
                "encoder layer 1, forward",
                "encoder layer 1, backward",
                "encoder layer 2, forward",
                "encoder layer 2, backward",
                "decoder layer 1",
                "decoder layer 2",
                "decoder, after attention",
            ],
        ),
        ("lstm_cifg", {"bidirectional": False}, ["encoder layer 1", "decoder layer 1"]),
        (
            "mingru",
            {},
            ["encoder layer 1, forward", "encoder layer 1, backward", "decoder layer 1"],
        ),
    ],
)
def test_a_row_per_token_and_the_cells_gates_by_name(cell, overrides, names):
    torch.manual_seed(0)
    model = tiny_model(cell, **overrides).eval()
    tokens = [11, 4, 19]
    got = traced(model, tokens)
    assert got.cell == cell and got.meanings == spec(cell).gates
    assert [layer.name for layer in got.layers] == names
    hidden = {"encoder": 16, "decoder": 32}
    for layer in got.layers:
        assert list(layer.gates) == list(spec(cell).gates)
        rows = len(SRC) + 1 if layer.side == "encoder" else len(tokens) + 1
        for values in layer.gates.values():
            assert values.shape == (rows, hidden[layer.side])
            assert ((values > 0) & (values < 1)).all()  # sigmoids, every token a real one
    as_json = got.as_dict()
    first = as_json["layers"][0]["gates"][next(iter(spec(cell).gates))]
    assert len(first["mean"]) == len(SRC) + 1 and len(first["units"][0]) == 16
    assert first["mean"][2] == pytest.approx(sum(first["units"][2]) / 16, abs=2e-3)


def test_a_cell_without_gates_has_no_layers_to_show():
    got = traced(tiny_model("tanh").eval(), [11, 4])
    assert got.layers == [] and got.meanings == {}


@pytest.mark.parametrize("cell", ["gru", "lstm", "minlstm"])
def test_the_decoders_gates_are_those_of_its_decoding(cell):
    """Greedy decoding, recorded as it steps, against the teacher-forced trace of its output:
    the same values at every step (the trace is not an approximation of what decoding did)."""
    torch.manual_seed(1)
    model = tiny_model(cell, conditional=True).eval()
    batch = collate([SRC], None, [0])
    with torch.no_grad(), recording([layer for _, layer in decoder_layers(model)]) as records:
        [hyp] = greedy(model, batch.src_ids, batch.src_lens, batch.src_mask, greedy_options())
    got = traced(model, hyp.tokens)
    decoder = [layer for layer in got.layers if layer.side == "decoder"]
    assert len(decoder) == len(records) == 2
    for layer, record in zip(decoder, records, strict=True):
        assert len(hyp.tokens) <= len(record) <= len(hyp.tokens) + 1  # (the limit: no </s>)
        for gate, values in layer.gates.items():
            stepped = torch.cat([step[gate] for step in record])
            torch.testing.assert_close(values[: len(record)], stepped, atol=1e-6, rtol=1e-5)


def test_only_a_pytorch_model_is_traced():
    with pytest.raises(GatesRefused, match="PyTorch model"):
        trace(object(), SRC, [4], device=torch.device("cpu"), source=[], target=[])


def test_the_translator_refuses_gates_it_cannot_trace_in_one_line():
    """onnxruntime's graphs output no gates, and an ensemble has no one set of them: a line
    that says what to do, from gates_refusal and from gates alike."""
    from nmt.decoding.translator import Translation, Translator
    from nmt.model.ensemble import Ensemble

    def translator(model, backend):
        return Translator(
            model=model,
            tokenizer=None,
            device=torch.device("cpu"),
            search=greedy_options(),
            max_sentences=8,
            max_tokens=400,
            max_src_len=50,
            precision=torch.float32,
            backend=backend,
        )

    result = Translation(texts=["x"], hyps=[], src_pieces=["▁a"], src_ids=[5])
    plain = translator(tiny_model("gru"), ("torch", "none"))
    assert plain.gates_refusal() is None and plain.gates(result) is None  # no hypothesis
    ort = translator(tiny_model("gru"), ("onnxruntime", "int8"))
    ensemble = translator(Ensemble([tiny_model("gru"), tiny_model("lstm")]), ("torch", "none"))
    for refused, says in ((ort, "backend=onnxruntime"), (ensemble, "an ensemble of 2 models")):
        line = refused.gates_refusal()
        assert says in line and "\n" not in line
        with pytest.raises(GatesRefused, match=says):
            refused.gates(result)
