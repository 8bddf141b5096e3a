"""A model as two ONNX graphs: the encoder (with the decoder's start state) and the decoder's one
step, every batch and length axis dynamic, for ``nmt.serving.ort``'s search over onnxruntime sessions.

The graphs are traced from the PyTorch model itself (``torch.onnx.export``'s TorchScript path:
fixed-size loops only, here the layers), so they compute what ``Seq2Seq.encode``, ``init_state``
and ``Decoder.step`` compute (the decoder's step is the cell's own step, whatever the cell). The
encoder's recurrence becomes what its row of the cell table says (``CellSpec.export``): ONNX's own
RNN, GRU and LSTM ops, which carry the sequence lengths, for cells with a PyTorch kernel; a
``twin``, the kernel computing the cell's equations from rewritten weights (``gru_cho`` is ONNX's
GRU with ``linear_before_reset=0``, set in the graph after the trace; ``gru_noreset`` and
``lstm_nog`` hold a gate open), or the parallel scan's graph for linear recurrences (minGRU,
minLSTM), traced over ``SCAN_POSITIONS`` so that it serves any length up to it. A cell with none
cannot be exported: :func:`refusal` says so in one line, and ``backend=auto`` decodes it with
PyTorch. int8 graphs are the same graphs with their matrix products quantized by onnxruntime's
dynamic quantizer (int8 weights, activations quantized per call).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from nmt.core.errors import UserError, require_extra
from nmt.model.cells import spec
from nmt.model.seq2seq import Seq2Seq

ENCODER, STEP = "encoder", "step"
ONNX_DIR = "onnx"  # the graphs' directory inside a directory nmt-export format=onnx wrote
OPSET = 17
# The exported scan's reach: its graph holds log2 of this many rounds, whatever the input's length
# (translation truncates sources at max_src_len, 250 by default).
SCAN_POSITIONS = 4096


class ExportError(UserError):
    """A model whose encoder has no ONNX graph (its cell's row says how it would have one)."""


@dataclass(frozen=True)
class Signature:
    """The names of the graphs' inputs and outputs, from the model's shape: the cell's state
    tensors (the cell row's names: h, or h and c) and whether attention has keys (none has no
    keys and no weights)."""

    state_names: tuple[str, ...]
    keys: bool
    attention: bool

    @classmethod
    def of(cls, model: Seq2Seq) -> Signature:
        reads = model.decoder.attention.row.reads_memory
        return cls(spec(model.encoder.rnn.cell).state, reads, reads)

    @property
    def states(self) -> int:
        return len(self.state_names)

    @property
    def encoder_outputs(self) -> list[str]:
        finals = [f"final_{n}" for n in self.state_names]
        starts = [f"start_{n}" for n in self.state_names]
        return ["outputs", "summary", *finals, *starts, "start_feed"] + ["keys"] * self.keys

    @property
    def step_inputs(self) -> list[str]:
        memory = ["outputs", "mask", "summary"] + ["keys"] * self.keys
        return ["prev_ids", *self.state_names, "feed", *memory]

    @property
    def step_outputs(self) -> list[str]:
        return ["logits", *[f"{n}_out" for n in self.state_names], "feed_out"] + [
            "attn"
        ] * self.attention


class _Encoder(nn.Module):
    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor):
        memory = self.model.encode(src_ids, src_lens, src_mask)
        start = self.model.decoder.init_state(memory)
        keys = () if memory.keys is None else (memory.keys,)
        return (memory.outputs, memory.summary, *memory.final, *start.rnn, start.feed, *keys)


class _Step(nn.Module):
    def __init__(self, model: Seq2Seq, signature: Signature):
        super().__init__()
        self.decoder, self.signature = model.decoder, signature

    def forward(self, prev_ids: Tensor, *rest: Tensor):
        from nmt.model.decoder import DecoderState
        from nmt.model.encoder import Memory

        n = self.signature.states
        state = DecoderState(rnn=tuple(rest[:n]), feed=rest[n])
        outputs, mask, summary = rest[n + 1 : n + 4]
        keys = rest[n + 4] if self.signature.keys else None
        memory = Memory(outputs=outputs, mask=mask, summary=summary, final=(), keys=keys)
        out = self.decoder.step(prev_ids, state, memory)
        attn = (out.attn,) if self.signature.attention else ()
        return (out.logits, *out.state.rnn, out.state.feed, *attn)


def refusal(model: Seq2Seq) -> str | None:
    """Why this model's encoder has no ONNX graph, in one line; None when it has one."""
    cell = model.encoder.rnn.cell
    if spec(cell).export is not None:
        return None
    return (
        f"model.cell={cell} cannot be exported to ONNX: no ONNX recurrent op computes its "
        "equations and it is not a linear recurrence to scan; decode it with backend=torch"
    )


