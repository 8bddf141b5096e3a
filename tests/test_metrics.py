from __future__ import annotations

import pytest
from conftest import multi30k_lines

from nmt.scoring.metrics import check_streams, lt_tokenize, paired_bootstrap, score


def test_text_against_itself_is_100():
    refs = multi30k_lines("val", "de", 50)
    s = score(refs, refs, ter=True, lowercase=True)
    assert s["bleu"] == pytest.approx(100.0) and s["chrf"] == pytest.approx(100.0)
    assert s["ter"] == pytest.approx(0.0) and s["bleu_lc"] == pytest.approx(100.0)
    assert s["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.")
    assert "case:lc" in s["bleu_lc_signature"]


def test_known_score():
    hyps = ["Ein Hund läuft im Park.", "Zwei Kinder spielen."]
    refs = ["Ein Hund rennt im Park.", "Zwei Kinder spielen draußen."]
    import sacrebleu

    expected = sacrebleu.metrics.BLEU().corpus_score(hyps, [refs]).score
    assert score(hyps, refs)["bleu"] == pytest.approx(expected)
    assert 0 < expected < 100


def test_lt_bleu_is_bleu_on_lowercased_moses_tokens():
    """LT: Moses punctuation normalisation („“ -> ""), tokenization with hyphens split,
    lowercase; then BLEU on those tokens. The pair differs only in case, quotes and spacing of
    punctuation: 100 in LT, less in sacreBLEU's cased 13a BLEU."""
    hyp = ["Ein well-known Hund, „Rex“, läuft!"]
    ref = ['ein Well-known hund , "Rex", läuft !']
    assert lt_tokenize(hyp, "de") == ['ein well @-@ known hund , " rex " , läuft !']
    assert lt_tokenize(ref, "de") == lt_tokenize(hyp, "de")
    s = score(hyp, ref, lt_lang="de")
    assert s["bleu_lt"] == pytest.approx(100.0) and s["bleu"] < 100
    assert s["bleu_lt_signature"].startswith("LT|lang:de|norm+tok:sacremoses-")
    assert "tok:none" in s["bleu_lt_signature"]
    # One word wrong of eleven tokens: below 100, and the same as BLEU on the tokens by hand.
    import sacrebleu

    wrong = ["Ein well-known Katze, „Rex“, läuft!"]
    expected = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(
        lt_tokenize(wrong, "de"), [lt_tokenize(ref, "de")]
    )
    lt = score(wrong, ref, lt_lang="de")["bleu_lt"]
    assert lt == pytest.approx(expected.score) and lt < 100
    assert "bleu_lt" not in score(hyp, ref)


def test_wrong_nesting_and_counts_are_refused():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        score(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="one per hypothesis"):
        check_streams(["a", "b"], [["a", "b"]])


def test_paired_bootstrap_comes_from_sacrebleu():
    refs = multi30k_lines("val", "de", 60)
    good = refs[:50] + ["falsch"] * 10
    bad = [" ".join(r.split()[:3]) for r in refs]
    out = paired_bootstrap({"good": good, "bad": bad}, refs, samples=200)
    assert out["good"]["bleu_p"] is None
    assert out["bad"]["bleu_p"] < 0.05 and out["bad"]["bleu"] < out["good"]["bleu"]
    assert "|bs:200|seed:12345|" in out["signatures"]["bleu"]


def test_each_metric_is_sacrebleus_default():
    """chrF (not chrF++), TER case-insensitive as sacreBLEU's default, on cased text."""
    import sacrebleu

    hyps = ["ein Hund läuft im Park.", "Zwei kinder spielen Fußball."]
    refs = ["Ein Hund rennt im Park.", "Zwei Kinder spielen draußen Fußball."]
    s = score(hyps, refs, ter=True, lowercase=True)
    assert s["chrf"] == pytest.approx(sacrebleu.metrics.CHRF().corpus_score(hyps, [refs]).score)
    assert s["ter"] == pytest.approx(sacrebleu.metrics.TER().corpus_score(hyps, [refs]).score)
    assert s["chrf"] != pytest.approx(
        sacrebleu.metrics.CHRF(word_order=2).corpus_score(hyps, [refs]).score
    )
    assert s["ter"] != pytest.approx(
        sacrebleu.metrics.TER(case_sensitive=True).corpus_score(hyps, [refs]).score
    )


def test_paired_bootstrap_reports_each_metric_under_its_name():
    refs = multi30k_lines("val", "de", 40)
    bad = [" ".join(r.split()[:4]) for r in refs]
    out = paired_bootstrap({"ref": refs, "bad": bad}, refs, samples=50)
    assert out["bad"]["bleu"] == pytest.approx(score(bad, refs)["bleu"])
    assert out["bad"]["chrf"] == pytest.approx(score(bad, refs)["chrf"])
