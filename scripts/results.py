"""Results from artifacts, never from prose: collect run directories' done.json and scores.json
into docs/results.json, then write docs/results.md and the README's summary table from it.

    python scripts/results.py runs/X runs/Y   # add these runs (a run already there is replaced)
    python scripts/results.py                 # rewrite both pages from docs/results.json alone

`make results RUNS="runs/X runs/Y"` runs it. Every row carries the command, commit, machine and
date it came from; a run whose nmt/ or conf/ changed after its commit is named on stderr, to be
trained again or left out. tests/test_results.py checks that both pages are exactly what this
script writes from docs/results.json, so a figure typed in by hand fails the suite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "results.json"
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
BEGIN = "<!-- results: begin (written by make results from docs/results.json; do not edit) -->"
END = "<!-- results: end -->"

# What is kept of each artifact: the figures the pages show and where they came from.
DONE_KEYS = (
    "src", "tgt", "cell", "attention", "parameters", "status", "steps", "best_step", "minutes",
    "train_tokens_per_s", "process_peak_rss_gib", "gpu_peak_gib", "precision", "hardware",
    "bleu", "chrf", "bleu_signature", "stop_reason", "provenance",
)  # fmt: skip
SCORE_KEYS = (
    "split", "checkpoint", "search", "bleu", "chrf", "bleu_lt", "bleu_signature",
    "chrf_signature", "bleu_lt_signature", "sentences", "sentences_per_s", "precision",
    "hardware", "provenance",
)  # fmt: skip


class ResultsError(ValueError):
    pass


def collect(run_dir: Path) -> dict:
    """One run's record: its done.json and every eval/*/scores.json, the keys above."""
    done_path = run_dir / "done.json"
    if not done_path.is_file():
        raise ResultsError(f"{done_path}: missing; is {run_dir} a finished training run?")
    done = json.loads(done_path.read_text())
    if done.get("status") != "finished":
        raise ResultsError(f"{done_path}: status {done.get('status')!r}, not finished")
    evals = []
    for path in sorted(run_dir.glob("eval/*/scores.json")):
        scores = json.loads(path.read_text())
        if "split" in scores:  # hyps=[...] comparisons write other files
            evals.append({k: scores[k] for k in SCORE_KEYS if k in scores})
    return {
        "done": {k: done[k] for k in DONE_KEYS if k in done},
        "evals": evals,
    }


def changed_since(commit: str | None) -> str | None:
    """How nmt/ and conf/ differ from a run's commit ("uncommitted changes", "n commits"), or
    None when they are the same (or git cannot say)."""
    if not commit:
        return "no commit recorded"
    if commit.endswith("+dirty"):
        return "trained from uncommitted changes"

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)

    diff = git("diff", "--quiet", commit, "HEAD", "--", "nmt", "conf")
    if diff.returncode == 0:
        return None
    if diff.returncode != 1:
        return f"commit {commit} unknown here"
    count = git("rev-list", "--count", f"{commit}..HEAD", "--", "nmt", "conf").stdout.strip()
    return f"nmt/ or conf/ changed in {count} commits since {commit}"


# --------------------------------------------------------------------------------------------
# Rendering: a pure function of docs/results.json


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _search(search: dict) -> str:
    name = search.get("name", "?")
    if name in ("beam5", "tuned") or search.get("beam_size", 1) > 1:
        return f"{name} (beam {search.get('beam_size')}, α {search.get('alpha')})"
    return name


def _model(done: dict) -> str:
    return f"{done['cell']} + {done['attention']}"


def _commit(record: dict) -> str:
    return f"`{(record.get('provenance') or {}).get('commit') or '–'}`"


def _date(record: dict) -> str:
    return ((record.get("provenance") or {}).get("date") or "–")[:10]


def directions(results: dict) -> dict[str, list[str]]:
    by_pair: dict[str, list[str]] = {}
    for name, run in sorted(results["runs"].items()):
        done = run["done"]
        by_pair.setdefault(f"{done['src']}→{done['tgt']}", []).append(name)
    return by_pair