def _prepare_encoder(model: Seq2Seq) -> dict[str, int]:
    """Make the copy's encoder traceable as its row says; the attributes to set on its
    recurrent ops in the graph afterwards."""
    rnn = model.encoder.rnn
    row = spec(rnn.cell)
    if row.export is None:
        raise ExportError(refusal(model))
    if row.export == "scan":
        rnn.scan_positions = SCAN_POSITIONS
    if row.export != "twin":
        return {}
    first = rnn.loop[0]
    twin = row.twin.kernel(
        first.weight_ih.shape[1],
        rnn.hidden_size,
        num_layers=rnn.layers,
        batch_first=True,
        bidirectional=rnn.dirs == 2,
    )
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    with torch.no_grad():
        for i, weights in enumerate(rnn.layer_weights()):
            layer, d = divmod(i, rnn.dirs)
            for name, value in zip(names, row.twin.weights(*weights, rnn.hidden_size), strict=True):
                getattr(twin, f"{name}_l{layer}{'_reverse' if d else ''}").copy_(value)
    rnn.rnn = twin
    return row.twin.attributes


def _set_attributes(path: Path, attributes: dict[str, int]) -> None:
    """Set integer attributes on the graph's recurrent ops (ONNX GRU's linear_before_reset)."""
    import onnx

    graph = onnx.load(str(path))
    for node in graph.graph.node:
        if node.op_type in ("RNN", "GRU", "LSTM"):
            for attribute in node.attribute:
                if attribute.name in attributes:
                    attribute.i = attributes[attribute.name]
    onnx.save(graph, str(path))


def _samples(model: Seq2Seq, signature: Signature) -> tuple[tuple, tuple]:
    """Inputs to trace with: 3 sentences of different lengths, and 2 queries per sentence (a
    beam's rows over one memory), so no size is 1 and no two sizes are equal by chance."""
    vocab = model.encoder.embedding.num_embeddings
    lens = torch.tensor([5, 4, 2])
    mask = torch.arange(5)[None, :] < lens[:, None]
    src = torch.randint(4, vocab, (3, 5)) * mask
    with torch.no_grad():
        memory = model.encode(src, lens, mask)
        start = model.decoder.init_state(memory).select(torch.tensor([0, 0, 1, 1, 2, 2]))
    keys = (memory.keys,) if signature.keys else ()
    step = (
        torch.randint(4, vocab, (6,)),
        *start.rnn,
        start.feed,
        memory.outputs,
        mask,
        memory.summary,
        *keys,
    )
    return (src, lens, mask), step


@contextlib.contextmanager
def _quiet():
    """The exporter's and the quantizer's notes to themselves (C++ shape-inference warnings on
    file descriptor 2, Python warnings, the quantizer's root-logger advice) kept from the user;
    errors still raise."""
    import logging

    sys.stderr.flush()
    saved = os.dup(2)
    level = logging.getLogger().level
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger().setLevel(logging.ERROR)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        logging.getLogger().setLevel(level)


def export_graphs(model: Seq2Seq, out: str | Path, *, int8: bool = True) -> dict[str, str]:
    """Write ``encoder.onnx`` and ``step.onnx`` (and their ``.int8.onnx`` twins) into ``out``;
    the file of each graph by name (encoder, step, encoder.int8, step.int8)."""
    require_extra("onnx", "ONNX export")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if refusal(model) is not None:
        raise ExportError(refusal(model))
    model = copy.deepcopy(model).float().eval()
    signature = Signature.of(model)
    attributes = _prepare_encoder(model)
    enc_in, step_in = _samples(model, signature)
    files = {ENCODER: out / "encoder.onnx", STEP: out / "step.onnx"}
    sentences, rows, source = {0: "sentences"}, {0: "rows"}, {0: "sentences", 1: "source"}
    state_axes = {1: "rows"}
    encoder_axes = {"src_ids": source, "src_lens": sentences, "src_mask": source}
    for name in signature.encoder_outputs:
        if name.startswith("start_") and name != "start_feed":
            encoder_axes[name] = {1: "sentences"}
        else:
            encoder_axes[name] = source if name in ("outputs", "keys") else sentences
    step_axes = {"prev_ids": rows, "feed": rows, "feed_out": rows, "logits": rows}
    step_axes.update({"outputs": source, "mask": source, "summary": sentences, "keys": source})
    for name in signature.state_names:
        step_axes[name] = step_axes[f"{name}_out"] = state_axes
    if signature.attention:
        step_axes["attn"] = {0: "rows", 1: "source"}
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            _Encoder(model),
            enc_in,
            str(files[ENCODER]),
            dynamo=False,
            opset_version=OPSET,
            input_names=["src_ids", "src_lens", "src_mask"],
            output_names=signature.encoder_outputs,
            dynamic_axes=encoder_axes,
        )
        torch.onnx.export(
            _Step(model, signature),
            step_in,
            str(files[STEP]),
            dynamo=False,
            opset_version=OPSET,
            input_names=signature.step_inputs,
            output_names=signature.step_outputs,
            dynamic_axes=step_axes,
        )
    if attributes:
        _set_attributes(files[ENCODER], attributes)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for name in (ENCODER, STEP):
            target = out / f"{name}.int8.onnx"
            with _quiet():
                quantize_dynamic(str(files[name]), str(target), weight_type=QuantType.QInt8)
            files[f"{name}.int8"] = target
    return {name: str(path) for name, path in files.items()}
