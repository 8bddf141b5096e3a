"""Search settings chosen on validation: decode a split with every beam size and length
penalty of a grid, keep the best by BLEU, and record it in the run directory (``search.json``)
where ``search=tuned`` finds it for later decoding (``make translate``, ``make eval``)."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from nmt.core.errors import UserError
from nmt.core.rundir import SEARCH_FILE, write_json
from nmt.data import prepare as data
from nmt.decoding.translator import Translator
from nmt.scoring.evaluate import check_split, split_pairs
from nmt.scoring.metrics import score

log = logging.getLogger(__name__)

__all__ = ["choose", "choose_split", "edge_gains", "grid", "on_edge", "tune_search"]


def choose_split(run_dir: Path, split: str | None, *, allow_test: bool) -> str:
    """The split to tune on: the run's validation split unless named. A test split is refused
    unless ``allow_test``: settings chosen on a test set make its score optimistic."""
    report = data.read_report(run_dir / data.ARTIFACT)
    if report is None:
        raise UserError(
            f"{run_dir / data.ARTIFACT}: no prepared data; is {run_dir} a training run directory?"
        )
    if split is None:
        return report["valid_split"]
    if split in report.get("test_splits", []) and not allow_test:
        raise UserError(
            f"split={split} is a test split of {run_dir}: search settings tuned on it make its "
            f"scores optimistic; tune on {report['valid_split']} (the default), or add "
            "allow_test=true if that is what you mean"
        )
    check_split(run_dir, split)  # one the run lacks: refused before the model loads
    return split


def grid(beam_sizes: list[int], alphas: list[float]) -> list[tuple[int, float]]:
    """(beam size, alpha) pairs to try, smaller beams first. A beam of one is greedy search,
    which has no length penalty to vary: it is tried once, with alpha 0."""
    if not beam_sizes or not alphas:
        raise ValueError("beam_sizes and alphas must each name at least one value")
    pairs = []
    for beam in sorted(set(beam_sizes)):
        pairs += [(1, 0.0)] if beam == 1 else [(beam, a) for a in sorted(set(alphas))]
    return pairs


def on_edge(chosen: tuple[int, float], beam_sizes: list[int], alphas: list[float]) -> list[str]:
    """The grid's upper bounds the chosen setting sits on ("beam_size", "alpha"): there a larger
    value was not tried and might be better. A bound counts only where the grid varied it (two
    or more values), and alpha only where the chosen beam has a length penalty (beam > 1)."""
    beam, alpha = chosen
    edges = []
    if len(set(beam_sizes)) > 1 and beam == max(beam_sizes):
        edges.append("beam_size")
    if beam > 1 and len(set(alphas)) > 1 and alpha == max(alphas):
        edges.append("alpha")
    return edges


def choose(rows: list[dict]) -> dict:
    """The row of highest BLEU; of equals the first, which the grid orders smaller beam, then
    smaller alpha."""
    return max(rows, key=lambda r: r["bleu"])


def edge_gains(rows: list[dict], chosen: tuple[int, float], edges: list[str]) -> dict[str, float]:
    """For each bound the chosen setting sits on, how much BLEU it gains over the best setting
    below that bound: any smaller beam, or the same beam with a smaller penalty. A gain near
    zero says validation is flat there, and a wider grid has little to find."""
    beam, alpha = chosen
    at = next(r["bleu"] for r in rows if (r["beam_size"], r["alpha"]) == (beam, alpha))
    gains = {}
    for name in edges:
        if name == "beam_size":
            below = [r["bleu"] for r in rows if r["beam_size"] < beam]
        else:
            below = [r["bleu"] for r in rows if r["beam_size"] == beam and r["alpha"] < alpha]
        gains[name] = round(at - max(below), 2)
    return gains


def tune_search(
    translator: Translator,
    run_dir: Path,
    split: str,
    beam_sizes: list[int],
    alphas: list[float],
    *,
    checkpoint: str,
    progress: bool | None = None,
) -> dict:
    """Decode ``split`` with each pair of the grid; write and return ``search.json``: every
    pair's BLEU and chrF, and the chosen one (highest BLEU; on a tie, the smaller beam and
    alpha, which come first)."""
    sources, refs = split_pairs(run_dir, split)
    base = translator.search
    rows = []
    pairs = grid(beam_sizes, alphas)
    for beam, alpha in tqdm(
        pairs, desc=f"search on {split}", disable=None if progress is None else not progress
    ):
        search = base.replace(beam_size=beam, alpha=alpha, n_best=1)
        scores = score(translator.translate(sources, search=search), refs)
        rows.append(
            {"beam_size": beam, "alpha": alpha, "bleu": scores["bleu"], "chrf": scores["chrf"]}
        )
        log.info(
            "beam %d alpha %.2f: BLEU %.2f chrF %.2f", beam, alpha, scores["bleu"], scores["chrf"]
        )
    best = choose(rows)
    chosen = (best["beam_size"], best["alpha"])
    edges = on_edge(chosen, beam_sizes, alphas)
    gains = edge_gains(rows, chosen, edges)
    result = {
        "split": split,
        "checkpoint": checkpoint,
        "models": translator.sources,
        "chosen": {"beam_size": best["beam_size"], "alpha": best["alpha"]},
        "on_edge": edges,
        "edge_gains": gains,
        "bleu_signature": scores["bleu_signature"],
        "grid": rows,
    }
    write_json(run_dir / SEARCH_FILE, result)
    print(
        f"{run_dir.name} {split}: best beam_size={best['beam_size']} alpha={best['alpha']} "
        f"(BLEU {best['bleu']:.2f}, {len(rows)} settings tried) -> {run_dir / SEARCH_FILE}; "
        "decode with search=tuned"
    )
    if edges:
        larger = " and ".join(f"{name}s" if name == "alpha" else "beam_sizes" for name in edges)
        over = ", ".join(f"+{gains[name]:.2f} BLEU over a smaller {name}" for name in edges)
        print(
            f"note: the best is the largest {' and '.join(edges)} tried ({over}); larger values "
            f"may do better (widen the grid: {larger}=[...])"
        )
    return result
