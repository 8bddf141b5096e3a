"""Keep a sweep's records without its weights, and restore them for the sweep to go on.

    python scripts/records.py save runs/ablation_gates docs/ablation_gates/records
    python scripts/records.py restore docs/ablation_gates/records runs/ablation_gates

save copies, for every run of the sweep that ended (the tuning's included), its config, done.json,
metrics, log, evaluations and the report's analysis (computed first, while the weights are there)
— a few hundred KB a run instead of tens of MB — and can run again as more runs end: only new
ones are copied. restore puts them back, with each evaluated run's corpus rebuilt by the data
stage; the sweep's command then skips them and trains the rest, and the report reads all alike.
See nmt/records.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nmt.core.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    save = commands.add_parser("save", help="copy the ended runs' records out of a sweep")
    save.add_argument("sweep", type=Path, help="the sweep directory (e.g. runs/ablation_gates)")
    save.add_argument("records", type=Path, help="where the records go")
    save.add_argument(
        "--device", help="for the analysis' gate statistics (default: conf/report.yaml's)"
    )
    restore = commands.add_parser("restore", help="put records back into a sweep directory")
    restore.add_argument("records", type=Path, help="a directory written by save")
    restore.add_argument("sweep", type=Path, help="the sweep directory to resume")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from nmt import records

    try:
        if args.command == "save":
            done = records.save(args.sweep, args.records, device=args.device)
            print(f"saved {len(done)} new run record(s) into {args.records}", file=sys.stderr)
        else:
            done = records.restore(args.records, args.sweep)
            print(f"restored {len(done)} run(s) into {args.sweep}", file=sys.stderr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
