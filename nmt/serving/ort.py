"""Decoding over onnxruntime: the graphs of ``nmt.serving.onnx_export`` behind the interface search uses
(``Decodable``: ``encode``, ``decoder.init_state``, ``decoder.step``), so greedy and beam search,
corpus batching, n-best and attention are the very code the PyTorch model runs through. Tensors
cross into onnxruntime and back as NumPy views of the same memory, never copied.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

from nmt.core.errors import UserError, require_extra
from nmt.model.decoder import DecoderState, StepOutput
from nmt.model.encoder import Memory
from nmt.serving.onnx_export import ENCODER, STEP, Signature

BACKENDS = ("torch", "onnxruntime")
ONNX_CACHE = "onnx-cache"  # a run directory's exported graphs, one directory per weights
QUANTIZE = ("none", "int8")


class BackendError(UserError):
    """A backend or quantization that does not exist, or does not apply to this model."""


@dataclass
class StartedMemory(Memory):
    """The encoder's memory with the decoder's start state, which the encoder graph computes."""

    start: DecoderState | None = None

    def select(self, index: Tensor) -> StartedMemory:
        base = super().select(index)
        values = {f.name: getattr(base, f.name) for f in fields(Memory)}
        return StartedMemory(**values, start=self.start.select(index))


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the quantized graphs' notes are not the user's
    # Search runs PyTorch operators between two steps on the same cores: onnxruntime's threads
    # spinning after a step took those cores from them (log_softmax and max ran 8x slower).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _array(t: Tensor):
    return t.detach().contiguous().numpy()


class OrtDecoder:
    """The decoder's one-step interface over the step graph."""

    def __init__(self, session, signature: Signature):
        self.session, self.signature = session, signature
        self.inputs = {i.name for i in session.get_inputs()}  # the exporter drops unused ones

    def init_state(self, memory: StartedMemory) -> DecoderState:
        return memory.start

    def step(self, prev_ids: Tensor, state: DecoderState, memory: Memory) -> StepOutput:
        given = {
            "prev_ids": prev_ids,
            "feed": state.feed,
            "outputs": memory.outputs,
            "mask": memory.mask,
            "summary": memory.summary,
            "keys": memory.keys,
        }
        given.update(zip(self.signature.state_names, state.rnn, strict=True))
        feed = {
            name: _array(given[name]) for name in self.signature.step_inputs if name in self.inputs
        }
        out = [torch.from_numpy(a) for a in self.session.run(None, feed)]
        n = self.signature.states
        new = DecoderState(rnn=tuple(out[1 : 1 + n]), feed=out[1 + n])
        attn = out[2 + n] if self.signature.attention else None
        return StepOutput(logits=out[0], state=new, attn=attn)


class OrtSeq2Seq:
    """A model decoding through onnxruntime sessions of the encoder and step graphs in ``graphs``
    (``quantize="int8"``: their int8 twins). Always in evaluation mode; CPU only."""

    training = False

    def __init__(
        self, graphs: dict[str, str], signature: Signature, *, quantize: str, threads: int
    ):
        require_extra("onnx", "backend=onnxruntime")
        if quantize not in QUANTIZE:
            raise BackendError(f"quantize={quantize}: expected one of {', '.join(QUANTIZE)}")
        suffix = ".int8" if quantize == "int8" else ""
        self.signature, self.quantize = signature, quantize
        self.encoder = _session(Path(graphs[ENCODER + suffix]), threads)
        self.decoder = OrtDecoder(_session(Path(graphs[STEP + suffix]), threads), signature)
        self.encoder_inputs = {i.name for i in self.encoder.get_inputs()}

    def encode(self, src_ids: Tensor, src_lens: Tensor, src_mask: Tensor) -> StartedMemory:
        given = {"src_ids": src_ids, "src_lens": src_lens, "src_mask": src_mask}
        feed = {k: _array(v) for k, v in given.items() if k in self.encoder_inputs}
        out = dict(
            zip(
                self.signature.encoder_outputs,
                (torch.from_numpy(a) for a in self.encoder.run(None, feed)),
                strict=True,
            )
        )
        names = self.signature.state_names
        start = DecoderState(rnn=tuple(out[f"start_{n}"] for n in names), feed=out["start_feed"])
        return StartedMemory(
            outputs=out["outputs"],
            mask=src_mask,
            summary=out["summary"],
            final=tuple(out[f"final_{n}"] for n in names),
            keys=out.get("keys"),
            start=start,
        )

    # What Translator and decode_corpus ask of a module.
    def eval(self) -> OrtSeq2Seq:
        return self

    def train(self, mode: bool = True) -> OrtSeq2Seq:
        if mode:
            raise BackendError("an onnxruntime model decodes only; train the PyTorch model")
        return self

    def to(self, device: torch.device | str) -> OrtSeq2Seq:
        if torch.device(device).type != "cpu":
            raise BackendError(f"backend=onnxruntime runs on the CPU here, not on {device}")
        return self


