"""Targeted mutation testing: break one behaviour at a time and check that the tests notice.

Each mutant replaces one exact snippet of a module with a version a user would notice (a limit
off by one, a penalty dropped, a gate equation changed, a checkpoint written in place); the
module's tests run against it and must fail. A mutant that survives is a feature no test guards.
The tree is restored after every mutant, also when interrupted.

    python scripts/mutate.py                          # every module; prints the score per module
    python scripts/mutate.py --modules search,cells   # some of them
    python scripts/mutate.py --modules pipeline --what "train.threads"   # the ones so described
    python scripts/mutate.py --tests /tmp/old/tests   # score another test suite (e.g. an older one)
    python scripts/mutate.py --out mutants.json --resume   # go on where an interrupted run stopped
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nmt.core.rundir import write_json

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    module: str  # file under nmt/, with its package: model/fused.py
    old: str  # exact text, found exactly once
    new: str
    what: str
    # Test files or node ids (test_x.py::test_y) that must catch it; default: TESTS[module].
    tests: tuple[str, ...] = ()


# Which test files guard which module.
TESTS = {
    "decoding/search.py": ["test_search.py"],
    "core/search_options.py": ["test_search_options.py", "test_search.py", "test_decode.py"],
    "scoring/metrics.py": ["test_metrics.py"],
    "data/batching.py": ["test_batching.py", "test_seq2seq.py"],
    "model/cells.py": ["test_cells.py", "test_seq2seq.py"],
    "model/attention.py": ["test_attention.py", "test_seq2seq.py"],
    "model/checkpoint.py": ["test_checkpoint.py", "test_train.py"],
    "training/train.py": [
        "test_train.py",
        "test_saver.py",
    ],  # the loop's saving is tested with the saver
    "training/saver.py": ["test_saver.py", "test_train.py"],
    "model/decoder.py": ["test_decoder.py", "test_seq2seq.py"],
    "training/optim.py": ["test_optim.py"],
    "core/overrides.py": ["test_overrides.py"],
    "model/rnn.py": ["test_encoder.py", "test_rnn.py", "test_cells.py"],
    "model/ensemble.py": ["test_ensemble.py"],
    "training/distributed.py": [
        "test_distributed.py::test_shard_gives_each_rank_its_share_in_equal_counts"
    ],
    "scoring/search_tuning.py": ["test_search_tuning.py"],
    "serving/serve.py": ["test_serve.py"],
    "serving/export.py": ["test_export.py"],
    "cli.py": [
        "test_cli.py::test_stages_never_write_into_a_trained_run",
        "test_cli.py::test_a_run_dir_that_cannot_be_made_is_one_line",
        "test_cli.py::test_a_reader_that_leaves_early_is_no_traceback",
        "test_cli.py::test_a_stopped_service_leaves_no_unpacked_model",
    ],
    "scoring/stats.py": ["test_stats.py"],
    "scoring/tuning.py": ["test_tuning.py", "test_tables.py"],
    "sweep.py": [
        "test_ablate.py::test_tuning_picks_the_best_rate_per_cell_and_can_serve_every_attention"
    ],
    "report/ablation.py": ["test_ablation.py"],
    "data/sources.py": ["test_sources.py", "test_prepare.py"],
    "data/tokenizer.py": ["test_tokenizer.py"],
    "data/columns.py": ["test_columns.py"],
    "translate.py": ["test_translate.py"],
    "decoding/stream.py": ["test_stream.py"],
    "resume.py": ["test_resume.py", "test_pipeline.py"],
    "pipeline.py": ["test_pipeline.py"],
    "report/runs.py": ["test_runs.py"],
    "report/clock.py": ["test_clock.py"],
    "core/rundir.py": ["test_rundir.py"],
    "training/validation.py": ["test_validation.py"],
    "report/tables.py": ["test_tables.py"],
    "model/fused.py": ["test_fused.py"],
    "model/loss.py": ["test_loss.py"],
    "model/cell_grads.py": ["test_cell_grads.py", "test_fused.py"],
    "core/runtime.py": [
        "test_seq2seq.py::test_training_step_under_bf16_autocast",
        "test_seq2seq.py::test_decoding_under_bf16_autocast",
    ],
    "decoding/gates.py": ["test_gates.py"],
    "serving/page.html": ["test_page.py"],
    "records.py": [
        "test_records.py::test_a_sweep_saved_without_weights_and_restored_goes_on_without_training"
    ],
}

MUTANTS = [
    # rundir.py: artifacts readable as a plain write's
    Mutant(
        "core/rundir.py",
        "    os.chmod(path, (0o777 if directory else 0o666) & ~umask())\n",
        "",
        "atomic writes leave mkstemp's 0600 on every artifact",
    ),
    # gates.py, rnn.py, serve.py, page.html, cli.py: the gates token by token
    Mutant(
        "decoding/gates.py",
        "model.decoder(batch.tgt_in, model.encode(",
        "model.decoder(batch.tgt_out, model.encode(",
        "the decoder's gates traced on the wrong inputs (the outputs, not bos and the tokens)",
    ),
    Mutant(
        "model/rnn.py",
        "steps.setdefault((layer, d, name), [g] * length)[t] = g * keep",
        "steps.setdefault((layer, d, name), []).append(g * keep)",
        "the backward direction's gates in the order it steps, not at their tokens",
    ),
    Mutant(
        "serving/serve.py",
        "            raise Refused(422, refusal)\n",
        "            pass\n",
        "gates asked of onnxruntime answered with a traceback, not one line",
        ("test_serve.py::test_two_models_side_by_side",),
    ),
    Mutant(
        "serving/serve.py",
        "        if len(asked.text) > limits.max_gate_lines:",
        "        if False:",
        "gates for any number of lines",
        ("test_serve.py::test_gates_token_by_token",),
    ),
    Mutant(
        "serving/page.html",
        'return { text: word ? piece.slice(1) || "␣" : piece, word, piece };',
        "return { text: piece, word, piece };",
        "SentencePiece's word mark drawn as a glyph",
    ),
    Mutant(
        "serving/page.html",
        "figure.append(frame, scale(low, high));",
        "figure.append(frame, scale(0, 1));",
        "a colour scale whose ends are not the data's",
    ),
    Mutant(
        "cli.py",
        'cfg.backend, cfg.quantize = "torch", "none" if cfg.quantize == "auto" else cfg.quantize',
        "pass",
        "gates=DIR under backend=auto refused on CPUs where auto takes onnxruntime",
        ("test_translate.py::test_gates_refused_in_one_line_where_the_backend_has_none",),
    ),
    # optim.py, decoder.py: decoding after an update sees the update
    Mutant(
        "training/optim.py",
        "    opt.register_step_post_hook(_count_the_write)\n",
        "",
        "a fused optimizer's step leaves the parameters' versions where they were",
    ),
    Mutant(
        "core/overrides.py",
        '    return "\'" + value.replace("\'", "\\\\\'") + "\'"',
        "    return value",
        "a sweep's run directory passed to a command unquoted (its '=' and ',' Hydra's)",
        ("test_overrides.py::test_a_path_quoted_for_an_override_reads_back_as_itself",),
    ),
    Mutant(
        "core/overrides.py",
        'print(f"error: {_unquoted(overrides) or one_line(e)}", file=sys.stderr)',
        'print(f"error: {one_line(e)}", file=sys.stderr)',
        "an unquoted sweep run's path gets Hydra's grammar error, not what to type",
        ("test_overrides.py::test_an_unquoted_sweep_run_is_one_line_that_shows_the_quotes",),
    ),
    Mutant(
        "training/optim.py",
        'with torch.set_grad_enabled(self.defaults["differentiable"]):',
        "with torch.enable_grad():",
        "an unmarked optimizer step writes the weights with gradients on",
        ("test_optim.py::test_training_never_imports_torchs_compiler",),
    ),
    Mutant(
        "training/optim.py",
        'kinds = {"adam": eager(torch.optim.Adam), "adamw": eager(torch.optim.AdamW)}',
        'kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}',
        "training imports torch's compiler through the optimizer's marks",
        ("test_optim.py::test_training_never_imports_torchs_compiler",),
    ),
    Mutant(
        "model/decoder.py",
        "        self._decode_weight = None\n        return super().train(mode)",
        "        return super().train(mode)",
        "the output-layer copy for decoding survives a switch to training and back",
    ),
    # fused.py
    Mutant(
        "model/cell_grads.py",
        "        return Back(g_pre, [(slice(None), g_pre, hm)], g_pre @ w_hh, (None, g_c2 * f))",
        "        return Back(g_pre, [(slice(None), g_pre, hm)], g_pre @ w_hh, (None, g_c2))",
        "the LSTM's memory cell carries its gradient past the forget gate",
    ),
    Mutant(
        "model/fused.py",
        '_CAST_ONCE = ("w_emb", "w_feed", "emb")',
        '_CAST_ONCE = ("emb",)',
        "under bf16 the first layer's weight views cast at every step again",
    ),
    Mutant(
        "model/fused.py",
        '                g_feed_carry = _mul(g_gx @ w["w_feed"], w.get("feed_vmask"))',
        '                g_feed_carry = g_gx @ w["w_feed"]',
        "the fed-back output's variational mask left out of its gradient",
    ),
    Mutant(
        "model/fused.py",
        "        emb[:, start:stop].reshape(-1, emb.shape[-1]),",
        "        emb[:, : stop - start].reshape(-1, emb.shape[-1]),",
        "a block of steps' projection weights multiplied by the first block's embeddings",
    ),
    Mutant(
        "model/loss.py",
        "                grad = logits.div_(total.unsqueeze(1)).sub_(eps / vocab)",
        "                grad = logits.sub_(eps / vocab)",
        "the loss's gradient from exponentials never normalised into the softmax",
    ),
    Mutant(
        "model/cell_grads.py",
        "    r_pre = n_pre * h_n * r * (1 - r)",
        "    r_pre = n_pre * h_n * r",
        "the GRU's reset gate without its sigmoid's derivative",
    ),
    # records.py: a sweep's records without weights
    Mutant(
        "records.py",
        "        _analyze(run_dir, device)\n",
        "",
        "a run's record lacks the analysis that needs its weights",
    ),
    Mutant(
        "records.py",
        "                stage_data(read_run_config(tmp / CONFIG_FILE), tmp)\n",
        "                pass\n",
        "a restored run lacks the corpus the report reads its references from",
    ),
    Mutant(
        "records.py",
        'LEFT_OUT = ("best", "last", "kept", "data", "encoded", "tb")',
        'LEFT_OUT = ("last", "kept", "encoded", "tb")',
        "a record keeps the best weights and the corpus",
    ),
    # clock.py: a sweep's wall clock
    Mutant(
        "report/clock.py",
        "    busy = merged(spans)",
        "    busy = spans",
        "two jobs at once counted twice in the wall clock",
    ),
    Mutant(
        "report/clock.py",
        'STARTS = (" - run directory: ", ": finished before (")',
        'STARTS = (" - run directory: ",)',
        "a skipped run's line stretches the sitting before it over the pause",
    ),
    # runs.py, rundir.py, validation.py, tables.py
    Mutant(
        "report/runs.py",
        '            rows[int(values["step"])] = values',
        '            rows.setdefault(int(values["step"]), values)',
        "a resumed run's repeated step keeps its first values",
    ),
    Mutant(
        "core/rundir.py",
        "        os.replace(tmp, path)\n    except BaseException:\n        tmp.unlink(missing_ok=True)\n        raise\n\n\ndef write_json",
        "        os.replace(tmp, path)\n    except BaseException:\n        raise\n\n\ndef write_json",
        "a failed write leaves its temporary file",
    ),
    Mutant(
        "training/validation.py",
        "        tokens += out.n_tokens",
        "        tokens += 1",
        "validation loss per batch, not per token",
    ),
    Mutant(
        "report/tables.py",
        '            cells.append(f"**{text}**" if r == chosen else text)',
        '            cells.append(f"**{text}**" if r == max(rates) else text)',
        "the tuning table bolds the largest rate, not the chosen one",
    ),
    # search.py
    Mutant(
        "decoding/search.py",
        "    return ((5.0 + length) / 6.0) ** alpha",
        "    return ((5.0 + length) / 5.0) ** alpha",
        "length penalty constant",
    ),
    Mutant(
        "decoding/search.py",
        "(src_lens.float() * options.max_len_a + options.max_len_b)",
        "(src_lens.float() * options.max_len_a)",
        "max_len_b ignored",
    ),
    Mutant(
        "decoding/search.py",
        '        if t < min_len:\n            lprobs[:, EOS_ID] = float("-inf")\n        _force_end(',
        '        if t < min_len - 1:\n            lprobs[:, EOS_ID] = float("-inf")\n        _force_end(',
        "greedy min_len one short",
    ),
    Mutant(
        "decoding/search.py",
        "    if t < options.min_len:\n",
        "    if t < options.min_len - 1:\n",
        "beam min_len one short",
    ),
    Mutant(
        "decoding/search.py",
        "        banned = _banned_ngrams(hist, n)",
        "        banned = _banned_ngrams(hist, n + 1)",
        "n-gram blocking off by one",
    ),
    Mutant(
        "decoding/search.py",
        "        if banned:\n",
        "        if False:\n",
        "no n-gram blocking",
    ),
    Mutant(
        "decoding/search.py",
        "            score=log_prob / lp + options.coverage_penalty * cov,",
        "            score=log_prob / lp,",
        "coverage penalty dropped",
    ),
    Mutant(
        "decoding/search.py",
        "coverage[rows].clamp(max=1.0).log()",
        "coverage[rows].log()",
        "coverage not capped at 1",
    ),
    Mutant(
        "decoding/search.py",
        '        done = (best_live == float("-inf")) | (finished.nth[active] >= best_live / reach[active])',
        '        done = (best_live == float("-inf")) | (finished.nth[active] > float("-inf"))',
        "beam stops at the first finished hypothesis",
    ),
    Mutant(
        "decoding/search.py",
        "    return [sorted(h, key=lambda h: -h.score)[:n_best] for h in finished.hyps]",
        "    return [sorted(h, key=lambda h: h.score)[:n_best] for h in finished.hyps]",
        "n-best worst first",
    ),
    Mutant(
        "decoding/search.py",
        "        log_probs.index_add_(0, active, best)",
        "        log_probs[active] = best",
        "greedy score not summed",
    ),
    Mutant(
        "decoding/search.py",
        "        _force_end(lprobs, eos, t + 1 >= limits[active])",
        "        _force_end(lprobs, eos, t + 1 > limits[active])",
        "greedy length limit one over",
    ),
    Mutant(
        "decoding/search.py",
        "        lprobs[last, EOS_ID] = eos[last]",
        "        lprobs[last, EOS_ID] = lprobs[last, EOS_ID]",
        "min_len beyond the limit leaves no hypothesis",
    ),
    Mutant(
        "core/search_options.py",
        "            self.beam_size == 1\n            and self.n_best == 1",
        "            self.n_best == 1",
        "beam settings decoded greedily",
    ),
    Mutant(
        "core/search_options.py",
        "        if not 1 <= self.n_best <= self.beam_size:",
        "        if not 1 <= self.n_best:",
        "n_best > beam_size accepted",
    ),
    Mutant(
        "decoding/search.py",
        "            keep = (~done).nonzero().squeeze(1)\n            active, prev = active[keep], prev[keep]",
        "            keep = (~done).nonzero().squeeze(1)\n            active, prev = active[keep.flip(0)], prev[keep]",
        "greedy rows mixed up when sentences finish",
    ),
    # evaluate.py
    Mutant(
        "scoring/metrics.py",
        "    streams = [refs]",
        "    streams = [hyps]",
        "scored against the hypotheses",
    ),
    Mutant(
        "scoring/metrics.py",
        "        metric = BLEU(lowercase=True)",
        "        metric = BLEU()",
        "lowercased BLEU is cased",
    ),
    Mutant(
        "scoring/metrics.py",
        "    bleu, chrf = BLEU(), CHRF()",
        "    bleu, chrf = BLEU(), CHRF(word_order=2)",
        "chrF++ instead of chrF",
    ),
    Mutant(
        "scoring/metrics.py",
        "    if len(hyps) != len(refs):\n        raise ValueError",
        "    if False:\n        raise ValueError",
        "length mismatch accepted",
    ),
    Mutant(
        "scoring/metrics.py",
        'zip(("bleu", "chrf"), [k for',
        'zip(("chrf", "bleu"), [k for',
        "bootstrap columns swapped",
    ),
    Mutant(
        "scoring/metrics.py",
        "        metric = TER()",
        "        metric = TER(case_sensitive=True)",
        "TER case-sensitive",
    ),
    # batching.py
    Mutant(
        "data/batching.py",
        "    src_ids = pad([[*s, EOS_ID] for s in src])",
        "    src_ids = pad([list(s) for s in src])",
        "source without eos",
    ),
    Mutant(
        "data/batching.py",
        "        tgt_out = pad([[*t, EOS_ID] for t in tgt])",
        "        tgt_out = pad([list(t) + [PAD_ID] for t in tgt])",
        "target without eos",
    ),
    Mutant(
        "data/batching.py",
        "longest_with * (len(current) + 1) > self.max_tokens",
        "longest_with * len(current) > self.max_tokens",
        "token budget exceeded by one sentence",
    ),
    Mutant(
        "data/batching.py",
        "            if position >= start:",
        "            if position > start:",
        "resume skips a batch",
    ),
    Mutant(
        "data/batching.py",
        "        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)",
        "        gen = torch.Generator().manual_seed(self.seed * 100_003)",
        "every epoch the same order",
    ),
    Mutant(
        "data/batching.py",
        "            chunk = sorted(order[start : start + pool], key=self.cost.__getitem__)",
        "            chunk = order[start : start + pool]",
        "no length bucketing",
    ),
    Mutant(
        "data/batching.py",
        "            return self._cut(sorted(range(n), key=self.cost.__getitem__))",
        "            return self._cut(list(range(n)))",
        "unshuffled batches not sorted",
    ),
    Mutant(
        "data/batching.py",
        "len(current) >= self.batch_size)",
        "len(current) > self.batch_size)",
        "batch_size + 1 sentences",
    ),
    Mutant(
        "data/batching.py",
        "        src_mask=src_ids != PAD_ID,",
        "        src_mask=src_ids >= 0,",
        "padding not masked",
    ),
    # cells.py
    Mutant(
        "model/cells.py",
        "    n = torch.tanh(x_n + r * h_n)\n",
        "    n = torch.tanh(x_n + h_n)\n",
        "GRU without reset gate",
    ),
    Mutant(
        "model/cells.py",
        "    return (n + z * (h - n),), saved  # = (1 - z) * n + z * h",
        "    return (h + z * (n - h),), saved  # = (1 - z) * n + z * h",
        "GRU update gate inverted",
    ),
    Mutant(
        "model/cells.py",
        "    n = torch.tanh(x_n + F.linear(rh, w_hh[2 * size :], b_hh[2 * size :]))",
        "    n = torch.tanh(x_n + r * F.linear(hm, w_hh[2 * size :], b_hh[2 * size :]))",
        "Cho GRU resets after the product",
    ),
    Mutant(
        "model/cells.py",
        "        c2 = f * c + i * g",
        "        c2 = c + i * g",
        "LSTM without forget gate",
    ),
    Mutant(
        "model/cells.py",
        "            return (o * tc, c2), saved",
        "            return (tc, c2), saved",
        "LSTM without output gate",
    ),
    Mutant(
        "model/cells.py",
        "    h2 = torch.tanh(gx + F.linear(hm, w_hh, b_hh))",
        "    h2 = torch.relu(gx + F.linear(hm, w_hh, b_hh))",
        "tanh RNN with relu",
    ),
    Mutant(
        "model/cells.py",
        '        bias_one="forget",\n        cites=cites,',
        "        bias_one=None,\n        cites=cites,",
        "LSTM forget bias 0",
    ),
    Mutant(
        "model/cells.py",
        "    return tuple(t.index_select(1, index) for t in state)",
        "    return tuple(t.index_select(1, index.flip(0)) for t in state)",
        "select reorders wrongly",
    ),
    Mutant(
        "model/cells.py",
        '        state=("h", "c"),',
        '        state=("h",),',
        "LSTM state without c",
    ),
    # the cells that change one gate, the minimal cells, and what every cell relies on
    Mutant(
        "model/cells.py",
        "        return (tc, c2), saved",
        '        return (torch.sigmoid(pre["cell"]) * tc, c2), saved',
        "lstm_nog shows its memory through a gate",
    ),
    Mutant(
        "model/cells.py",
        '        i = torch.sigmoid(pre["input"]) if "input" in pre else 1 - f',
        '        i = torch.sigmoid(pre["input"]) if "input" in pre else f',
        "lstm_cifg writes what it keeps (the coupling broken)",
    ),
    Mutant(
        "model/cells.py",
        "    n = torch.tanh(x_n + h_n)\n    return",
        "    n = torch.tanh(x_n + z * h_n)\n    return",
        "gru_noreset gates its candidate's history (a reset gate left in)",
    ),
    Mutant(
        "model/cells.py",
        "    keep = 1 - z\n",
        "    keep = z\n",
        "minGRU keeps the share it writes",
    ),
    Mutant(
        "model/cells.py",
        "    keep = f / total\n",
        "    keep = f\n",
        "minLSTM's forget gate not normalised",
    ),
    Mutant(
        "model/cells.py",
        "        return insert(w_ih, 0.0), insert(w_hh, 0.0), insert(b_ih, OPEN), insert(b_hh, 0.0)",
        "        return insert(w_ih, 0.0), insert(w_hh, 0.0), insert(b_ih, 0.0), insert(b_hh, 0.0)",
        "the exported twin's held-open gate half shut",
        ("test_ort.py",),
    ),
    Mutant(
        "model/cell_grads.py",
        '            pre["forget"] = g_c2 * (c - g) * f * (1 - f)',
        '            pre["forget"] = g_c2 * c * f * (1 - f)',
        "CIFG's forget-gate gradient misses the coupled input gate",
    ),
    Mutant(
        "model/cell_grads.py",
        "        return Back(g_gx, [], g_hm, g_state, whole=(g_w, g_b))",
        "        return Back(g_gx, [], g_hm, g_state, whole=(g_w, None))",
        "autograd's path drops the recurrent bias's gradient",
    ),
    Mutant(
        "model/rnn.py",
        "            b_far = F.pad(b, (0, 0, shift, 0))[:, :-shift]",
        "            b_far = F.pad(b, (0, 0, shift + 1, 0))[:, : -shift - 1]",
        "the scan shifted by one step",
        ("test_cells.py", "test_rnn.py", "test_seq2seq.py"),
    ),
    Mutant(
        "model/rnn.py",
        "                a = torch.where(keep, a, torch.ones_like(a))",
        "",
        "padding enters the scan",
        ("test_cells.py", "test_rnn.py", "test_seq2seq.py"),
    ),
    # attention.py
    Mutant(
        "model/attention.py",
        '        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))  # [B, K, S]',
        "",
        "padding attended",
    ),
    Mutant(
        "model/attention.py",
        "        energy.addcmul_(energy, energy, value=-1.0).mul_(four_v).mul_(g.unsqueeze(-1))",
        "        energy.mul_(four_v).mul_(g.unsqueeze(-1))",
        "additive attention gradient without tanh'",
    ),
    Mutant(
        "model/attention.py",
        "    return grad_keys, grad_query, grad_v - grad_sum if need_v else None",
        "    return grad_keys, grad_query, None",
        "no gradient for v",
    ),
    Mutant(
        "model/attention.py",
        '    acc.setdefault("g_e", []).append(g_e)\n    return torch.bmm(g_e.unsqueeze(1), keys).squeeze(1)',
        '    acc.setdefault("g_e", []).append(g_e)\n    return 0.5 * torch.bmm(g_e.unsqueeze(1), keys).squeeze(1)',
        "the fused loop's query gradient of a dot product halved",
        ("test_fused.py",),
    ),
    Mutant(
        "model/attention.py",
        "    return torch.bmm(query, keys.transpose(1, 2))",
        "    return 0.5 * torch.bmm(query, keys.transpose(1, 2))",
        "Luong scores scaled",
    ),
    Mutant(
        "model/attention.py",
        "        keys=lambda module, outputs: outputs,\n        scores=_dot_scores,",
        "        keys=lambda module, outputs: None,\n        scores=_dot_scores,",
        "luong_dot without keys",
    ),
    # checkpoint.py
    Mutant(
        "model/checkpoint.py",
        "    if place.exists():\n        shutil.rmtree(old, ignore_errors=True)\n        os.replace(place, old)\n",
        "    shutil.rmtree(place, ignore_errors=True)\n",
        "old checkpoint deleted before the new one is in",
    ),
    Mutant(
        "core/rundir.py",
        '    for candidate in (place, place.with_name(place.name + ".old")):',
        "    for candidate in (place,):",
        "a save killed mid-rename loses the checkpoint",
        ("test_train.py::test_killed_save_leaves_previous_checkpoint",),
    ),
    Mutant(
        "model/checkpoint.py",
        '        return torch.load(path, map_location="cpu", weights_only=True)',
        '        return torch.load(path, map_location="cpu", weights_only=False)',
        "pickles unpickled",
    ),
    Mutant(
        "model/checkpoint.py",
        "        if header.get(name) in tensors:\n            tensors[name] = tensors[header[name]]",
        "        if False:\n            tensors[name] = tensors[header[name]]",
        "a tied weight stored once is not restored",
    ),
    # train.py
    Mutant(
        "training/saver.py",
        '        set_rng_state(saved["rng"])',
        "        pass",
        "resume without RNG state",
    ),
    Mutant(
        "training/saver.py",
        '        self.optimizer.load_state_dict(saved["optimizer"])',
        "        pass",
        "resume without optimizer state",
    ),
    Mutant(
        "training/train.py",
        '            self.save(self.best_dir, with_state=False, extra={"scores.json": scores})',
        '            self.save(self.best_dir, with_state=False)\n            (self.best_dir / "scores.json").write_text(json.dumps(scores))',
        "best scores written after the rename",
    ),
    Mutant(
        "training/train.py",
        "        if caught:",
        "        if False:",
        "signals ignored",
    ),
    Mutant(
        "training/train.py",
        "            if self.bad_in_row >= self.options.max_bad_steps:",
        "            if False:",
        "NaN losses never stop training",
    ),
    Mutant(
        "training/train.py",
        "        if state.best_step == 0:  # a first validation with no finite score is still the best so far",
        "        if False:",
        "a first NaN validation leaves no best/",
        ("test_saver.py::test_a_first_validation_without_a_finite_score_still_leaves_a_best",),
    ),
    Mutant(
        "training/train.py",
        "        loss = out.loss / tokens * self.world.size  # DDP averages the ranks' gradients",
        "        loss = out.loss / tokens",
        "ranks' gradients averaged, not summed",
        ("test_distributed.py::test_two_ranks_equal_one_process_on_the_same_global_batches",),
    ),
    # checkpoint.py: averaging and a failed write
    Mutant(
        "model/checkpoint.py",
        "    tensors = [_read_weights(model, place) for place in places]",
        "    tensors = [_read_weights(model, place) for place in places[:2]]",
        "averaging two of N checkpoints",
        ("test_checkpoint.py",),
    ),
    Mutant(
        "model/checkpoint.py",
        '    chosen = kept[-n:] if which == "last" else sorted(kept, key=lambda k: -k[1])[:n]',
        '    chosen = kept[:n] if which == "last" else sorted(kept, key=lambda k: -k[1])[:n]',
        "avg-last-N averages the first N",
        ("test_checkpoint.py",),
    ),
    Mutant(
        "model/checkpoint.py",
        '    chosen = kept[-n:] if which == "last" else sorted(kept, key=lambda k: -k[1])[:n]',
        '    chosen = kept[-n:] if which == "last" else sorted(kept, key=lambda k: k[1])[:n]',
        "avg-best-N averages the worst",
        ("test_saver.py::test_kept_checkpoints_are_the_last_and_the_best",),
    ),
    Mutant(
        "model/checkpoint.py",
        "        shutil.rmtree(tmp, ignore_errors=True)\n        kept = ",
        "        kept = ",
        "a failed write leaves its temporary directory",
        ("test_pipeline.py::test_a_checkpoint_that_cannot_be_written_loses_nothing",),
    ),
    # decoder.py and search.py: decoding's weight layout and in-place log-probabilities
    Mutant(
        "model/decoder.py",
        "        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)",
        "        key = (weight.data_ptr(), weight.dtype, weight.device)",
        "decoding keeps its copy of the output weight after the weight is updated",
        ("test_decoder.py::test_decoding_logits_follow_the_weights_they_were_laid_out_from",),
    ),
    Mutant(
        "decoding/search.py",
        "        rows.copy_(torch.log_softmax(rows, dim=-1))",
        "        rows.sub_(rows.amax(dim=-1, keepdim=True))",
        "search's log-probabilities not normalised",
    ),
    Mutant(
        "decoding/search.py",
        "        cand = lprobs.add_(beams.scores.view(n * K, 1)).view(n, K * V)",
        "        cand = lprobs.view(n, K * V)",
        "beam candidates ranked without their beam's score",
    ),
    # decoder.py: the conditional decoder and the decoder's regularisers
    Mutant(
        "model/decoder.py",
        "            rnn = tuple(torch.cat([t[:-1], n.unsqueeze(0)]) for t, n in zip(rnn, top, strict=True))\n",
        "",
        "the second transition's state not carried",
        ("test_decoder.py::test_conditional_decoder_carries_the_second_transition",),
    ),
    Mutant(
        "model/decoder.py",
        "            query = top[0]\n",
        "",
        "the output reads the first transition's state",
        ("test_decoder.py::test_conditional_decoder_carries_the_second_transition",),
    ),
    Mutant(
        "model/decoder.py",
        "        masks = self._sequence_masks(emb) if self.training else None",
        "        masks = None",
        "decoder masks of variational dropout dropped",
        ("test_decoder.py::test_each_decoder_regulariser_acts_in_training_only",),
    ),
    Mutant(
        "model/decoder.py",
        "        context = self.ctx_dropout(context)",
        "        context = context",
        "context dropout dropped",
        ("test_decoder.py::test_each_decoder_regulariser_acts_in_training_only",),
    ),
    Mutant(
        "model/decoder.py",
        "            keep = torch.rand(tgt_in.shape, device=emb.device) >= self.word_dropout",
        "            keep = torch.rand(tgt_in.shape, device=emb.device) >= 0.0",
        "word dropout drops nothing",
        ("test_decoder.py::test_word_dropout_drops_whole_words",),
    ),
    # rnn.py: variational dropout of the stacked layers and the encoder
    Mutant(
        "model/rnn.py",
        "                inputs = x if x_mask is None else x * x_mask[:, None, :]",
        "                inputs = x",
        "encoder inputs without their variational mask",
        ("test_encoder.py::test_encoder_variational_masks_hide_the_input_and_the_history",),
    ),
    Mutant(
        "model/rnn.py",
        "                    hm = state[0] if h_mask is None else state[0] * h_mask",
        "                    hm = state[0]",
        "encoder states without their variational mask",
        ("test_encoder.py::test_encoder_variational_masks_hide_the_input_and_the_history",),
    ),
    Mutant(
        "model/rnn.py",
        "        if p <= 0:\n            return None\n        return [",
        "        if True:\n            return None\n        return [",
        "no variational masks at all",
        ("test_encoder.py", "test_decoder.py", "test_cells.py"),
    ),
    # ensemble.py
    Mutant(
        "model/ensemble.py",
        "            attn=torch.stack(attns).mean(dim=0) if attns else None,",
        "            attn=attns[0] if attns else None,",
        "the ensemble's attention taken from one member",
    ),
    Mutant(
        "model/ensemble.py",
        "        lprobs = torch.stack([torch.log_softmax(o.logits.float(), dim=-1) for o in outs])",
        "        lprobs = torch.stack([o.logits.float() for o in outs])",
        "members' logits averaged, not their log-probabilities",
    ),
    Mutant(
        "model/ensemble.py",
        "            state=EnsembleState(tuple(o.state for o in outs)),",
        "            state=state,",
        "members' states not advanced",
    ),
    Mutant(
        "model/ensemble.py",
        "        if len(sizes) != 1:",
        "        if False:",
        "members of other vocabulary sizes accepted",
    ),
    # distributed.py
    Mutant(
        "training/distributed.py",
        "        return requested or max(1, usable_cores() // self.local_size)",
        "        return requested or max(1, usable_cores())",
        "ranks' thread share not divided",
        ("test_distributed.py::test_each_rank_computes_on_its_share_of_the_cores",),
    ),
    Mutant(
        "training/distributed.py",
        "            yield group[-1][0], group[world.rank][1]",
        "            yield group[-1][0], group[0][1]",
        "every rank trains on the same batch",
    ),
    Mutant(
        "training/distributed.py",
        "            yield group[-1][0], group[world.rank][1]",
        "            yield group[0][0], group[world.rank][1]",
        "a checkpoint's position repeats batches",
    ),
    # search_tuning.py
    Mutant(
        "scoring/search_tuning.py",
        '    return max(rows, key=lambda r: r["bleu"])',
        "    return rows[0]",
        "the tuned search chosen from the first row",
    ),
    Mutant(
        "scoring/search_tuning.py",
        '    if split in report.get("test_splits", []) and not allow_test:',
        "    if False:",
        "tuning on a test split accepted silently",
    ),
    Mutant(
        "scoring/search_tuning.py",
        "    if len(set(beam_sizes)) > 1 and beam == max(beam_sizes):",
        "    if beam == max(beam_sizes):",
        "a beam size the grid did not vary called an edge",
    ),
    Mutant(
        "scoring/search_tuning.py",
        "        pairs += [(1, 0.0)] if beam == 1 else [(beam, a) for a in sorted(set(alphas))]",
        "        pairs += [(beam, a) for a in sorted(set(alphas))]",
        "greedy tried once per alpha",
    ),
    # stats.py
    Mutant(
        "scoring/stats.py",
        "        [[corpus_score(metric, r[idx].sum(0)) for idx in rows] for r in runs], dtype=np.float64",
        "        [[corpus_score(metric, r[idx].sum(0)) for idx in rng.integers(0, sentences, size=(samples, sentences))] for r in runs], dtype=np.float64",
        "unpaired bootstrap",
    ),
    Mutant(
        "scoring/stats.py",
        "    centred = np.abs(deltas - deltas.mean())",
        "    centred = np.abs(deltas)",
        "bootstrap p of an uncentred distribution",
    ),
    Mutant(
        "scoring/stats.py",
        "    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)",
        "    half = 1.96 * std / math.sqrt(n)",
        "normal interval for a few seeds",
    ),
    Mutant(
        "scoring/stats.py",
        "    return float(scipy_stats.ttest_ind(other, base, equal_var=False).pvalue)",
        "    return float(scipy_stats.ttest_ind(other, base, equal_var=True).pvalue)",
        "Student's t-test instead of Welch's",
    ),
    # sweep.py
    Mutant(
        "scoring/tuning.py",
        "    first = values.index(best)",
        "    first = len(values) - 1 - values[::-1].index(best)",
        "a tie of rates goes to the larger",
    ),
    Mutant(
        "scoring/tuning.py",
        "    if last == len(rates) - 1:",
        "    if False:",
        "a best at the highest rate tried is called bracketed",
    ),
    Mutant(
        "sweep.py",
        '    return done.get("bleu") if done.get("status") == "finished" else None',
        '    return done.get("bleu")',
        "a failed tuning run counted",
    ),
    Mutant(
        "sweep.py",
        "            chosen[cell] = {a: rate for a in [plan.tune.attention, *_served(plan)]}",
        "            chosen[cell] = {plan.tune.attention: rate}",
        "one tuned rate does not serve every attention",
    ),
    Mutant(
        "sweep.py",
        "        if len(rates) >= plan.tune.max_points:",
        "        if len(rates) > plan.tune.max_points:",
        "the search tries one rate more than tune.max_points",
        ("test_ablate.py::test_the_search_stops_at_max_points_even_with_its_best_at_an_edge",),
    ),
    Mutant(
        "sweep.py",
        "            if running and not finished:\n",
        "            if True:\n                ended = tuning_runs(tune_dir)\n            if running:\n",
        "the tuning loop reads every ended run's config once a second while its jobs run",
        ("test_ablate.py::test_the_search_reads_its_directory_when_a_job_ends_not_at_every_poll",),
    ),
    Mutant(
        "report/ablation.py",
        '            a, b = groups.get((pair["a"], context)), groups.get((pair["b"], context))',
        '            b, a = groups.get((pair["a"], context)), groups.get((pair["b"], context))',
        "the table of differences takes a - b",
        ("test_ablate.py::test_ablation_report_has_seed_statistics_and_the_tuning",),
    ),
    Mutant(
        "report/ablation.py",
        "            texts[run.pair] = evaluate.split_pairs(run.path, split)",
        "            texts[run.pair] = evaluate.split_pairs(finished[0].path, split)",
        "every language pair scored against the first pair's references",
        ("test_ablate.py::test_ablation_report_has_seed_statistics_and_the_tuning",),
    ),
    Mutant(
        "report/ablation.py",
        "    if bench is not None:\n        return _mean(bench.speed(r) for r in runs)",
        "    if False:\n        return _mean(bench.speed(r) for r in runs)",
        "--bench given, the speed columns still the runs' own",
        ("test_ablate.py::test_report_takes_speeds_measured_apart_from_a_benchmark",),
    ),
    Mutant(
        "report/runs.py",
        '        return done["best_step"] * tokens / done["steps"] / self.speed(run) / 60',
        '        return done["steps"] * tokens / done["steps"] / self.speed(run) / 60',
        "minutes to best at the benchmark's speed counted to the last update",
        ("test_ablate.py::test_report_takes_speeds_measured_apart_from_a_benchmark",),
    ),
    Mutant(
        "report/runs.py",
        '        key = (run.cell, int(run.done.get("parameters") or 0), run.pair)',
        '        key = (run.cell, int(run.done.get("parameters") or 0), "en-de")',
        "every run's speed taken from the en-de benchmark, whatever its language pair",
        ("test_ablate.py::test_report_takes_speeds_measured_apart_from_a_benchmark",),
    ),
    Mutant(
        "report/tables.py",
        '    if high < 0:\n        return "lower"',
        '    if low < 0:\n        return "lower"',
        "the answer calls a difference lower when its interval holds zero",
        ("test_ablation.py::test_the_answer_says_what_each_interval_says",),
    ),
    Mutant(
        "pipeline.py",
        "    torch.set_num_threads(threads)\n    return translator",
        "    return translator",
        "the final evaluation on every core, not the run's train.threads",
        (
            "test_readme.py::test_readme_command_runs[make train final_eval=[test_2016_flickr] search=beam5]",
        ),
    ),
    # report.py
    Mutant(
        "report/ablation.py",
        '            "failed": len(group) - len(ok),',
        '            "failed": 0,',
        "failed runs not counted",
    ),
    Mutant(
        "report/ablation.py",
        '                steps=statistics.fmean(r.done["steps"] for r in ok),',
        '                steps=max(r.done["steps"] for r in ok),',
        "steps not the mean over seeds",
    ),
    Mutant(
        "report/ablation.py",
        "        ok = [r for r in group if r.finished]",
        "        ok = list(group)",
        "diverged runs averaged in",
    ),
    # sources.py
    Mutant(
        "data/sources.py",
        "        if len(fields) != len(columns):",
        "        if len(fields) < len(columns):",
        "a TSV line with extra columns accepted",
    ),
    Mutant(
        "data/sources.py",
        "        pairs.append((fields[i], fields[j]))",
        "        pairs.append((fields[j], fields[i]))",
        "TSV columns swapped",
    ),
    Mutant(
        "data/sources.py",
        '            raise DataError(f"{path}: language {lang!r} is not among data.tsv_columns={columns}")',
        "            pass",
        "a language missing from the TSV columns accepted",
    ),
    # columns.py
    Mutant(
        "data/columns.py",
        "        return self.table.slice(key % len(self), 1).to_pylist()[0]",
        "        return self.table.slice(key, 1).to_pylist()[0]",
        "a negative row index reads nothing",
    ),
    Mutant(
        "data/columns.py",
        "            splits[name] = Split(pa.concat_tables(tables))",
        "            splits[name] = Split(tables[0])",
        "a split saved in several files read from its first",
    ),
    # tokenizer.py
    Mutant(
        "data/tokenizer.py",
        '    settings = {"data": data_report["key"], "joint": joint, **options}',
        '    settings = {"data": data_report["key"], "joint": joint, **options, "vocab_size": 0}',
        "the tokenizer cache key misses the vocabulary size",
    ),
    Mutant(
        "data/tokenizer.py",
        '    settings = {"data": data_report["key"], "joint": joint, **options}',
        '    settings = {"joint": joint, **options}',
        "the tokenizer cache key misses the data",
    ),
    Mutant(
        "data/tokenizer.py",
        "        byte_fallback=byte_fallback,\n        normalization_rule_name=normalization_rule_name,\n        remove_extra",
        "        byte_fallback=False,\n        normalization_rule_name=normalization_rule_name,\n        remove_extra",
        "unseen characters become <unk> (no byte fallback)",
    ),
    # translate.py: the output file
    Mutant(
        "decoding/stream.py",
        '    tmp = Path(output).with_name(Path(output).name + ".part") if output else None',
        "    tmp = Path(output) if output else None",
        "translate's output written in place",
    ),
    Mutant(
        "decoding/stream.py",
        "            tmp.unlink(missing_ok=True)\n            raise",
        "            raise",
        "a failed translation leaves its partial output",
    ),
    Mutant(
        "decoding/stream.py",
        "    if not path.parent.is_dir():",
        "    if False:",
        "an output without its directory fails after decoding",
    ),
    # runtime.py
    Mutant(
        "core/runtime.py",
        "    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == torch.bfloat16)",
        "    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=False)",
        "bf16 autocast never switched on",
    ),
    Mutant(
        "core/runtime.py",
        "    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == torch.bfloat16)",
        "    return torch.autocast(device.type, dtype=torch.float16, enabled=precision == torch.bfloat16)",
        "fp16 instead of bf16",
    ),
    # resume.py and pipeline.py: refusals before the first write, failures recorded
    Mutant(
        "resume.py",
        "        if holds_run(run_dir):",
        "        if False:",
        "a new run over a finished one",
    ),
    Mutant(
        "resume.py",
        '        defining = [d for d in differ if d[0].split(".")[0] in DEFINING]',
        "        defining = []",
        "resume with another tokenizer or cell",
    ),
    Mutant(
        "resume.py",
        "        if path.exists() and not path.is_dir():",
        "        if False:",
        "a run_dir that is a file",
    ),
    Mutant(
        "pipeline.py",
        "        message = one_line(e) if isinstance(e, UserError) else os_error_line(e)\n",
        "        raise\n",
        "a sweep stops at a checkpoint it cannot write",
    ),
    # The service's limits, its cancel flag, its answers (serve.py) and the search's stop.
    Mutant(
        "serving/serve.py",
        '        "max_len_b": (int, length),',
        '        "max_len_b": (int, {"ge": 0}),',
        "an output length without an absolute bound",
    ),
    Mutant(
        "serving/serve.py",
        '        "min_len": (int, length),',
        '        "min_len": (int, {"ge": 0}),',
        "min_len without a bound",
    ),
    Mutant(
        "serving/serve.py",
        '"max_len_a": (float, {"ge": 0, "le": limits.max_output_ratio, "allow_inf_nan": False}),',
        '"max_len_a": (float, {"ge": 0, "allow_inf_nan": False}),',
        "an output length without a bound relative to the input",
    ),
    Mutant(
        "serving/serve.py",
        '"alpha": (float, {"ge": 0, "le": MAX_ALPHA, "allow_inf_nan": False}),',
        '"alpha": (float, {"ge": 0, "allow_inf_nan": True}),',
        "alpha unbounded and NaN let through",
    ),
    Mutant(
        "serving/serve.py",
        "            if all(job.done.done() for job in jobs):",
        "            if False:",
        "a request past its budget keeps the decoder busy to its end",
    ),
    Mutant(
        "serving/serve.py",
        "            elif now - began > patience and self._cheaper_waiting(cheapest, now - patience):",
        "            elif False:",
        "a costly call never gives way to cheaper requests waiting behind it",
    ),
    Mutant(
        "serving/serve.py",
        "            for search, group in sorted(groups.items(), key=lambda g: sum(j.work for j in g[1])):",
        "            for search, group in groups.items():",
        "a costly request decoded before the cheap ones gathered with it",
    ),
    Mutant(
        "serving/serve.py",
        "        stuck = took > 2 * min(limits.timeout_s, limits.max_decode_s) + 5",
        "        stuck = False",
        "/health never says stuck",
    ),
    Mutant(
        "serving/serve.py",
        "            if size > self.limit:",
        "            if size > 100 * self.limit:",
        "a streamed body past the limit read whole",
    ),
    Mutant(
        "serving/serve.py",
        '        elif kind == "string_unicode":',
        '        elif kind == "string_unicode_":',
        "a lone surrogate refused in pydantic's words, not as text that is not Unicode",
    ),
    Mutant(
        "serving/serve.py",
        '            changes["beam_size"] = max(translator.search.beam_size, asked.n_best)',
        "            pass",
        "n_best does not widen the beam",
    ),
    Mutant(
        "serving/serve.py",
        "    except SearchError as e:\n        raise Refused(422, one_line(e)) from None",
        "    except KeyError as e:\n        raise Refused(422, one_line(e)) from None",
        "settings that do not go together answered 500",
    ),
    Mutant(
        "serving/serve.py",
        '        return JSONResponse({"error": message}, status_code=e.status_code, headers=e.headers)',
        "        raise e",
        "a body that nests too deep answered as plain text",
    ),
    Mutant(
        "serving/serve.py",
        '        if kind in ("too_long", "string_too_long") and name.startswith("text"):\n            status = 413',
        '        if kind in ("too_long", "string_too_long") and name.startswith("text"):\n            status = 422',
        "too many lines answered 422, not 413",
    ),
    Mutant(
        "decoding/search.py",
        "    for t in range(steps):\n        _check(stop)\n",
        "    for t in range(steps):\n",
        "greedy search never asks whether to stop",
    ),
    Mutant(
        "decoding/search.py",
        "        _check(stop)\n        n = beams.active.shape[0]\n",
        "        n = beams.active.shape[0]\n",
        "beam search never asks whether to stop",
    ),
    Mutant(
        "core/search_options.py",
        "        if self.alpha > MAX_ALPHA:",
        "        if False:",
        "an alpha whose length penalty overflows",
    ),
    Mutant(
        "core/search_options.py",
        "                or not math.isfinite(value)\n",
        "",
        "a NaN or infinite search setting",
    ),
    Mutant(
        "core/search_options.py",
        '            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):',
        "            if False:",
        "a search length that is not a whole number",
    ),
    # A finished run and existing files left alone (export.py, cli.py).
    Mutant(
        "serving/export.py",
        "    if out.exists() and not overwrite:",
        "    if False:",
        "an existing out replaced unasked",
    ),
    Mutant(
        "serving/export.py",
        "        if (place / CONFIG_FILE).is_file():",
        "        if False:",
        "an export written into a run directory",
    ),
    Mutant(
        "serving/export.py",
        "    if out.is_dir() and (out / CONFIG_FILE).is_file() and not (out / MANIFEST).is_file():",
        "    if False:",
        "a run directory replaced by an export",
    ),
    Mutant(
        "cli.py",
        "        if run_dir is not None and resume.holds_run(run_dir):",
        "        if False:",
        "nmt-data and nmt-spm write into a trained run",
    ),
    Mutant(
        "cli.py",
        "        run_dir.mkdir(parents=True, exist_ok=True)\n    except OSError as e:",
        "        pass\n    except OSError as e:",
        "a run_dir that cannot be made reaches Hydra",
    ),
    Mutant(
        "cli.py",
        "        except BrokenPipeError:",
        "        except ZeroDivisionError:",
        "a reader that leaves early gets a traceback",
    ),
    Mutant(
        "cli.py",
        "    signal.signal(signal.SIGTERM, stop)\n",
        "",
        "a stopped service leaves its unpacked model behind",
    ),
    Mutant(
        "cli.py",
        "        if holding[0]:",
        "        if False:",
        "a SIGTERM while uvicorn sets up logging is raised under logging's locks",
        ("test_cli.py::test_a_sigterm_while_uvicorn_sets_up_logging_stops_the_service_cleanly",),
    ),
]


def snippet_problems(mutants: list[Mutant], tests: Path) -> list[str]:
    """Every mutant whose snippet is not in its module exactly once, and every test it names
    that does not exist: a stale mutant would measure nothing, so all of them are listed before
    any mutant runs."""
    problems = []
    for m in mutants:
        path = ROOT / "nmt" / m.module
        count = path.read_text().count(m.old) if path.is_file() else 0
        if count != 1:
            problems.append(f"{m.module}: snippet for '{m.what}' found {count} times")
        for test in m.tests or TESTS.get(m.module, ()):
            file, _, name = test.partition("::")
            name = name.split("[")[0]  # a parametrized test's id: its function
            if (
                not (tests / file).is_file()
                or name
                and f"def {name}(" not in (tests / file).read_text()
            ):
                problems.append(f"{m.module}: '{m.what}' names {test}, which does not exist")
        if m.module not in TESTS:
            problems.append(f"{m.module}: no entry in TESTS")
    return problems


def run_tests(files: list[str], tests: Path, timeout: int, workers: str = "0") -> bool:
    """True when the tests pass (the mutant survives)."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        workers,
        *(str(tests / f) for f in files),
    ]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False  # a mutant that hangs the tests is caught
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    by_name = {Path(m).stem: m for m in TESTS}  # a module by its name: fused for model/fused.py
    parser.add_argument("--modules", default=",".join(by_name))
    parser.add_argument("--tests", type=Path, default=ROOT / "tests", help="the test directory")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutant")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the results as JSON, after every mutant"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the mutants --out already records as killed (not those killed by the timeout)",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that every snippet matches; run nothing"
    )
    parser.add_argument(
        "--what", default="", help="only the mutants whose description contains this text"
    )
    args = parser.parse_args()
    # A TERM (timeout, CI) must still restore the tree: let the finally below run.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    chosen = [by_name.get(m, m) for m in args.modules.split(",")]
    unknown = [m for m in chosen if m not in TESTS]
    if unknown:
        sys.exit(f"mutate: unknown module {unknown[0]}; choose from {', '.join(by_name)}")
    mutants = [m for m in MUTANTS if m.module in chosen and args.what in m.what]
    if args.resume:
        if args.out is None:
            sys.exit("mutate: --resume goes on from the results of --out; name it")
        earlier = json.loads(args.out.read_text()) if args.out.is_file() else []
        settled = {
            (r["module"], r["what"])
            for r in earlier
            if r["killed"] and r.get("seconds", 0) < args.timeout
        }
        mutants = [m for m in mutants if (m.module, m.what) not in settled]
        results = [r for r in earlier if (r["module"], r["what"]) in settled]
        print(f"mutate: {len(settled)} mutants settled in {args.out}, {len(mutants)} to run")
    else:
        results = []
    problems = snippet_problems(mutants, args.tests)
    if problems:
        print("\n".join(f"mutate: {p}" for p in problems), file=sys.stderr)
        sys.exit(f"mutate: {len(problems)} stale mutants; update scripts/mutate.py")
    if args.check:
        print(f"mutate: {len(mutants)} mutants of {len(chosen)} modules, every snippet found once")
        return

    # Every test a mutant will run passes on the unchanged tree (one run, on every core).
    needed = sorted({t for m in mutants for t in (m.tests or TESTS[m.module])})
    if needed and not run_tests(needed, args.tests, args.timeout * 4, workers="auto"):
        sys.exit(f"mutate: tests fail without any mutant ({' '.join(needed)}); fix them first")
    for mutant in mutants:
        path = ROOT / "nmt" / mutant.module
        original = path.read_text()
        start = time.monotonic()
        try:
            path.write_text(original.replace(mutant.old, mutant.new))
            survived = run_tests(
                list(mutant.tests or TESTS[mutant.module]), args.tests, args.timeout
            )
        finally:
            path.write_text(original)
        seconds = time.monotonic() - start
        status = "SURVIVED" if survived else "killed"
        print(f"{mutant.module:16} {status:8} {seconds:5.1f}s  {mutant.what}", flush=True)
        results.append(
            {
                "module": mutant.module,
                "what": mutant.what,
                "killed": not survived,
                "seconds": round(seconds, 1),
            }
        )
        if args.out:
            write_json(args.out, results)
    print()
    for module in chosen:
        mine = [r for r in results if r["module"] == module]
        killed = sum(r["killed"] for r in mine)
        print(f"score {module}: {killed}/{len(mine)} killed")
    total = sum(r["killed"] for r in results)
    print(f"score total: {total}/{len(results)} killed")
    if not all(r["killed"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
