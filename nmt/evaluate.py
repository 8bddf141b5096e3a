"""Scoring with sacreBLEU on detokenized, cased text against the raw references.

One path for validation and test: hypotheses are SentencePiece-decoded text, references are the
untouched corpus lines, and every score travels with its sacreBLEU signature. Beside it, the
"LT" BLEU of the Multi30k literature (``lt_bleu``): lowercased, Moses-tokenized text, which is
not sacreBLEU and is labelled so. Besides the metrics: a split translated and scored
(``eval/<split>-<checkpoint>-<search>/``), and hypothesis files scored and compared
(``eval/<split>-files/``).
"""

from __future__ import annotations

import json
import logging
import time
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest

from nmt import data
from nmt.errors import UserError
from nmt.rundir import SEARCH_FILE, write_json, write_text
from nmt.runtime import describe_device, precision_name, provenance

if TYPE_CHECKING:
    from nmt.translate import Translator

log = logging.getLogger(__name__)


class EvalError(UserError):
    """A split the run lacks, or hypothesis files that do not fit its references."""


def check_streams(hyps: list[str], refs: list[str]) -> None:
    """One reference string per hypothesis: the nesting sacreBLEU silently gets wrong."""
    if not isinstance(hyps, list) or not all(isinstance(h, str) for h in hyps):
        raise TypeError("hypotheses must be a list of strings")
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise TypeError("references must be a list of strings, one per hypothesis")
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


@cache
def _moses(lang: str):
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    return MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)


def lt_tokenize(lines: list[str], lang: str) -> list[str]:
    """The tokenization of "LT" scores (Caglayan et al., nmtpy; WMT multimodal task reports):
    Moses punctuation normalisation, Moses tokenization with aggressive hyphen splitting
    (``well-known`` -> ``well @-@ known``), lowercased."""
    normalizer, tokenizer = _moses(lang)
    return [
        tokenizer.tokenize(
            normalizer.normalize(line), aggressive_dash_splits=True, escape=False, return_str=True
        ).lower()
        for line in lines
    ]


def lt_bleu(hyps: list[str], refs: list[str], lang: str) -> dict:
    """BLEU on ``lt_tokenize``d text (sacreBLEU's BLEU with its own tokenization off), as the
    Multi30k papers report it. Not comparable with sacreBLEU's cased, 13a-tokenized BLEU; the
    signature says which it is."""
    check_streams(hyps, refs)
    metric = BLEU(tokenize="none", force=True)
    value = metric.corpus_score(lt_tokenize(hyps, lang), [lt_tokenize(refs, lang)]).score
    signature = (
        f"LT|lang:{lang}|norm+tok:sacremoses-{version('sacremoses')}|hyphens:split|lc:yes"
        f" + {metric.get_signature()}"
    )
    return {"bleu_lt": value, "bleu_lt_signature": signature}


def score(
    hyps: list[str],
    refs: list[str],
    *,
    ter: bool = False,
    lowercase: bool = False,
    lt_lang: str | None = None,
) -> dict:
    """Corpus BLEU and chrF (and TER, lowercased BLEU, LT BLEU in ``lt_lang`` if asked) with
    their signatures."""
    check_streams(hyps, refs)
    streams = [refs]  # a list of reference streams; ours has one
    bleu, chrf = BLEU(), CHRF()
    out = {
        "bleu": bleu.corpus_score(hyps, streams).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf": chrf.corpus_score(hyps, streams).score,
        "chrf_signature": str(chrf.get_signature()),
        "sentences": len(hyps),
    }
    if ter:
        metric = TER()
        out["ter"] = metric.corpus_score(hyps, streams).score
        out["ter_signature"] = str(metric.get_signature())
    if lowercase:
        metric = BLEU(lowercase=True)
        out["bleu_lc"] = metric.corpus_score(hyps, streams).score
        out["bleu_lc_signature"] = str(metric.get_signature())
    if lt_lang:
        out.update(lt_bleu(hyps, refs, lt_lang))
    return out


def paired_bootstrap(
    systems: dict[str, list[str]], refs: list[str], *, samples: int = 1000
) -> dict[str, dict]:
    """sacreBLEU's paired bootstrap resampling of BLEU and chrF; the first system is the baseline.

    Returns per system: bleu, chrf, their bootstrap means and 95% intervals, and p-values
    against the baseline (None for the baseline itself); plus the signatures.
    """
    for hyps in systems.values():
        check_streams(hyps, refs)
    test = PairedTest(
        named_systems=list(systems.items()),
        metrics={"bleu": BLEU(), "chrf": CHRF()},
        references=[refs],
        test_type="bs",
        n_samples=samples,
    )
    signatures, results = test()
    # sacreBLEU names the columns after the metrics ("BLEU", "chrF2"); ours are bleu and chrf.
    columns = dict(zip(("bleu", "chrf"), [k for k in results if k != "System"], strict=True))
    out = {}
    for i, name in enumerate(results["System"]):
        row = {}
        for metric, column in columns.items():
            r = results[column][i]
            row.update(
                {
                    metric: _num(r.score),
                    f"{metric}_mean": _num(r.mean),
                    f"{metric}_ci": _num(r.ci),
                    f"{metric}_p": _num(r.p_value),
                }
            )
        out[name] = row
    out["signatures"] = {metric: str(signatures[column]) for metric, column in columns.items()}
    return out


def _num(value) -> float | None:
    """sacreBLEU hands back numpy scalars; JSON wants plain floats."""
    return None if value is None else float(value)


# --------------------------------------------------------------------------------------------
# A run's splits


