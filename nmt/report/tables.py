"""The ablation report's Markdown: the table of rows (mean ± std over seeds, intervals, the
comparison with the baseline cell), the learning-rate tuning, BLEU by source length and the gate
activations, under an introduction that says how each figure was measured.
"""

from __future__ import annotations

import platform

import torch

from nmt.core.runtime import threads_text
from nmt.model.attention import attention_kind
from nmt.report.origins import origins_markdown
from nmt.report.plots import GATE_ORDER, PLOTS, TUNING_PLOT, bleu_by_length_rows, gates_by_layer
from nmt.report.runs import Run, run_order
from nmt.scoring.tuning import bracket


def length_table(groups: list[tuple[str, list[Run]]]) -> str:
    """Test BLEU per source-length bucket and row: mean over seeds [95 % t-interval]."""
    rows = bleu_by_length_rows(groups)
    if not rows:
        return ""
    head = [f"{b['bucket']} ({b['sentences']})" for b in rows[0]["buckets"]]
    lines = ["| row | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in rows:
        texts = []
        for b in row["buckets"]:
            s = b["bleu"]
            if s is None:
                texts.append("–")
            elif s["ci"][0] is None:
                texts.append(f"{s['mean']:.2f}")
            else:
                texts.append(f"{s['mean']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]")
        lines.append(f"| {row['label']} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def _pm(value: dict) -> str:
    return (
        f"{value['mean']:.2f}"
        if value["std"] is None
        else f"{value['mean']:.2f} ± {value['std']:.2f}"
    )


def _ci(value: dict) -> str:
    low, high = value["ci"]
    return "–" if low is None else f"[{low:.2f}, {high:.2f}]"


def _delta(versus: dict | None, baseline: bool) -> str:
    if baseline:
        return "(baseline)"
    if not versus:
        return "–"
    d = versus["bleu"]
    return f"{d['delta']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def _hidden(sizes: dict) -> str:
    return f"{sizes['enc_hidden']}/{sizes['dec_hidden']}" if sizes else "–"


def _p(value: float | None, baseline: bool) -> str:
    if baseline:
        return "(baseline)"
    return "–" if value is None else f"{value:.4f}"


def markdown_table(rows: list[dict], baseline: str) -> str:
    head = (
        "| cell | attention | parameters | enc/dec | train tok/s | steps | early stop "
        "| minutes to best | best valid ppl "
        "| valid BLEU | test BLEU | 95 % CI | test chrF | Δ BLEU vs "
        + baseline
        + " [95 % CI] | p BLEU | p chrF | p Welch |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        attention = f"{r['attention']} ({r['variant']})" if r["variant"] else r["attention"]
        if "test_bleu" not in r:
            lines.append(
                f"| {r['cell']} | {attention} | {r['parameters'] or 0:,} | {_hidden(r['hidden'])} | "
                + " | ".join(["diverged"] + ["–"] * 13)
                + " |"
            )
            continue
        base, versus = r["cell"] == baseline, r["versus"] or {}
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {r['cell']} | {attention} | {r['parameters']:,} | {_hidden(r['hidden'])} | "
            f"{r['train_tokens_per_s']:,.0f} | {r['steps']:.0f} | "
            f"{r['early_stopped']}/{r['runs'] - r['failed']} | {fmt(r['minutes_to_best'], '.1f')} | "
            f"{fmt(r['best_valid_ppl'], '.2f')} | {_pm(r['valid_bleu'])} | {_pm(r['test_bleu'])} | "
            f"{_ci(r['test_bleu'])} | {_pm(r['test_chrf'])} | {_delta(r['versus'], base)} | "
            f"{_p(versus.get('bleu', {}).get('p'), base)} | {_p(versus.get('chrf', {}).get('p'), base)} | "
            f"{_p(versus.get('welch_bleu_p'), base)} |"
        )
    return "\n".join(lines)


def gates_table(runs: list[Run]) -> str:
    """Mean gate activations per run (first seed of each row) and layer."""
    lines = [
        "| cell | attention | layer | " + " | ".join(GATE_ORDER) + " |",
        "|---|---|---|" + "---|" * len(GATE_ORDER),
    ]
    seen = set()
    for run in sorted(runs, key=run_order):
        if not run.analysis or (run.cell, run.attention) in seen or not run.analysis["gates"]:
            continue
        seen.add((run.cell, run.attention))
        for layer, gates in gates_by_layer(run.analysis["gates"]).items():
            cells = [f"{gates[g]:.3f}" if g in gates else "" for g in GATE_ORDER]
            lines.append(f"| {run.cell} | {run.attention} | {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def differences_table(rows: list[dict], samples: int) -> str:
    """One line per pair of cells that differ in one thing and per setting: b - a."""
    over = rows[0]["longest_over_words"]
    lines = [
        "What each difference does: b − a, the difference of seed means on the test split, "
        f"with the 95 % interval and the two-sided p of the two-level paired bootstrap ({samples} "
        "samples, test sentences and seeds both resampled); parameters, training speed (target "
        "tokens/s), updates and minutes to the best checkpoint as a / b; the last column on the test "
        f"sentences with more than {over} source words only.",
        "",
        "| difference | a → b | setting | seeds | Δ BLEU [95 % CI] | p | Δ chrF [95 % CI] | p "
        f"| parameters | train tok/s | updates to best | minutes to best "
        f"| Δ BLEU, > {over} words [95 % CI] |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        longest = (
            "–"
            if r["longest"] is None
            else (f"{_interval(r['longest'])} ({r['longest_sentences']} sentences)")
        )
        lines.append(
            f"| {r['what']} | {r['a']} → {r['b']} | {r['pair']}, {r['attention']} | "
            f"{r['seeds'][0]} / {r['seeds'][1]} | {_interval(r['bleu'])} | {r['bleu']['p']:.4f} | "
            f"{_interval(r['chrf'])} | {r['chrf']['p']:.4f} | {_pair(r['parameters'], ',')} | "
            f"{_pair(r['train_tokens_per_s'], ',.0f')} | {_pair(r['updates_to_best'], ',.0f')} | "
            f"{_pair(r['minutes_to_best'], '.1f')} | {longest} |"
        )
    return "\n".join(lines)


def _verdict(boot: dict) -> str:
    low, high = boot["ci"]
    if high < 0:
        return "lower"
    if low > 0:
        return "higher"
    return "not told apart from zero"


def answer_markdown(differences: list[dict], split: str, search: str, link: str = "") -> str:
    """The answer in a few sentences, one per difference with its numbers in every setting that
    holds both cells: b − a in BLEU and chrF with the 95 % interval of the two-level paired
    bootstrap, and what the BLEU interval says (lower, higher, or not told apart from zero);
    ``link``: where the report is."""
    if not differences:
        return ""
    by_difference: dict[tuple[str, str, str], list[dict]] = {}
    for d in differences:
        by_difference.setdefault((d["what"], d["a"], d["b"]), []).append(d)
    counts = sorted({n for d in differences for n in d["seeds"]})
    seeds = "" if len(counts) > 1 else f" ({_seeds(counts)} a cell)"
    lines = [
        f"What each gate does to translation quality: b − a on `{split}` with `{search}`, the "
        f"difference of the seed means{seeds} with its [95 % interval] from the two-level paired "
        "bootstrap; cells at equal parameter count, each at its own tuned learning rate"
        + (f"; the whole table in [the report]({link})" if link else "")
        + ".",
        "",
    ]
    for (what, a, b), rows in by_difference.items():
        said = []
        for d in rows:
            setting = _setting(d["pair"], d["attention"])
            if not seeds:  # the seed counts differ somewhere: each setting says its own
                setting += f" ({_seeds(sorted(set(d['seeds'])))} a cell)"
            said.append(
                f"{setting}: BLEU {_interval(d['bleu'])} ({_verdict(d['bleu'])}), "
                f"chrF {_interval(d['chrf'])}"
            )
        lines.append(f"- **{what}** ({a} → {b}): " + "; ".join(said) + ".")
    return "\n".join(lines)


def _setting(pair: str, attention: str) -> str:
    where = pair.replace("-", "→")
    if not attention_kind(attention).reads_memory:
        return f"{where} without attention"
    return f"{where} with {attention} attention"


def _seeds(counts: list[int]) -> str:
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{text} {'seed' if counts == [1] else 'seeds'}"


def _interval(boot: dict) -> str:
    low, high = boot["ci"]
    return f"{boot['delta']:+.2f} [{low:+.2f}, {high:+.2f}]"


def _pair(values: list, spec: str) -> str:
    return " / ".join("–" if v is None else format(v, spec) for v in values)


def tuning_table(tuning: dict) -> str:
    """The learning-rate search of nmt-ablate: each rate's best validation BLEU, chosen in bold,
    and whether each cell's optimum is bracketed (a worse rate on each side) or still at an edge
    of the rates tried."""
    rates = sorted({run["lr"] for run in tuning["runs"]})
    start = ", ".join(f"{r:g}" for r in tuning["lrs"])
    widened = (
        f"from {{{start}}}, widened by a factor {tuning['factor']:g} past whichever edge held the "
        f"best, up to {tuning['max_points']} rates a cell"
        if tuning.get("max_points")
        else f"the grid {{{start}}}"
    )
    lines = [
        f"Learning rates tuned on validation with the same search for every cell: {widened}; "
        f"{tuning['max_steps']} updates a rate, seed {tuning['seed']}, picked by "
        f"{tuning['metric']} (bold)"
        + (
            f"; tuned with attention {tuning['attention']}"
            + (f" on {tuning['pairs']}" if tuning.get("pairs") else "")
            + ", the rate serves every attention"
            + (" and language pair" if tuning.get("pairs") else "")
            + " (the runs in other settings reuse it, untuned there):"
            if tuning.get("attention")
            else ":"
        ),
        "",
        "| cell | attention | " + " | ".join(f"lr {r:g}" for r in rates) + " | optimum |",
        "|---|---|" + "---|" * len(rates) + "---|",
    ]
    scores: dict[tuple[str, str], dict[float, float | None]] = {}
    for run in tuning["runs"]:
        scores.setdefault((run["cell"], run["attention"]), {})[run["lr"]] = run["valid_bleu"]
    for (cell, attention), by_rate in scores.items():
        chosen, beyond = bracket(by_rate, tuning.get("factor", 2.0))
        cells = []
        for r in rates:
            text = (
                "–"
                if r not in by_rate
                else "diverged"
                if by_rate[r] is None
                else f"{by_rate[r]:.2f}"
            )
            cells.append(f"**{text}**" if r == chosen else text)
        edge = "lowest" if beyond is not None and beyond < chosen else "highest"
        optimum = "bracketed" if beyond is None else f"**at the {edge} rate tried: not tuned**"
        lines.append(f"| {cell} | {attention} | " + " | ".join(cells) + f" | {optimum} |")
    return "\n".join(lines)


def _hardware(runs: list[Run]) -> str:
    # Runs recorded before describe_device counted in the singular wrote "1 threads".
    described = {
        r.done["hardware"].replace(", 1 threads (", ", 1 thread (")
        for r in runs
        if r.done.get("hardware")
    }
    if described:
        return "; ".join(sorted(described))
    return f"{platform.machine()}, {threads_text(torch.get_num_threads())} (where the report ran)"


def report_markdown(
    name: str,
    loaded: list[Run],
    rows: list[dict],
    pvalues: dict,
    split: str,
    search: str,
    baseline: str,
    samples: int,
    tuning: dict | None,
    groups: list[tuple[str, list[Run]]],
    differences: list[dict] | None = None,
    bench_sources: list[str] | None = None,
    clock: dict | None = None,
    made: dict | None = None,
) -> str:
    finished = [r for r in loaded if r.finished]
    signature = finished[0].test["bleu_signature"] if finished else ""
    p_signature = next(iter(pvalues.values()))["signature"] if pvalues else ""
    lang = ", ".join(dict.fromkeys(f"{r.test['src']}→{r.test['tgt']}" for r in finished))
    intro = (
        f"{len(loaded)} runs ({len(loaded) - len(finished)} diverged); {lang}; test split "
        f"`{split}` translated with `{search}` from each run's best checkpoint (greedy validation "
        f"BLEU). BLEU/chrF: sacreBLEU `{signature}`, mean ± standard deviation over seeds; "
        "95 % CI: Student-t interval of the test BLEU mean. "
        f"Δ BLEU: difference of seed means against `{baseline}` in the same setting, with the "
        f"95 % interval of a two-level paired bootstrap ({samples} samples; test sentences and "
        "seeds both resampled, Clark et al. 2011); p BLEU, p chrF: its two-sided p; p Welch: "
        "Welch's t-test on the per-seed test BLEU (two seeds a side or more). "
        "Per seed, sacreBLEU's own paired bootstrap against the same seed of the baseline is in "
        "results.json" + (f" (`{p_signature}`)" if p_signature else "") + ". "
        "enc/dec: recurrent sizes (model.match_params resizes them). "
        "Train tok/s: target tokens per second of training, validation excluded"
        + (
            f", measured apart from the runs by {'; '.join(bench_sources)}; minutes to best: "
            "the target tokens each run trained on to its best checkpoint at that speed. "
            if bench_sources
            else ", the runs' own (a run shares its machine with the sweep's other jobs). "
        )
        + "Steps: updates, mean over seeds; early stop: the runs that validation stopped (no new "
        "best BLEU in `train.patience` validations, or the rate cut `train.max_lr_decays` times "
        "by the schedule); the others reached their step, epoch or time limit."
    )
    return "\n".join(
        [
            f"# Cell ablation: {name}",
            "",
            intro,
            f"Hardware: {_hardware(loaded)}.",
            "",
            *([answer_markdown(differences, split, search), ""] if differences else []),
            markdown_table(rows, baseline),
            "",
            *([differences_table(differences, samples), ""] if differences else []),
            *([tuning_table(tuning), "", f"![{TUNING_PLOT}]({TUNING_PLOT})", ""] if tuning else []),
            "Test BLEU by source length in words (sentences per bucket), mean over seeds "
            "[95 % t-interval]:",
            "",
            length_table(groups),
            "",
            "Mean gate activations on the validation set (teacher forcing), per layer:",
            "",
            gates_table(loaded),
            "",
            *[f"![{p}]({p})" for p in PLOTS],
            "",
            *([clock_markdown(clock), ""] if clock else []),
            *([origins_markdown(made), ""] if made else []),
        ]
    )


def clock_markdown(clock: dict) -> str:
    """How long the sweep took, phase by phase, from its runs' logs (``nmt.report.clock``)."""
    names = {"search": "learning-rate search (`tune/`)", "runs": "runs", "whole": "whole sweep"}
    lines = [
        "Wall clock, from the runs' own logs (`nmt.log`): the time while any run of a phase was "
        "running, pauses left out; job-hours add up the jobs that ran at once; sittings: stretches "
        "without a pause of five minutes or more.",
        "",
        "| phase | runs (finished) | wall clock | job-hours | sittings | from | to |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, name in names.items():
        if phase := clock.get(key):
            lines.append(
                f"| {name} | {phase['runs']} ({phase['finished']}) | {phase['wall_hours']:.2f} h "
                f"| {phase['job_hours']:.2f} | {phase['sittings']} | {phase['first']} "
                f"| {phase['last']} |"
            )
    return "\n".join(lines)
