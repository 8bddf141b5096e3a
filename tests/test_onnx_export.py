"""The model as ONNX graphs: named inputs and outputs from the model's shape, every batch and
length axis dynamic, Cho's GRU as ONNX's own GRU, int8 twins with integer matrix products."""

from __future__ import annotations

import onnx
import pytest
from conftest import tiny_model

from nmt.serving.onnx_export import Signature, export_graphs


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def lstm_graphs(tmp_path_factory):
    model = tiny_model("lstm", "bahdanau", enc_layers=2, dec_layers=2)
    return model, export_graphs(model, tmp_path_factory.mktemp("lstm"))


def test_inputs_and_outputs_are_named_with_their_axes_dynamic(lstm_graphs):
    model, graphs = lstm_graphs
    signature = Signature.of(model)
    encoder, step = onnx.load(graphs["encoder"]).graph, onnx.load(graphs["step"]).graph
    assert [o.name for o in encoder.output] == signature.encoder_outputs
    assert [o.name for o in step.output] == signature.step_outputs
    assert {i.name: dims(i) for i in encoder.input}["src_ids"] == ["sentences", "source"]
    shapes = {i.name: dims(i) for i in step.input}
    assert shapes["prev_ids"] == ["rows"] and shapes["c"] == [2, "rows", 32]
    assert shapes["keys"][:2] == ["sentences", "source"]
    assert dims(step.output[-1]) == ["rows", "source"]  # attention weights
    assert "LSTM" in {n.op_type for n in encoder.node}  # the recurrence is ONNX's own op


def test_int8_graphs_multiply_in_integers(lstm_graphs):
    _, graphs = lstm_graphs
    ops = {n.op_type for n in onnx.load(graphs["step.int8"]).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} & ops, ops
    fp32 = {n.op_type for n in onnx.load(graphs["step"]).graph.node}
    assert not {"MatMulInteger", "DynamicQuantizeLinear"} & fp32


def test_cho_gru_is_onnx_gru_with_the_reset_before_the_product(tmp_path):
    graphs = export_graphs(tiny_model("gru_cho", "none"), tmp_path, int8=False)
    grus = [n for n in onnx.load(graphs["encoder"]).graph.node if n.op_type == "GRU"]
    assert grus and all(
        a.i == 0 for n in grus for a in n.attribute if a.name == "linear_before_reset"
    )
    assert set(graphs) == {"encoder", "step"}
    plain = export_graphs(tiny_model("gru", "none"), tmp_path / "gru", int8=False)
    (gru,) = [n for n in onnx.load(plain["encoder"]).graph.node if n.op_type == "GRU"]
    assert [a.i for a in gru.attribute if a.name == "linear_before_reset"] == [1]
