"""How long a sweep took (nmt.report.clock), from logs written as its training processes write
them: two jobs at once counted once, a pause left out, a skipped run and a resumed one."""

from __future__ import annotations

from pathlib import Path

from nmt.report.clock import PAUSE_S, sittings, sweep_clock


def log_lines(path: Path, *lines: tuple[str, str]) -> None:
    """Append ``(time, message)`` lines to ``path`` in the format of the runs' nmt.log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for at, message in lines:
            f.write(f"[2026-12-07 {at},123][nmt][INFO] - {message}\n")


def start(run: Path) -> str:
    return f"run directory: {run}"


def test_a_sweep_is_timed_while_any_of_its_runs_ran(tmp_path):
    sweep = tmp_path / "sweep"
    a, b, c = sweep / "tune" / "lr=0.1", sweep / "tune" / "lr=0.2", sweep / "cell=gru"
    # The search: two jobs at once, 10:00-10:30 and 10:10-10:40 (40 minutes of wall clock, 60 of
    # jobs); a line of a message spread over two lines has no time.
    log_lines(a / "nmt.log", ("10:00:00", start(a)), ("10:30:00", "step 800"))
    (a / "nmt.log").open("a").write("  a continuation line\n")
    log_lines(b / "nmt.log", ("10:10:00", start(b)), ("10:40:00", "step 800"))
    (a / "done.json").write_text("{}")
    # The run: 10:41-11:00, a pause of two hours, resumed 13:00-13:30, then skipped once at 14:00
    # (a sweep rerun after it finished): 50 minutes.
    log_lines(
        c / "nmt.log",
        ("10:41:00", start(c)),
        ("11:00:00", "step 100 valid bleu 3.0"),
        ("13:00:00", start(c)),
        ("13:00:05", f"resumed from {c}/last at step 100"),
        ("13:30:00", "step 300 valid bleu 9.0"),
        ("14:00:00", f"{c}: finished before (finished); skipped. Delete the directory ..."),
    )
    (c / "done.json").write_text("{}")

    assert [(s.hour, s.minute, e.hour, e.minute) for s, e in sittings(c / "nmt.log")] == [
        (10, 41, 11, 0),
        (13, 0, 13, 30),
        (14, 0, 14, 0),
    ]
    clock = sweep_clock(sweep)
    assert clock["search"]["wall_hours"] == round(40 / 60, 3)
    assert clock["search"]["job_hours"] == 1.0
    assert clock["search"]["runs"] == 2 and clock["search"]["finished"] == 1
    assert clock["runs"]["wall_hours"] == round(49 / 60, 3)  # 19 + 30 minutes
    assert clock["runs"]["runs"] == 1 and clock["runs"]["finished"] == 1
    assert clock["whole"]["wall_hours"] == round(89 / 60, 3)
    assert clock["whole"]["first"] == "2026-12-07T10:00:00"
    assert clock["whole"]["last"] == "2026-12-07T14:00:00"
    # 10:00-11:00 (the next run began within PAUSE_S), 13:00-13:30, 14:00
    assert PAUSE_S < 60 * 60
    assert clock["whole"]["sittings"] == 3 and clock["runs"]["sittings"] == 3


def test_no_logs_no_clock(tmp_path):
    (tmp_path / "sweep" / "cell=gru").mkdir(parents=True)
    assert sweep_clock(tmp_path / "sweep") is None