def render_page(results: dict) -> str:
    lines = [
        "# Results",
        "",
        "Written by `make results` from the `done.json` and `scores.json` of the run directories",
        "it was given (collected in [results.json](results.json)); not edited by hand.",
        "Every row names the commit and machine it came from, and the commands are listed below",
        "each table. Older measurements, made at earlier commits, are in [history.md](history.md).",
        "",
    ]
    for pair, names in directions(results).items():
        runs = results["runs"]
        lines += [f"## {pair}", "", "### Training", ""]
        lines += [
            "| run | model | parameters | updates (best) | minutes | train tok/s "
            "| peak RSS GiB | precision | hardware | commit | date |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            done = runs[name]["done"]
            lines.append(
                f"| {name} | {_model(done)} | {done['parameters']:,} | "
                f"{done['steps']:,} ({done['best_step']:,}) | {_num(done['minutes'], 1)} | "
                f"{_num(done.get('train_tokens_per_s'), 0)} | "
                f"{_num(done.get('process_peak_rss_gib'))} | {done.get('precision', '–')} | "
                f"{done.get('hardware', '–')} | {_commit(done)} | {_date(done)} |"
            )
        lines += ["", "### Scores", ""]
        lines += [
            "| run | split | checkpoint | search | BLEU | chrF | LT BLEU | sentences/s "
            "| precision | commit |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        signatures: dict[str, set[str]] = {"BLEU": set(), "chrF": set(), "LT BLEU": set()}
        for name in names:
            done = runs[name]["done"]
            lines.append(
                f"| {name} | valid (greedy, in training) | best | greedy | {_num(done['bleu'])} "
                f"| {_num(done['chrf'])} | – | – | {done.get('precision', '–')} "
                f"| {_commit(done)} |"
            )
            signatures["BLEU"].add(done["bleu_signature"])
            for ev in runs[name]["evals"]:
                lines.append(
                    f"| {name} | {ev['split']} | {ev['checkpoint']} | {_search(ev['search'])} | "
                    f"{_num(ev['bleu'])} | {_num(ev['chrf'])} | {_num(ev.get('bleu_lt'))} | "
                    f"{_num(ev.get('sentences_per_s'), 1)} | {ev.get('precision', '–')} "
                    f"| {_commit(ev)} |"
                )
                signatures["BLEU"].add(ev["bleu_signature"])
                signatures["chrF"].add(ev["chrf_signature"])
                if ev.get("bleu_lt_signature"):
                    signatures["LT BLEU"].add(ev["bleu_lt_signature"])
        lines += ["", "Signatures (sacreBLEU; LT BLEU is not sacreBLEU's tokenization):", ""]
        for metric, found in signatures.items():
            lines += [f"- {metric}: `{sig}`" for sig in sorted(found)]
        lines += ["", "Commands:", ""]
        for name in names:
            run = runs[name]
            lines.append(f"- {name}: `{run['done']['provenance']['command']}`")
            commands = sorted({ev["provenance"]["command"] for ev in run["evals"]})
            lines += [f"  - `{command}`" for command in commands]
        lines.append("")
    return "\n".join(lines)


def render_summary(results: dict) -> str:
    """The README's table: one row per run and test split, the best checkpoint's scores."""
    lines = [
        BEGIN,
        "| direction | model | trained | split | search | BLEU | chrF | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair, names in directions(results).items():
        for name in names:
            run = results["runs"][name]
            done = run["done"]
            trained = f"{done['steps']:,} updates, {_num(done['minutes'], 0)} min"
            for ev in run["evals"]:
                if ev["checkpoint"] != "best" or not ev["split"].startswith("test"):
                    continue
                lines.append(
                    f"| {pair} | {_model(done)} | {trained} | {ev['split']} "
                    f"| {_search(ev['search'])} | {_num(ev['bleu'])} | {_num(ev['chrf'])} "
                    f"| {_commit(ev)} |"
                )
    lines.append(END)
    return "\n".join(lines)


def with_summary(readme: str, summary: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise ResultsError(f"README.md: no {BEGIN!r} ... {END!r} block to write the summary into")
    head, rest = readme.split(BEGIN, 1)
    return head + summary + rest.split(END, 1)[1]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", type=Path, help="finished run directories to add")
    parser.add_argument("--json", type=Path, default=JSON, help="collected artifacts (%(default)s)")
    parser.add_argument("--page", type=Path, default=PAGE, help="the results page (%(default)s)")
    parser.add_argument("--readme", type=Path, default=README, help="README with the summary block")
    parser.add_argument(
        "--drop", action="append", default=[], metavar="NAME", help="remove a run by name"
    )
    args = parser.parse_args(argv)
    results = json.loads(args.json.read_text()) if args.json.is_file() else {"runs": {}}
    try:
        for run_dir in args.runs:
            results["runs"][run_dir.resolve().name] = collect(run_dir)
            print(f"collected {run_dir}", file=sys.stderr)
        for name in args.drop:
            if results["runs"].pop(name, None) is None:
                raise ResultsError(f"--drop {name}: no such run in {args.json}")
        readme = with_summary(args.readme.read_text(encoding="utf-8"), render_summary(results))
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, run in sorted(results["runs"].items()):
        commits = {run["done"]["provenance"].get("commit")}
        commits |= {ev["provenance"].get("commit") for ev in run["evals"]}
        for commit in sorted(c or "" for c in commits):
            stale = changed_since(commit or None)
            if stale:
                print(f"warning: {name}: {stale}; train it again or --drop it", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    _write(args.json, json.dumps(results, indent=1, sort_keys=True) + "\n")
    _write(args.page, render_page(results))
    _write(args.readme, readme)
    print(f"wrote {args.json}, {args.page} and the summary in {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
