"""Scoring with sacreBLEU on detokenized, cased text against the raw references.

One path for validation and test: hypotheses are SentencePiece-decoded text, references are the
untouched corpus lines, and every score travels with its sacreBLEU signature.
"""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest


def check_streams(hyps: list[str], refs: list[str]) -> None:
    """One reference string per hypothesis: the nesting sacreBLEU silently gets wrong."""
    if not isinstance(hyps, list) or not all(isinstance(h, str) for h in hyps):
        raise TypeError("hypotheses must be a list of strings")
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise TypeError("references must be a list of strings, one per hypothesis")
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


def score(hyps: list[str], refs: list[str], *, ter: bool = False, lowercase: bool = False) -> dict:
    """Corpus BLEU and chrF (and TER, lowercased BLEU if asked) with their signatures."""
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
        named_systems=list(systems.items()), metrics={"bleu": BLEU(), "chrf": CHRF()},
        references=[refs], test_type="bs", n_samples=samples,
    )  # fmt: skip
    signatures, results = test()
    # sacreBLEU names the columns after the metrics ("BLEU", "chrF2"); ours are bleu and chrf.
    columns = dict(zip(("bleu", "chrf"), [k for k in results if k != "System"], strict=True))
    out = {}
    for i, name in enumerate(results["System"]):
        row = {}
        for metric, column in columns.items():
            r = results[column][i]
            row.update({metric: _num(r.score), f"{metric}_mean": _num(r.mean),
                        f"{metric}_ci": _num(r.ci), f"{metric}_p": _num(r.p_value)})  # fmt: skip
        out[name] = row
    out["signatures"] = {metric: str(signatures[column]) for metric, column in columns.items()}
    return out


def _num(value) -> float | None:
    """sacreBLEU hands back numpy scalars; JSON wants plain floats."""
    return None if value is None else float(value)