def check_backend(backend: str, quantize: str, *, ensemble: bool) -> None:
    """Refuse, before any model loads, a backend or quantization that does not exist or apply."""
    if backend not in ("auto", *BACKENDS):
        raise BackendError(f"backend={backend}: expected one of auto, {', '.join(BACKENDS)}")
    if quantize not in ("auto", *QUANTIZE):
        raise BackendError(f"quantize={quantize}: expected one of auto, {', '.join(QUANTIZE)}")
    if quantize == "int8" and backend == "torch":
        raise BackendError(
            f"quantize={quantize} decodes through onnxruntime's int8 kernels: add "
            "backend=onnxruntime (PyTorch's own quantized tensors are deprecated)"
        )
    if backend == "onnxruntime" and ensemble:
        raise BackendError("an ensemble decodes with backend=torch only")


def resolve_backend(
    backend: str,
    quantize: str,
    *,
    device: torch.device,
    ensemble: bool,
    refused: str | None = None,
) -> tuple[str, str]:
    """(backend, quantize) with ``auto`` decided: onnxruntime with int8 weights on every CPU, where
    it was measured fastest at equal BLEU both without native bf16 (AVX2: docs/serving.md) and
    with it (an AMX Xeon at 537e276, the default model, forced 20 steps: greedy 897 sentences/s
    against PyTorch's 728 in bf16 and 637 in fp32, beam 5 201 against 196 and 147; BLEU 37.89 and
    30.65 against bf16's 37.86 and 30.40); PyTorch on CUDA, for ensembles and for a model whose
    cell cannot be exported (``refused``: why, from ``nmt.serving.onnx_export.refusal``); int8 wherever
    onnxruntime decodes unless ``quantize`` says otherwise."""
    from nmt.core.errors import has_extra

    if backend == "onnxruntime" and refused:
        raise BackendError(refused)
    if backend == "auto":
        cpu = device.type == "cpu" and not refused and not ensemble
        backend = "onnxruntime" if cpu and has_extra("onnx") else "torch"
    if quantize == "auto":
        quantize = "int8" if backend == "onnxruntime" else "none"
    return backend, quantize


def model_digest(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (and the toolkit's version): the key of its graphs."""
    import hashlib

    from nmt import __version__

    digest = hashlib.sha256(__version__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def onnx_model(model, run_dir: Path, checkpoint: str, *, keep: bool, quantize: str):
    """(OrtSeq2Seq, a temporary directory to keep while it lives, or None) for the model of
    ``run_dir``: the graphs of an export directory (``onnx/``) when it has them; else, with
    ``keep``, those of its ``onnx-cache/<checkpoint>-<weights' hash>/`` (exported once, under a
    lock, written whole); else exported now into a temporary directory."""
    from tempfile import TemporaryDirectory

    from nmt.core.rundir import building_dir, cache_lock
    from nmt.serving.onnx_export import ONNX_DIR, export_graphs

    signature = Signature.of(model)
    graphs_dir, kept = run_dir / ONNX_DIR, None
    if not (graphs_dir / "encoder.onnx").is_file():
        if keep:
            graphs_dir = run_dir / ONNX_CACHE / f"{checkpoint}-{model_digest(model)}"
            with cache_lock(graphs_dir):
                if not (graphs_dir / "step.int8.onnx").is_file():
                    with building_dir(graphs_dir) as staged:
                        export_graphs(model, staged)
        else:
            kept = TemporaryDirectory(prefix="nmt-onnx-")
            graphs_dir = Path(kept.name)
            export_graphs(model, graphs_dir, int8=quantize == "int8")
    names = (ENCODER, STEP, f"{ENCODER}.int8", f"{STEP}.int8")
    graphs = {name: str(graphs_dir / f"{name}.onnx") for name in names}
    ort = OrtSeq2Seq(graphs, signature, quantize=quantize, threads=torch.get_num_threads())
    return ort, kept
