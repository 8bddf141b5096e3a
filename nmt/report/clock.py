"""How long a sweep took, from its runs' own logs: the wall clock of each phase (the learning-rate
search in ``tune/``, then the runs) and of the whole, with the pauses left out.

Every training process appends to its run's ``nmt.log``, and its first line names the directory
(``run directory: ...``), or says that the run finished before and is skipped; so a run's log is a
list of sittings, each from such a line to the last line before the next one. A sweep stopped and resumed later shows as a gap in which
no run of it wrote anything. The wall clock of a phase is the length of the union of its runs'
sittings (two jobs at a time count once); its job time is their sum (a job's threads are the
run's ``train.threads``). A sitting that was killed ends at its last line, so the figures can
fall short by up to one validation interval per interruption, never exceed.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from nmt.core.rundir import DONE_FILE

LOG_FILE = "nmt.log"
# The first line a training process writes into a run's log: training, or skipping a finished run.
STARTS = (" - run directory: ", ": finished before (")
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")
# Two sittings of the sweep are one when less than this lies between them (a job starting the
# next run, the sweep's report): more is a pause.
PAUSE_S = 300.0


def sittings(log: Path) -> list[tuple[datetime, datetime]]:
    """(first, last) time of each process that wrote into ``log``, oldest first."""
    spans: list[list[datetime]] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue  # a continuation line of a multi-line message
        at = datetime.strptime(f"{stamp[1]}.{stamp[2]}", "%Y-%m-%d %H:%M:%S.%f")
        if any(start in line for start in STARTS) or not spans:
            spans.append([at, at])
        else:
            spans[-1][1] = at
    return [(a, b) for a, b in spans]


def merged(spans: list[tuple[datetime, datetime]], gap_s: float = 0.0) -> list[list[datetime]]:
    """The union of ``spans`` as disjoint intervals; ones closer than ``gap_s`` joined."""
    out: list[list[datetime]] = []
    for a, b in sorted(spans):
        if out and (a - out[-1][1]).total_seconds() <= gap_s:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _hours(intervals) -> float:
    return sum((b - a).total_seconds() for a, b in intervals) / 3600


def phase_clock(logs: list[Path]) -> dict | None:
    """The wall clock of the runs whose logs are ``logs``: hours while any of them ran, the sum
    of their sittings (job-hours), the sittings of the whole (pauses between), first and last."""
    spans = [s for log in logs for s in sittings(log)]
    if not spans:
        return None
    busy = merged(spans)
    return {
        "runs": len(logs),
        "finished": sum((log.parent / DONE_FILE).is_file() for log in logs),
        "wall_hours": round(_hours(busy), 3),
        "job_hours": round(_hours(spans), 3),
        "sittings": len(merged(spans, PAUSE_S)),
        "first": min(a for a, _ in spans).isoformat(timespec="seconds"),
        "last": max(b for _, b in spans).isoformat(timespec="seconds"),
    }


def sweep_clock(sweep_dir: Path) -> dict | None:
    """{"search", "runs", "whole"} for a sweep directory (``phase_clock`` each; the search is
    the runs under ``tune/``), or None where no run has a log."""
    sweep_dir = Path(sweep_dir)
    search = sorted(sweep_dir.glob(f"tune/*/{LOG_FILE}"))
    runs = sorted(sweep_dir.glob(f"*/{LOG_FILE}"))
    whole = phase_clock(search + runs)
    if whole is None:
        return None
    return {"search": phase_clock(search), "runs": phase_clock(runs), "whole": whole}
