"""Ablation report from finished runs: a Markdown table, results.json and four PNG plots.

    python scripts/report.py runs/ablation_quick            # a sweep directory
    python scripts/report.py runs/a runs/b --out runs/cmp   # any finished run directories
    python scripts/report.py runs/ablation_gates --bench runs/bench/gates.json  # speeds apart
    python scripts/report.py runs/ablation_gates --out docs/ablation_gates --readme README.md

--readme writes the report's answer (one sentence per difference, with its numbers) into the
file's block between CELLS_BEGIN and CELLS_END, linked to the report; tests/test_results.py checks
that the README's block is what answer_block writes from the report's results.json.

`make ablate` writes it at the end of the sweep (runs/<sweep>/report/); run this to rebuild it,
e.g. after more runs finished or with other options.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from nmt.core.errors import MissingExtra, require_extra
from nmt.core.rundir import write_text

CELLS_BEGIN = "<!-- cells: begin (written by scripts/report.py --readme; do not edit) -->"
CELLS_END = "<!-- cells: end -->"


class ReadmeError(Exception):
    """The file given to --readme has no block for the answer."""


def answer_block(results: dict, report: Path, readme: Path) -> str:
    """The README's block: the markers around the answer of ``results`` (a report's
    results.json), linked to ``report`` relative to ``readme``."""
    from nmt.report.tables import answer_markdown

    link = os.path.relpath(report, readme.resolve().parent)
    answer = answer_markdown(results["differences"], results["split"], results["search"], link)
    return f"{CELLS_BEGIN}\n{answer}\n{CELLS_END}"


def write_answer(readme: Path, results_path: Path) -> None:
    """Replace ``readme``'s block with the answer of the report beside ``results_path``."""
    text = readme.read_text(encoding="utf-8")
    if CELLS_BEGIN not in text or CELLS_END not in text:
        raise ReadmeError(
            f"{readme}: no {CELLS_BEGIN!r} ... {CELLS_END!r} block to write the answer into"
        )
    block = answer_block(
        json.loads(results_path.read_text()), results_path.parent / "report.md", readme
    )
    head, rest = text.split(CELLS_BEGIN, 1)
    write_text(readme, head + block + rest.split(CELLS_END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="a sweep directory, or run directories (each with done.json)",
    )
    parser.add_argument("--out", type=Path, help="output directory (default: <first path>/report)")
    parser.add_argument(
        "--split", help="test split (default: the runs' own, the first of their final_eval)"
    )
    parser.add_argument(
        "--search",
        help="search of eval/<split>-best-<search>/ (default: the runs' own search group)",
    )
    parser.add_argument(
        "--baseline", help="cell the p-values compare with (default: conf/report.yaml's)"
    )
    parser.add_argument(
        "--buckets",
        help="upper edges of the source-length buckets in words, e.g. 10,15,20 "
        "(default: conf/report.yaml's)",
    )
    parser.add_argument(
        "--bootstrap-samples", type=int, help="resamples (default: conf/report.yaml's)"
    )
    parser.add_argument(
        "--device", help="for gate statistics: auto | cpu | cuda (default: conf/report.yaml's)"
    )
    parser.add_argument(
        "--bench",
        type=Path,
        action="append",
        help="a bench.json (python scripts/bench.py --what train --set ... at the runs' sizes; "
        "repeatable): its training speeds, measured apart, replace the runs' own, which share "
        "the machine with the sweep's other jobs",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        help="also write the answer (a sentence per difference with its numbers) into this "
        "file's cells block, linked to the report (e.g. README.md)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        edges = tuple(int(e) for e in args.buckets.split(",")) if args.buckets else None
    except ValueError:
        parser.error(f"--buckets {args.buckets!r}: expected integers separated by commas")
    try:
        require_extra("report", "the report (plots and statistics)")
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from nmt.report.ablation import PLOTS, ReportError, write_report

    sweep = args.paths[0]
    try:
        path = write_report(
            sweep,
            args.out,
            runs=args.paths,
            split=args.split,
            search=args.search,
            baseline=args.baseline,
            edges=edges,
            samples=args.bootstrap_samples,
            device=args.device,
            bench=args.bench,
        )
        if args.readme:
            write_answer(args.readme, path.parent / "results.json")
    except (ReportError, ReadmeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path.read_text(encoding="utf-8").split("\n![")[0])
    print(f"wrote {path} and {', '.join(PLOTS)} in {path.parent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
