"""Ablation report from finished runs: a Markdown table, results.json and four PNG plots.

    python scripts/report.py runs/ablation_quick            # a sweep directory
    python scripts/report.py runs/a runs/b --out runs/cmp   # any finished run directories

`make ablate` writes it at the end of the sweep (runs/<sweep>/report/); run this to rebuild it,
e.g. after more runs finished or with other options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nmt.core.errors import MissingExtra, require_extra


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
        )
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path.read_text(encoding="utf-8").split("\n![")[0])
    print(f"wrote {path} and {', '.join(PLOTS)} in {path.parent}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
