"""Evaluation of a run: a split translated and scored (``eval/<split>-<checkpoint>-<search>/``),
and hypothesis files scored and compared (``eval/<split>-files/``). The scores themselves come
from ``nmt.scoring.metrics``; pictures are drawn by the caller that wants them (``nmt.report.plots``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from nmt.core.errors import UserError
from nmt.core.provenance import provenance
from nmt.core.rundir import SEARCH_FILE, write_json, write_text
from nmt.core.runtime import describe_device, precision_name
from nmt.data import prepare as data
from nmt.data.columns import read_splits, split_names
from nmt.scoring.metrics import paired_bootstrap, score, summary

if TYPE_CHECKING:
    from nmt.decoding.translator import Translation, Translator

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """A split translated and scored: its scores.json, the translations, where they went."""

    scores: dict
    translations: list[Translation]
    out_dir: Path


class EvalError(UserError):
    """A split the run lacks, or hypothesis files that do not fit its references."""


# --------------------------------------------------------------------------------------------
# A run's splits


def check_split(run_dir: Path, split: str) -> dict:
    """The data stage's report of the run's corpus, once ``split`` is known to be in it: an
    ``EvalError`` naming the splits it has otherwise (read from the index: a command refuses a
    split the run lacks before its model loads)."""
    report = data.read_report(Path(run_dir) / data.ARTIFACT)
    if report is None:
        data.load_corpus(run_dir)  # its error: no prepared data
    names = split_names(Path(run_dir) / data.ARTIFACT)
    if split not in names:
        raise EvalError(
            f"split {split!r} is not in {Path(run_dir) / data.ARTIFACT} (has {', '.join(names)})"
        )
    return report


def split_pairs(run_dir: Path, split: str) -> tuple[list[str], list[str]]:
    """(sources, references) of a split of the run's corpus, raw text (read with pyarrow alone:
    the evaluation that ends a training run does not import ``datasets`` either)."""
    report = check_split(run_dir, split)
    rows = read_splits(Path(run_dir) / data.ARTIFACT)[split]["translation"]
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
    progress: bool | None = None,
) -> Evaluation:
    """Translate a split, score it, write eval/<split>-<checkpoint>-<search>/{hyps.txt,
    scores.json}; the translations come back too (with attention, for heatmaps). ``progress``:
    a bar of sentences translated (None: when stderr is a terminal)."""
    sources, refs = split_pairs(run_dir, split)
    start = time.perf_counter()
    bar = tqdm(
        total=len(sources),
        desc=f"translating {split}",
        unit=" sentences",
        disable=None if progress is None else not progress,
    )
    with bar:
        results = translator.translate_full(sources, done=bar.update)
    seconds = time.perf_counter() - start
    hyps = [r.texts[0] for r in results]
    scores = score(hyps, refs, ter=True, lowercase=True, lt_lang=translator.tgt_lang)
    backend, quantize = translator.backend
    # Another backend's output beside PyTorch's, never over it (the report reads PyTorch's).
    variant = "".join(f"-{v}" for v in (backend, quantize) if v not in ("torch", "none"))
    out_dir = run_dir / "eval" / f"{split}-{checkpoint}-{search_name}{variant}"
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
        backend={"name": backend, "quantize": quantize},
        hardware=describe_device(translator.device),
        provenance=provenance(),
    )
    write_json(out_dir / "scores.json", scores)
    if scores["search"].get("tuned_on") == split:
        log.warning("the search was tuned on %s itself: its scores here are optimistic", split)
    print(summary(f"{run_dir.name} {search_name}", split, scores))
    log.info("wrote %s (%.1f s, %.1f sentences/s)", out_dir, seconds, len(hyps) / seconds)
    return Evaluation(scores=scores, translations=results, out_dir=out_dir)


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
