"""Where a result came from: the command as it was typed, the toolkit's version and commit, and
when. Free of torch, so a command records its line before anything heavy loads."""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path


def source_commit() -> str | None:
    """The git commit of this source tree (``+dirty`` when nmt/ or conf/ differ from it), or None
    for an installed package or a tree without git."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:  # e.g. a wheel in a venv inside some clone
        return None
    commit = git("rev-parse", "--short=12", "HEAD")
    if commit and git("status", "--porcelain", "--", "nmt", "conf"):
        commit += "+dirty"
    return commit


_command: list[str] = []  # the command line as typed (nmt.cli records it before rewriting it)


def record_command(argv: list[str]) -> None:
    _command[:] = [Path(argv[0]).name, *argv[1:]]


def provenance() -> dict:
    """Where a result came from, for the artifacts that hold it (done.json, scores.json): the
    command as it was run, the toolkit's version and commit, and when."""
    from nmt import __version__

    return {
        "command": shlex.join(_command or [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "nmt": __version__,
        "commit": source_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
