from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nmt.model.cells import (
    CELLS,
    CellLayer,
    gate_names,
    select,
    sequence_mask,
    spec,
    state_size,
    unwrap,
    wrap,
)
from nmt.model.rnn import Recurrent, StackedCell

torch.manual_seed(0)


@pytest.mark.parametrize("cell", ["gru", "lstm", "tanh"])
def test_gate_equations_match_torch(cell):
    """The reference step functions give torch.nn.GRU / LSTM / RNN's outputs with its weights."""
    fused = {"gru": nn.GRU, "lstm": nn.LSTM, "tanh": nn.RNN}[cell](5, 7, batch_first=True)
    layer = CellLayer(cell, 5, 7)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, name).copy_(getattr(fused, f"{name}_l0"))
    x = torch.randn(3, 6, 5)
    expected, final = fused(x)
    state = tuple(torch.zeros(3, 7) for _ in range(state_size(cell)))
    gx = layer.project(x)
    outs = []
    for t in range(6):
        state = layer.step(gx[:, t], state)
        outs.append(state[0])
    torch.testing.assert_close(torch.stack(outs, 1), expected, atol=1e-6, rtol=1e-5)
    for mine, theirs in zip(state, wrap(final), strict=True):
        torch.testing.assert_close(mine, theirs[0], atol=1e-6, rtol=1e-5)


def test_gru_cho_follows_the_paper():
    """r = σ(W_r x + U_r h), z = σ(W_z x + U_z h), h~ = tanh(W x + U (r*h)), h = z*h + (1-z)*h~."""
    layer = CellLayer("gru_cho", 4, 6)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x, h = torch.randn(2, 4), torch.randn(2, 6)
    (W_r, W_z, W), (U_r, U_z, U) = layer.weight_ih.split(6), layer.weight_hh.split(6)
    (a_r, a_z, a), (b_r, b_z, b) = layer.bias_ih.split(6), layer.bias_hh.split(6)
    r = torch.sigmoid(x @ W_r.T + a_r + h @ U_r.T + b_r)
    z = torch.sigmoid(x @ W_z.T + a_z + h @ U_z.T + b_z)
    h_tilde = torch.tanh(x @ W.T + a + (r * h) @ U.T + b)
    expected = z * h + (1 - z) * h_tilde
    (got,) = layer.step(layer.project(x), (h,))
    torch.testing.assert_close(got, expected)


