"""Scores with sacreBLEU on detokenized, cased text against the raw references, each with its
signature; the paired bootstrap of systems on one test set; and the "LT" BLEU of the Multi30k
literature (``lt_bleu``: lowercased, Moses-tokenized text), which is not sacreBLEU and is
labelled so. Everything that scores (validation, evaluation, search tuning, the report) scores
here, so one path gives every figure.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version

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
    systems: dict[str, list[str]], refs: list[str], *, samples: int
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