def summary(name: str, split: str, s: dict) -> str:
    """The scores with the BLEU signature; the LT BLEU on a line of its own, labelled."""
    line = (
        f"{name} {split}: BLEU {s['bleu']:.2f} chrF {s['chrf']:.2f} TER {s['ter']:.2f} "
        f"(BLEU lowercased {s['bleu_lc']:.2f}) | {s['bleu_signature']}"
    )
    if "bleu_lt" in s:
        line += (
            f"\n{name} {split}: LT BLEU {s['bleu_lt']:.2f} (lowercased, Moses-tokenized; "
            f"not sacreBLEU) | {s['bleu_lt_signature']}"
        )
    return line


def split_pairs(run_dir: Path, split: str) -> tuple[list[str], list[str]]:
    """(sources, references) of a split of the run's corpus, raw text."""
    corpus, report = data.load_corpus(run_dir)
    if split not in corpus:
        raise EvalError(
            f"split {split!r} is not in {run_dir / data.ARTIFACT} (has {', '.join(corpus)})"
        )
    rows = corpus[split]["translation"]
    return [r[report["src"]] for r in rows], [r[report["tgt"]] for r in rows]


def tuned_on(run_dir: Path, search_name: str) -> dict:
    """``{"tuned_on": split}`` for ``search=tuned`` (the split nmt-tune-search chose it on)."""
    if search_name != "tuned":
        return {}
    return {"tuned_on": json.loads((Path(run_dir) / SEARCH_FILE).read_text())["split"]}


def evaluate_split(
    translator: Translator,
    run_dir: Path,
    split: str,
    *,
    checkpoint: str,
    search_name: str,
    attention_plots: int = 0,
) -> dict:
    """Translate a split, score it, write eval/<split>-<checkpoint>-<search>/{hyps.txt,
    scores.json} (and attention heatmaps of the first ``attention_plots`` sentences)."""
    sources, refs = split_pairs(run_dir, split)
    start = time.perf_counter()
    results = translator.translate_full(sources)
    seconds = time.perf_counter() - start
    hyps = [r.texts[0] for r in results]
    scores = score(hyps, refs, ter=True, lowercase=True, lt_lang=translator.tgt_lang)
    out_dir = run_dir / "eval" / f"{split}-{checkpoint}-{search_name}"
    write_text(out_dir / "hyps.txt", "".join(h + "\n" for h in hyps))
    generated = sum(len(r.hyps[0].tokens) + 1 for r in results)
    scores.update(
        split=split,
        src=translator.src_lang,
        tgt=translator.tgt_lang,
        checkpoint=checkpoint,
        models=translator.sources,  # run directory, checkpoint and training steps of each model
        search={
            "name": search_name,
            **translator.search.as_dict(),
            **tuned_on(run_dir, search_name),
        },
        seconds=round(seconds, 2),
        sentences_per_s=round(len(hyps) / seconds, 1),
        generated_tokens_per_s=round(generated / seconds, 1),
        # Decoded in bf16 or fp32, and where: the speed and (slightly) the scores depend on both.
        precision=precision_name(translator.precision),
        hardware=describe_device(translator.device),
        provenance=provenance(),
    )
    write_json(out_dir / "scores.json", scores)
    if scores["search"].get("tuned_on") == split:
        log.warning("the search was tuned on %s itself: its scores here are optimistic", split)
    if attention_plots:
        # Imported here: matplotlib (and scipy through nmt.stats) cost every nmt-* command about a
        # second at start-up, and only this step draws.
        from nmt.plots import plot_attention
    for i, result in enumerate(results[:attention_plots]):
        hyp = result.hyps[0]
        if hyp.attn is not None:
            plot_attention(
                hyp.attn,
                result.src_pieces,
                translator.target_pieces(hyp),
                out_dir / "attention" / f"{i:04d}.png",
                title=result.texts[0][:80],
            )
    print(summary(f"{run_dir.name} {search_name}", split, scores))
    log.info("wrote %s (%.1f s, %.1f sentences/s)", out_dir, seconds, len(hyps) / seconds)
    return scores


def score_files(run_dir: Path, split: str, paths: list[str], *, samples: int) -> dict:
    """Score hypothesis files against a split's references; with two or more, the paired
    bootstrap of each against the first. Writes eval/<split>-files/scores.json."""
    repeated = sorted({p for p in paths if list(paths).count(p) > 1})
    if repeated:
        raise EvalError(f"hyps names {', '.join(repeated)} more than once; compare different files")
    _, refs = split_pairs(run_dir, split)
    lang = data.read_report(run_dir / data.ARTIFACT)["tgt"]
    systems = {}
    for path in paths:
        hyps = data.read_lines(path)
        if len(hyps) != len(refs):
            raise EvalError(
                f"{path}: {len(hyps)} lines but split {split} has {len(refs)} references"
            )
        systems[path] = hyps
    results: dict = {
        path: score(h, refs, ter=True, lowercase=True, lt_lang=lang) for path, h in systems.items()
    }
    for path, scores in results.items():
        print(summary(path, split, scores))
    if len(systems) > 1:
        paired = paired_bootstrap(systems, refs, samples=samples)
        for path in paths[1:]:
            r = paired[path]
            print(
                f"{path} vs {paths[0]}: BLEU {r['bleu']:.2f} (p = {r['bleu_p']:.4f}), "
                f"chrF {r['chrf']:.2f} (p = {r['chrf_p']:.4f}) | paired bootstrap, "
                f"{samples} samples"
            )
        results["paired_bootstrap"] = paired
    write_json(run_dir / "eval" / f"{split}-files" / "scores.json", results)
    return results
