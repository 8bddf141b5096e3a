"""Where a report's figures came from (nmt.report.origins): each command with its runs, commits
and dates, the machines, and the search's one-rate commands as one row."""

from __future__ import annotations


def test_the_origins_name_each_command_commit_and_machine_and_merge_the_search():
    from nmt.report.origins import origins, origins_markdown

    def done(command, commit, date, hardware="CPU X, 1 threads (torch 2)"):
        made = {"command": command, "commit": commit, "date": date}
        return {"provenance": made, "hardware": hardware}

    sweep = "nmt-train -m experiment=e model=gru,lstm seed=1,2"
    runs = origins([done(sweep, "a1", "2026-01-02"), done(sweep, "b2", "2026-01-01"), {}])
    assert runs["commands"] == [
        {"command": sweep, "runs": 2, "commits": ["a1", "b2"], "first": "2026-01-01",
         "last": "2026-01-02"},
        {"command": "unrecorded", "runs": 1, "commits": ["unrecorded"], "first": None,
         "last": None},
    ]  # fmt: skip
    assert runs["machines"] == [
        {"hardware": "CPU X, 1 thread (torch 2)", "runs": 2},
        {"hardware": "unrecorded", "runs": 1},
    ]
    search = origins(
        [done(f"nmt-train -m model={c} optim.lr={lr} seed=1", "a1", "2026-01-01") for c, lr in
         [("gru", 0.1), ("lstm", 0.1), ("gru", 0.2)]]
    )  # fmt: skip
    text = origins_markdown({"runs": runs, "search": search, "report": None})
    assert (
        "| search | `nmt-train -m 'model=<model>' 'optim.lr=<lr>' seed=1` | 3 | a1 | 2026-01-01 |"
        in text
    )
    assert f"| runs | `{sweep}` | 2 | a1, b2 | 2026-01-01 – 2026-01-02 |" in text
    assert "Machines: CPU X, 1 thread (torch 2) (5 runs); unrecorded (1 run)." in text
