"""Where a report's figures came from: the commands that trained its runs (and its learning-rate
search's), their commits and dates, and the machines, read from each run's done.json
(``provenance``, ``hardware``, ``torch``); and the report's own command."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

from nmt.core.provenance import provenance
from nmt.core.rundir import DONE_FILE


def origins(dones: list[dict]) -> dict:
    """The distinct commands of ``dones`` (done.json contents), each with how many runs it
    trained, its commits and its first and last date, and the distinct machines with their run
    counts. A run recorded before provenance existed counts under the command "unrecorded"."""
    commands: dict[str, dict] = {}
    machines: Counter = Counter()
    for done in dones:
        made = done.get("provenance") or {}
        entry = commands.setdefault(
            made.get("command") or "unrecorded",
            {"runs": 0, "commits": [], "first": None, "last": None},
        )
        entry["runs"] += 1
        commit = made.get("commit") or "unrecorded"
        if commit not in entry["commits"]:
            entry["commits"].append(commit)
        if date := made.get("date"):
            entry["first"] = min(filter(None, [entry["first"], date]))
            entry["last"] = max(filter(None, [entry["last"], date]))
        hardware = done.get("hardware", "unrecorded").replace(", 1 threads (", ", 1 thread (")
        machines[hardware] += 1
    return {
        "commands": [{"command": c, **e} for c, e in commands.items()],
        "machines": [{"hardware": h, "runs": n} for h, n in machines.most_common()],
    }


def sweep_origins(dones: list[dict], sweep_dir: Path | None) -> dict:
    """The origins of a report: its runs', its sweep's search runs' (``tune/``) where it has
    them, and this process's (the report's own command, commit and date)."""
    tuned = sorted(Path(sweep_dir).glob(f"tune/*/{DONE_FILE}")) if sweep_dir else []
    return {
        "runs": origins(dones),
        "search": origins([json.loads(p.read_text()) for p in tuned]) if tuned else None,
        "report": provenance(),
    }


def _merged(entries: list[dict]) -> list[dict]:
    """Commands of one run each that differ only in some overrides' values (the search's, one
    process a rate) as one entry whose varying values read ``key=<key>``."""
    kept, shapes = [], {}
    for entry in entries:
        words = shlex.split(entry["command"]) if entry["command"] != "unrecorded" else []
        if entry["runs"] != 1 or not words:
            kept.append(entry)
            continue
        shape = tuple(w.split("=", 1)[0] for w in words)
        shapes.setdefault(shape, []).append((words, entry))
    for shape, group in shapes.items():
        words = [
            column[0] if len(set(column)) == 1 else f"{key}=<{key.rsplit('.', 1)[-1]}>"
            for key, column in zip(shape, zip(*(w for w, _ in group), strict=True), strict=True)
        ]
        dates = [d for _, e in group for d in (e["first"], e["last"]) if d]
        kept.append(
            {
                "command": shlex.join(words),
                "runs": len(group),
                "commits": list(dict.fromkeys(c for _, e in group for c in e["commits"])),
                "first": min(dates, default=None),
                "last": max(dates, default=None),
            }
        )
    return kept


def origins_markdown(made: dict) -> str:
    """The commands, commits and machines behind a report, as a table and two lines."""
    lines = [
        "How these results were made (each run's `done.json`: the command that trained it, the "
        "commit of the code, when its process last started, the machine):",
        "",
        "| phase | command | runs | commit | last started |",
        "|---|---|---|---|---|",
    ]
    for phase in ("search", "runs"):
        for entry in _merged((made.get(phase) or {}).get("commands", [])):
            dates = " – ".join(dict.fromkeys(filter(None, [entry["first"], entry["last"]])))
            lines.append(
                f"| {phase} | `{entry['command']}` | {entry['runs']} | "
                f"{', '.join(entry['commits'])} | {dates or 'unrecorded'} |"
            )
    machines = Counter()
    for phase in ("search", "runs"):
        for m in (made.get(phase) or {}).get("machines", []):
            machines[m["hardware"]] += m["runs"]
    lines += [
        "",
        "Machines: "
        + "; ".join(f"{h} ({n} run{'' if n == 1 else 's'})" for h, n in machines.most_common())
        + ".",
    ]
    if report := made.get("report"):
        lines.append(
            f"This report: `{report['command']}` at commit {report['commit'] or 'unrecorded'}, "
            f"{report['date']}."
        )
    return "\n".join(lines)