def test_lstm_forget_bias_starts_at_one():
    layer = CellLayer("lstm", 3, 4)
    assert torch.equal(layer.bias_ih[4:8], torch.ones(4))
    rnn = Recurrent(
        cell="lstm",
        input_size=3,
        hidden_size=4,
        layers=1,
        bidirectional=True,
        dropout=0,
        var_dropout=0.0,
    )
    assert torch.equal(rnn.rnn.bias_ih_l0[4:8] + rnn.rnn.bias_hh_l0[4:8], torch.ones(4))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_padding_leaves_encoding_unchanged(cell, layers):
    rnn = Recurrent(
        cell=cell,
        input_size=5,
        hidden_size=6,
        layers=layers,
        bidirectional=True,
        dropout=0.0,
        var_dropout=0.0,
    ).eval()
    x = torch.randn(3, 9, 5)
    lens = torch.tensor([4, 9, 6])
    out, final = rnn(x, lens)
    alone, alone_final = rnn(x[:1, :4], lens[:1])
    torch.testing.assert_close(out[:1, :4], alone, atol=1e-6, rtol=1e-5)
    assert torch.count_nonzero(out[0, 4:]) == 0
    assert len(final) == state_size(cell)
    for t, a in zip(final, alone_final, strict=True):
        assert t.shape == (layers * 2, 3, 6)
        torch.testing.assert_close(t[:, :1], a, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_stacked_cell_state_shapes_and_select(cell):
    stack = StackedCell(cell=cell, input_size=5, hidden_size=4, layers=2, dropout=0.0)
    state = tuple(torch.zeros(2, 3, 4) for _ in range(state_size(cell)))
    new = stack.step(stack.first.project(torch.randn(3, 5)), state)
    assert [t.shape for t in new] == [(2, 3, 4)] * state_size(cell)
    picked = select(new, torch.tensor([2, 2, 0]))
    assert torch.equal(picked[0][:, 0], new[0][:, 2]) and picked[0].shape == (2, 3, 4)


def test_wrap_unwrap_roundtrip():
    h, c = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    assert unwrap(wrap(h)) is h
    assert unwrap(wrap((h, c))) == (h, c)


def test_unknown_cell_is_one_clear_error():
    with pytest.raises(
        ValueError,
        match=r"model.cell='gruu': expected one of tanh, gru, gru_cho, gru_noreset, lstm",
    ):
        CellLayer("gruu", 2, 2)


def test_a_sequence_mask_is_inverted_dropout_per_sequence():
    torch.manual_seed(0)
    mask = sequence_mask(2000, 50, 0.3, torch.zeros(1))
    assert mask.shape == (2000, 50)
    values = mask.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert float((mask == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert sequence_mask(3, 4, 0.0, torch.zeros(1)) is None


# --------------------------------------------------------------------------------------------
# Every row against its equations, written here again from the papers in float64.


def _reference(cell: str, layer: CellLayer, x, state):
    """The row's equations, each block's pre-activation W x + b_ih (+ U h + b_hh where the row
    has a recurrent block of that name)."""
    size = layer.hidden_size
    row = spec(cell)
    h = state[0]
    W = dict(zip(row.blocks, layer.weight_ih.split(size), strict=True))
    a = dict(zip(row.blocks, layer.bias_ih.split(size), strict=True))
    U = dict(zip(row.recurrent_blocks, layer.weight_hh.split(size), strict=False))
    b = dict(zip(row.recurrent_blocks, layer.bias_hh.split(size), strict=False))

    def wx(k):
        return x @ W[k].T + a[k]

    def uh(k, v=h):
        return v @ U[k].T + b[k]

    sig, tanh = torch.sigmoid, torch.tanh
    if cell == "tanh":
        return (tanh(wx("hidden") + uh("hidden")),)
    if cell in ("gru", "gru_cho", "gru_noreset"):
        z = sig(wx("update") + uh("update"))
        if cell == "gru":
            n = tanh(wx("new") + sig(wx("reset") + uh("reset")) * uh("new"))
        elif cell == "gru_cho":
            n = tanh(wx("new") + uh("new", sig(wx("reset") + uh("reset")) * h))
        else:
            n = tanh(wx("new") + uh("new"))
        return ((1 - z) * n + z * h,)
    if cell.startswith("lstm"):
        c = state[1]
        f = sig(wx("forget") + uh("forget"))
        i = 1 - f if "cifg" in cell else sig(wx("input") + uh("input"))
        c2 = f * c + i * tanh(wx("cell") + uh("cell"))
        o = 1.0 if cell.endswith("nog") else sig(wx("output") + uh("output"))
        return (o * tanh(c2), c2)
    if cell == "mingru":  # Feng et al. (2024), Algorithm 1 (sequential mode)
        z = sig(wx("update"))
        return ((1 - z) * h + z * wx("new"),)
    if cell == "minlstm":  # Feng et al. (2024), Algorithm 3
        f, i = sig(wx("forget")), sig(wx("input"))
        return ((f / (f + i)) * h + (i / (f + i)) * wx("new"),)
    raise AssertionError(f"no reference equations for {cell}: write them here")


@pytest.mark.parametrize("cell", CELLS)
def test_every_rows_step_is_its_equations(cell):
    torch.manual_seed(0)
    layer = CellLayer(cell, 5, 4).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(3, 5, dtype=torch.float64)
    state = tuple(torch.randn(3, 4, dtype=torch.float64) for _ in range(state_size(cell)))
    got = layer.step(layer.project(x), state)
    for mine, theirs in zip(got, _reference(cell, layer, x, state), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_every_row_names_and_explains_its_gates(cell, monkeypatch):
    """Gates are what the step saved under their names, each a share in (0, 1) with a meaning;
    the recorder (gate statistics) sees exactly them."""
    row = spec(cell)
    layer = CellLayer(cell, 5, 4)
    seen = []
    layer.recorder = seen.append
    state = tuple(torch.zeros(3, 4) for _ in range(row.states))
    layer.step(layer.project(torch.randn(3, 5)), state)
    assert set(seen[0]) == set(row.gates)
    for name, value in seen[0].items():
        assert row.gates[name] and value.shape == (3, 4)
        assert bool(((value > 0) & (value < 1)).all()), name
    assert set(row.gates) <= set(gate_names())
    assert row.cites, f"{cell}: cite where its equations come from"
    if "forget" in row.blocks:  # every LSTM, minLSTM too, starts remembering
        one = row.blocks.index("forget")
        assert torch.equal(layer.bias_ih[4 * one : 4 * one + 4], torch.ones(4))


@pytest.mark.parametrize("cell", [c for c in CELLS if spec(c).scan])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_scan_is_the_stepped_loop_with_padding_exact(cell, bidirectional):
    """minGRU and minLSTM: the encoder's parallel scan gives the stepped loop's outputs and final
    states, sentence by sentence whatever the padding beside it, for lengths that are and are
    not powers of two; a graph's fixed reach (scan_positions) changes nothing."""
    torch.manual_seed(0)
    rnn = Recurrent(
        cell=cell,
        input_size=5,
        hidden_size=6,
        layers=2,
        bidirectional=bidirectional,
        dropout=0.0,
        var_dropout=0.0,
    ).eval()
    for length in (1, 7, 8, 13):
        x = torch.randn(4, length, 5)
        lens = torch.tensor([length, max(1, length - 3), 1, max(1, length // 2)])
        scanned, final = rnn(x, lens)
        stepped, stepped_final = rnn._loop(x, lens)
        torch.testing.assert_close(scanned, stepped, atol=1e-6, rtol=1e-5)
        for a, b in zip(final, stepped_final, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        rnn.scan_positions = 64
        torch.testing.assert_close(rnn(x, lens)[0], scanned, atol=1e-6, rtol=1e-5)
        rnn.scan_positions = None


# --------------------------------------------------------------------------------------------
# Adding a cell as a user would (docs/architecture.md, "Where to add"): only its row.


def _janet_step(gx, state, w_hh, b_hh, hm):
    """JANET (van der Westhuizen & Lasenby 2018): an LSTM with a forget gate only,
    h' = f ⊙ h + (1 − f) ⊙ tanh(W_g x + U_g h)."""
    (h,) = state
    x_f, x_g = gx.chunk(2, dim=-1)
    h_f, h_g = torch.nn.functional.linear(hm, w_hh, b_hh).chunk(2, dim=-1)
    f = torch.sigmoid(x_f + h_f)
    return (f * h + (1 - f) * torch.tanh(x_g + h_g),), {"forget": f}


def _fpool(gx):
    """QRNN's f-pooling with a window of one (Bradbury et al. 2017): h' = f ⊙ h + (1 − f) ⊙ z,
    f and z from the input alone: a linear recurrence, scanned."""
    x_f, x_z = gx.chunk(2, dim=-1)
    f = torch.sigmoid(x_f)
    return f, (1 - f) * torch.tanh(x_z), {"forget": f}


def _rows():
    from nmt.model.cells import CellSpec, linear_step

    return {
        "janet": CellSpec(
            blocks=("forget", "cell"),
            step=_janet_step,
            gates={"forget": "share of the state kept"},
            bias_one="forget",
            cites="van der Westhuizen & Lasenby (2018)",
        ),
        "fpool": CellSpec(
            blocks=("forget", "candidate"),
            step=linear_step(_fpool),
            gates={"forget": "share of the state kept"},
            recurrent=(),
            scan=_fpool,
            cites="Bradbury et al. (2017)",
        ),
    }


@pytest.mark.parametrize("cell", ["janet", "fpool"])
def test_a_cell_added_at_run_time_trains_fused_decodes_and_exports_or_refuses(
    cell, monkeypatch, tmp_path
):
    """Only a row: the fused loop trains it (autograd on its step: the same gradients as the
    plain loop's), a few updates lower the loss, search decodes it, and export either writes
    graphs that decode as PyTorch does (fpool: the scan) or refuses in one line (janet)."""
    from conftest import tiny_model, toy_batch

    from nmt.decoding.search import SearchOptions, beam_search, greedy
    from nmt.model import cells
    from nmt.model.loss import sequence_loss
    from nmt.serving.onnx_export import ExportError, Signature, export_graphs, refusal

    monkeypatch.setitem(cells.SPECS, cell, _rows()[cell])
    torch.manual_seed(0)
    model = tiny_model(cell, conditional=True, dec_layers=2, fused=True).double()
    batch = toy_batch(6, seed=1)
    grads = {}
    for fused in (True, False):
        model.decoder.fused = fused
        model.zero_grad()
        torch.manual_seed(3)
        sequence_loss(model, batch, 0.1).loss.backward()
        grads[fused] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-9, atol=1e-10, msg=name)

    model = model.float()
    model.decoder.fused = True
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = sequence_loss(model, batch, 0.0)
        loss = out.loss / out.n_tokens
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]

    model.eval()
    args = (batch.src_ids, batch.src_lens, batch.src_mask)
    options = SearchOptions(
        beam_size=3, alpha=0.0, max_len_a=1.0, max_len_b=4, min_len=1, n_best=1,
        coverage_penalty=0.0, no_repeat_ngram=0,
    )  # fmt: skip
    found = greedy(model, *args, options)
    beams = beam_search(model, *args, options)
    assert len(found) == len(beams) == 6
    for hyp in [*found, *(b[0] for b in beams)]:
        assert hyp.tokens and math.isfinite(hyp.score)

    if cell == "janet":
        assert "model.cell=janet cannot be exported" in refusal(model)
        with pytest.raises(ExportError, match="decode it with backend=torch"):
            export_graphs(model, tmp_path)
        return
    from nmt.serving.ort import OrtSeq2Seq

    graphs = export_graphs(model, tmp_path, int8=False)
    ort = OrtSeq2Seq(graphs, Signature.of(model), quantize="none", threads=1)
    mine, theirs = model.encode(*args), ort.encode(*args)
    torch.testing.assert_close(theirs.outputs, mine.outputs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(theirs.final[0], mine.final[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_every_row_has_its_presets(cell):
    """make train model=<cell> composes: conf/model/<cell>.yaml and conf/optim/<cell>.yaml."""
    from nmt.core.compose import compose

    cfg = compose("train", [f"model={cell}"])
    assert cfg.model.cell == cell and cfg.optim.name == cell


def test_docs_list_every_row_with_its_paths():
    """docs/cells.md has a line per row of the table, its derivative path and whether its
    encoder exports as the row says."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "cells.md").read_text()
    lines = {
        parts[1].strip("` "): [p.strip() for p in parts[1:-1]]
        for line in page.splitlines()
        if line.startswith("| `") and len(parts := line.split("|")) == 10
    }
    assert list(lines) == list(CELLS)
    for cell, columns in lines.items():
        row = spec(cell)
        assert columns[4] == row.training_path, cell
        assert (columns[6] == "refused") == (row.export is None), cell
        assert columns[5] == ("scan" if row.scan else "stepped") or row.kernel, cell


def test_the_pairs_docs_explain_are_the_reports_differences():
    """docs/cells.md's table of pairs and conf/report.yaml's differences name the same pairs."""
    import re
    from pathlib import Path

    from nmt.core.compose import compose

    text = (Path(__file__).resolve().parents[1] / "docs" / "cells.md").read_text(encoding="utf-8")
    section = text.split("What each pair of rows isolates")[1].split("\n\n")[1]
    documented = set()
    for line in section.splitlines()[2:]:
        documented |= set(re.findall(r"`(\w+)` – `(\w+)`", line.split("|")[1]))
    configured = {(d.a, d.b) for d in compose("report").differences}
    assert documented == configured and len(configured) == 8
