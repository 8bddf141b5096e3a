"""What each gate did on one translation, token by token: what the page at ``/`` draws and
``nmt-translate gates=DIR`` writes.

``trace`` runs a sentence and its chosen translation through the model's gate equations once more,
the translation teacher-forced: the encoder's layers stepped with their own weights
(``Recurrent.gate_steps``: fused kernels keep their gates to themselves), the decoder's layers
recorded at each step as decoding takes it (``CellLayer.recorder``). The inputs of every step are
those the decoding gave that hypothesis, so the values are the decoding's own (a test records a
greedy decoding and compares).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.data.batching import collate
from nmt.model.cells import CellLayer, spec
from nmt.model.seq2seq import Seq2Seq


@dataclass
class GateLayer:
    """One recurrent layer's gates on one sentence: ``gates[name]`` is ``[tokens, units]``, a row
    per source piece (and ``</s>``) on the encoder's side, per output piece (and ``</s>``) on the
    decoder's."""

    name: str  # "encoder layer 1, forward", "decoder layer 2", "decoder, after attention"
    side: str  # "encoder" or "decoder"
    gates: dict[str, Tensor]


@dataclass
class GateTrace:
    """A translation's gates, layer by layer (the encoder's first), with what each gate means."""

    cell: str
    meanings: dict[str, str]  # gate name -> its one-line meaning (nmt.model.cells)
    source: list[str]  # the encoder's rows: source pieces and </s>
    target: list[str]  # the decoder's rows: output pieces and </s>
    layers: list[GateLayer]

    def as_dict(self, digits: int = 3) -> dict:
        """Plain lists (JSON): for each layer and gate the per-token mean over units and the
        token x unit values, rounded to ``digits``."""

        def rounded(rows: list) -> list:
            return [[round(v, digits) for v in row] for row in rows]

        return {
            "cell": self.cell,
            "meanings": self.meanings,
            "source": self.source,
            "target": self.target,
            "layers": [
                {
                    "name": layer.name,
                    "side": layer.side,
                    "gates": {
                        name: {
                            "mean": [round(v, digits) for v in g.mean(-1).tolist()],
                            "units": rounded(g.tolist()),
                        }
                        for name, g in layer.gates.items()
                    },
                }
                for layer in self.layers
            ],
        }


class GatesRefused(Exception):
    """A model whose gates cannot be traced (onnxruntime's graphs, an ensemble): one line why."""


@contextlib.contextmanager
def recording(layers: Sequence[CellLayer]) -> Iterator[list[list[dict[str, Tensor]]]]:
    """Record every step of ``layers``: one list per layer, one ``{gate: [B, H]}`` per step."""
    records: list[list[dict[str, Tensor]]] = [[] for _ in layers]
    for layer, record in zip(layers, records, strict=True):
        layer.recorder = record.append
    try:
        yield records
    finally:
        for layer in layers:
            layer.recorder = None


def decoder_layers(model: Seq2Seq) -> list[tuple[str, CellLayer]]:
    """The decoder's recurrent layers, bottom to top, by name (a conditional decoder's second
    transition last: it reads the attention's context)."""
    layers = [(f"decoder layer {i + 1}", layer) for i, layer in enumerate(model.decoder.rnn.layers)]
    if model.decoder.second is not None:
        layers.append(("decoder, after attention", model.decoder.second))
    return layers


@torch.no_grad()
def trace(
    model: Seq2Seq,
    src: Sequence[int],
    tokens: Sequence[int],
    *,
    device: torch.device,
    source: list[str],
    target: list[str],
) -> GateTrace:
    """The gates of ``model`` translating ``src`` (pieces' ids, no specials) as ``tokens`` (the
    chosen hypothesis's ids, no specials); ``source``/``target``: the rows' labels, pieces with
    ``</s>`` (as the attention's)."""
    if not isinstance(model, Seq2Seq):
        raise GatesRefused(
            f"gates are traced in the PyTorch model; this one decodes as {type(model).__name__}"
        )
    model.to(device).eval()
    cell = model.encoder.rnn.cell
    batch = collate([list(src)], [list(tokens)], [0]).to(device)
    layers: list[GateLayer] = []
    encoder = model.encoder.rnn
    steps = encoder.gate_steps(model.encoder.embedding(batch.src_ids), batch.src_lens)
    for layer in range(encoder.layers):
        for d in range(encoder.dirs):
            gates = {g: t[0] for (n, e, g), t in steps.items() if (n, e) == (layer, d)}
            direction = (", backward" if d else ", forward") if encoder.dirs == 2 else ""
            if gates:
                layers.append(GateLayer(f"encoder layer {layer + 1}{direction}", "encoder", gates))
    named = decoder_layers(model)
    with recording([layer for _, layer in named]) as records:
        model.decoder(batch.tgt_in, model.encode(batch.src_ids, batch.src_lens, batch.src_mask))
    for (name, _), record in zip(named, records, strict=True):
        if spec(cell).gates:
            gates = {g: torch.cat([step[g] for step in record]) for g in spec(cell).gates}
            layers.append(GateLayer(name, "decoder", gates))
    for layer in layers:
        layer.gates = {g: t.float().cpu() for g, t in layer.gates.items()}
    return GateTrace(
        cell=cell,
        meanings=dict(spec(cell).gates),
        source=source,
        target=target,
        layers=layers,
    )
