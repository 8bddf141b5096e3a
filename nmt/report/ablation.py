"""The ablation report: finished runs -> a Markdown table, results.json and the plots.

Runs (``runs.py``) are grouped into rows by (cell, attention, other settings); seeds become
mean ± std, and each cell is compared with the baseline cell by sacreBLEU's paired bootstrap.
The table of differences sets each pair of cells that differ in one thing (conf/report.yaml)
against each other in every setting that has both.
The test split and search are the sweep's own (``final_eval`` and ``search`` of its runs).
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from nmt.core.compose import compose
from nmt.core.rundir import CONFIG_FILE, DONE_FILE, TUNING_FILE, write_json, write_text
from nmt.report.clock import sweep_clock
from nmt.report.origins import sweep_origins
from nmt.report.plots import PLOTS, TUNING_PLOT, plot_report, plot_tuning
from nmt.report.runs import (
    BenchSpeeds,
    ReportError,
    Run,
    analyze_run,
    find_runs,
    load_run,
    paired_pvalues,
    read_bench,
    run_order,
)
from nmt.report.runs import (
    context as run_context,
)
from nmt.report.tables import markdown_table, report_markdown
from nmt.scoring import evaluate, stats
from nmt.training.progress import VALIDATION_STOPS

log = logging.getLogger(__name__)

__all__ = ["PLOTS", "ReportError", "Run", "build_rows", "markdown_table", "write_report"]


def _minutes_to_best(run: Run, bench: BenchSpeeds | None = None) -> float | None:
    """Minutes to the run's best checkpoint: its own clock, or at the benchmark's speed."""
    if bench is not None:
        return bench.minutes_to_best(run)
    best = run.done.get("best_step")
    for row in run.metrics:
        if int(row["step"]) == best:
            return row["seconds"] / 60
    return None


def _speed(runs: list[Run], bench: BenchSpeeds | None) -> float | None:
    """Training target tokens/s of a row: the benchmark's, or the mean of its runs' own."""
    if bench is not None:
        return _mean(bench.speed(r) for r in runs)
    return _mean(r.done.get("train_tokens_per_s") for r in runs)


def _groups(runs: list[Run]) -> dict[tuple[str, frozenset], list[Run]]:
    """Rows of the table: runs sharing cell and context (everything but cell, recipe and seed)."""
    rows: dict[tuple[str, frozenset], list[Run]] = {}
    for run in sorted(runs, key=run_order):
        rows.setdefault((run.cell, run_context(run)), []).append(run)
    return rows


def _variant(rows: dict, cell: str, context: frozenset) -> str:
    """What sets this row apart from the rows of the same cell and attention (other settings)."""
    others = [c for (k, c) in rows if k == cell and c != context]
    differing = sorted({k for c in others for k, _ in context ^ c if k != "model.attention"})
    return ",".join(f"{k}={json.loads(dict(context)[k])}" for k in differing if k in dict(context))


def plot_groups(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """The report's rows as the plots draw them: a label and the row's finished runs."""
    rows = _groups(runs)
    out = []
    for (cell, context), group in rows.items():
        variant = _variant(rows, cell, context)
        label = f"{group[0].label} ({variant})" if variant else group[0].label
        out.append((label, [r for r in group if r.finished]))
    return out


class SentenceStats:
    """sacreBLEU's per-sentence statistics of each run's test translations, computed once."""

    def __init__(self) -> None:
        self.cached: dict[tuple[str, str], object] = {}

    def __call__(self, metric: str, group: list[Run]) -> list:
        for r in group:
            if (metric, str(r.path)) not in self.cached:
                self.cached[metric, str(r.path)] = stats.sentence_statistics(metric, r.hyps, r.refs)
        return [self.cached[metric, str(r.path)] for r in group]


def seed_comparisons(
    runs: list[Run], baseline: str, samples: int, sentence_stats: SentenceStats | None = None
) -> dict:
    """Each row against the baseline cell's row of the same context, over all their seeds:
    {(cell, context): {"bleu": seed_bootstrap, "chrf": seed_bootstrap, "welch_bleu_p": p}}."""
    groups = _groups([r for r in runs if r.finished and r.hyps is not None])
    sentence_stats = sentence_stats or SentenceStats()
    out = {}
    for (cell, context), group in groups.items():
        base = groups.get((baseline, context))
        if cell == baseline or not base:
            continue
        out[cell, context] = {
            metric: stats.seed_bootstrap(
                metric, sentence_stats(metric, base), sentence_stats(metric, group), samples=samples
            )
            for metric in ("bleu", "chrf")
        }
        out[cell, context]["welch_bleu_p"] = stats.welch(
            [r.test["bleu"] for r in base], [r.test["bleu"] for r in group]
        )
    return out


def differences(
    runs: list[Run],
    pairs: list[dict],
    longest_over: int,
    samples: int,
    sentence_stats: SentenceStats | None = None,
    bench: BenchSpeeds | None = None,
) -> list[dict]:
    """The table of differences: for each pair of cells that differ in one thing (``pairs``:
    conf/report.yaml's ``differences``, each {a, b, what}) and each setting holding both, b - a
    over all their seeds by the two-level paired bootstrap, in BLEU and chrF on the whole test
    split and in BLEU on its sentences with more than ``longest_over`` source words; with each
    side's parameters, training speed, updates and time to its best checkpoint (speed and time
    at the benchmark's speed where ``bench`` is given)."""
    groups = _groups([r for r in runs if r.finished and r.hyps is not None])
    sentence_stats = sentence_stats or SentenceStats()
    contexts = list(dict.fromkeys(context for _, context in groups))
    out = []
    for context in contexts:
        for pair in pairs:
            a, b = groups.get((pair["a"], context)), groups.get((pair["b"], context))
            if not a or not b:
                continue
            long = [i for i, s in enumerate(a[0].sources) if len(s.split()) > longest_over]
            bleu_a, bleu_b = sentence_stats("bleu", a), sentence_stats("bleu", b)
            row = {
                "a": pair["a"],
                "b": pair["b"],
                "what": pair["what"],
                "pair": a[0].pair,
                "attention": a[0].attention,
                "seeds": [len(a), len(b)],
                "bleu": stats.seed_bootstrap("bleu", bleu_a, bleu_b, samples=samples),
                "chrf": stats.seed_bootstrap(
                    "chrf", sentence_stats("chrf", a), sentence_stats("chrf", b), samples=samples
                ),
                "longest": None,
                "longest_over_words": longest_over,
                "longest_sentences": len(long),
            }
            if long:
                row["longest"] = stats.seed_bootstrap(
                    "bleu", [s[long] for s in bleu_a], [s[long] for s in bleu_b], samples=samples
                )
            for key, value in (
                ("parameters", lambda g: g[0].done.get("parameters")),
                ("train_tokens_per_s", lambda g: _speed(g, bench)),
                ("updates_to_best", lambda g: _mean(r.done.get("best_step") for r in g)),
                ("minutes_to_best", lambda g: _mean(_minutes_to_best(r, bench) for r in g)),
            ):
                row[key] = [value(a), value(b)]
            out.append(row)
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def build_rows(runs: list[Run], comparisons: dict, bench: BenchSpeeds | None = None) -> list[dict]:
    """One row per (cell, context): mean, std and 95 % t-interval over seeds of each score, and
    the comparison with the baseline cell (``seed_comparisons``); speed and minutes to the best
    checkpoint the benchmark's where ``bench`` is given."""
    rows = _groups(runs)
    out = []
    for (cell, context), group in rows.items():
        ok = [r for r in group if r.finished]
        attention = group[0].attention
        variant = _variant(rows, cell, context)
        row = {
            "cell": cell,
            "attention": attention,
            "variant": variant,
            "runs": len(group),
            "failed": len(group) - len(ok),
            "seeds": [r.seed for r in group],
            "parameters": group[0].done.get("parameters"),
            "hidden": {
                k: group[0].done[k] for k in ("enc_hidden", "dec_hidden") if k in group[0].done
            },
        }
        if ok:
            ppl = [min(m["ppl"] for m in r.metrics if "ppl" in m) for r in ok if r.metrics]
            to_best = [m for r in ok if (m := _minutes_to_best(r, bench)) is not None]
            row.update(
                train_tokens_per_s=_speed(ok, bench),
                steps=statistics.fmean(r.done["steps"] for r in ok),
                early_stopped=sum(r.done.get("stop_reason") in VALIDATION_STOPS for r in ok),
                minutes=statistics.fmean(r.done["minutes"] for r in ok),
                minutes_to_best=statistics.fmean(to_best) if to_best else None,
                best_valid_ppl=statistics.fmean(ppl) if ppl else None,
                valid_bleu=stats.summarize([r.done["bleu"] for r in ok]).as_dict(),
                test_bleu=stats.summarize([r.test["bleu"] for r in ok]).as_dict(),
                test_chrf=stats.summarize([r.test["chrf"] for r in ok]).as_dict(),
                versus=comparisons.get((cell, context)),
            )
        out.append(row)
    return out


def _title(sweep_dir: Path, paths: list[Path]) -> str:
    """The sweep's name, or for chosen run directories how many they are (a run directory's name
    is its overrides, not a title)."""
    if (sweep_dir / DONE_FILE).is_file():
        return f"{len(paths)} chosen run{'s' if len(paths) != 1 else ''}"
    return sweep_dir.name


def _runs_setting(paths: list[Path], what: str) -> str:
    """The test split (first of ``final_eval``) or search name the runs were trained with; one
    value for all of them, or a ReportError naming the choices."""
    values = set()
    for path in paths:
        if not (path / CONFIG_FILE).is_file():
            continue  # load_run says so
        config = OmegaConf.load(path / CONFIG_FILE)
        if what == "split":
            values.add(config.final_eval[0] if config.get("final_eval") else None)
        else:
            values.add(config.search.name)
    values.discard(None)
    if len(values) != 1:
        found = ", ".join(sorted(values)) or "none"
        raise ReportError(
            f"the runs name {len(values)} test {what}s ({found}); choose one with --{what}"
        )
    return values.pop()


def write_report(
    sweep_dir: Path,
    out: Path | None = None,
    *,
    runs: list[Path] | None = None,
    split: str | None = None,
    search: str | None = None,
    baseline: str | None = None,
    edges: tuple[int, ...] | None = None,
    samples: int | None = None,
    device: str | None = None,
    bench: list[Path] | None = None,
) -> Path:
    """Write report.md, results.json and the four plots for the runs in ``sweep_dir`` (or the
    run directories ``runs``) into ``out`` (default ``sweep_dir/report``); return report.md.
    ``baseline``, ``edges``, ``samples`` and ``device`` default to conf/report.yaml's.

    ``split`` and ``search`` default to the runs' own: the first ``final_eval`` split and the
    ``search`` group they were trained with (what their final evaluation wrote). ``bench``:
    bench.json files whose training speeds replace the runs' own (``BenchSpeeds``)."""
    settings = compose("report")
    baseline = baseline or settings.baseline
    edges = tuple(edges or settings.buckets)
    samples = samples or settings.bootstrap_samples
    device = device or settings.device
    speeds = read_bench(bench) if bench else None
    paths = find_runs(runs if runs else [Path(sweep_dir)])
    if not paths:
        raise ReportError(f"{sweep_dir}: no finished runs (directories with {DONE_FILE})")
    split, search = split or _runs_setting(paths, "split"), search or _runs_setting(paths, "search")
    out = Path(out) if out else Path(sweep_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    loaded = sorted((load_run(p, split, search) for p in paths), key=run_order)
    for run in loaded:
        if run.finished:
            run.analysis = analyze_run(run, split, search, edges, device)
    finished = [r for r in loaded if r.finished]
    texts: dict[str, tuple[list[str], list[str]]] = {}  # per language pair
    for run in finished:
        if run.pair not in texts:
            texts[run.pair] = evaluate.split_pairs(run.path, split)
        run.sources, run.refs = texts[run.pair]
    pvalues = paired_pvalues(loaded, baseline, samples)
    sentence_stats = SentenceStats()
    comparisons = seed_comparisons(loaded, baseline, samples, sentence_stats)
    table = differences(
        loaded, list(settings.differences), edges[-1], samples, sentence_stats, speeds
    )
    rows = build_rows(loaded, comparisons, speeds)
    groups = plot_groups(loaded)
    plot_report(groups, out)
    tuning_path = Path(sweep_dir) / TUNING_FILE
    tuning = json.loads(tuning_path.read_text()) if tuning_path.is_file() else None
    if tuning is not None:  # where the search ran: its runs' own language pair
        tuned = sorted(Path(sweep_dir).glob(f"tune/*/{CONFIG_FILE}"))
        pairs = {f"{c.data.src}→{c.data.tgt}" for c in map(OmegaConf.load, tuned)}
        tuning["pairs"] = ", ".join(sorted(pairs)) or None
    clock = None if runs else sweep_clock(Path(sweep_dir))  # chosen runs are no sweep's whole
    made = sweep_origins([r.done for r in loaded], None if runs else Path(sweep_dir))
    write_text(
        out / "report.md",
        report_markdown(
            _title(Path(sweep_dir), paths),
            loaded,
            rows,
            pvalues,
            split,
            search,
            baseline,
            samples,
            tuning,
            groups,
            table,
            speeds.sources if speeds else None,
            clock,
            made,
        ),
    )
    runs_json = [
        {
            "path": str(r.path),
            "cell": r.cell,
            "attention": r.attention,
            "seed": r.seed,
            "done": r.done,
            "test": r.test,
            "analysis": r.analysis,
            "paired": pvalues.get(str(r.path)),
        }
        for r in loaded
    ]
    if tuning:
        plot_tuning(tuning, out / TUNING_PLOT)
    write_json(
        out / "results.json",
        {
            "split": split,
            "search": search,
            "rows": rows,
            "differences": table,
            "runs": runs_json,
            "tuning": tuning,
            "speeds_from": speeds.sources if speeds else "the runs",
            "clock": clock,
            "made": made,
        },
    )
    return out / "report.md"
