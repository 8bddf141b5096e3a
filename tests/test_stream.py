"""nmt-translate's line stream (nmt.decoding.stream): one line out per line in, invalid input, files written whole."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import nmt_translate
from test_translate import LONG

BIN = Path(sys.executable).parent


def test_cli_three_lines_for_three_lines(tiny_run):
    result = nmt_translate(tiny_run, f"A dog runs.\n\n{LONG}\n".encode())
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[3] == "" and lines[1] == ""  # three lines, newline-terminated
    assert "<stdin>:3: longer than 250 pieces" in result.stderr.decode()


def test_invalid_utf8_line_gives_empty_line_or_stops(tiny_run):
    data = b"A dog.\n\xff\xfe bad\nA cat.\n"
    result = nmt_translate(tiny_run, data)
    assert result.returncode == 0
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == ""
    assert "<stdin>:2: invalid UTF-8 at byte 0 of the line" in result.stderr.decode()
    strict = nmt_translate(tiny_run, data, "strict=true")
    assert strict.returncode == 1
    assert (
        strict.stderr.decode()
        .strip()
        .splitlines()[-1]
        .startswith("error: <stdin>:2: invalid UTF-8")
    )


def test_files_and_n_best(tiny_run, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("A dog runs.\nTwo men.\n\n")
    out = tmp_path / "out.txt"
    result = nmt_translate(tiny_run, b"", f"input={src}", f"output={out}", "search.n_best=3")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    lines = out.read_text().split("\n")[:-1]
    assert len(lines) == 9
    assert all(len(line.split("\t")) == 2 for line in lines)
    scores = [float(line.split("\t")[1]) for line in lines]
    for group in (scores[0:3], scores[3:6]):
        assert group == sorted(group, reverse=True)  # n-best, best first
    assert lines[6:] == ["\t0.0000"] * 3  # an empty line: three empty hypotheses
    too_many = nmt_translate(tiny_run, b"x\n", "search.n_best=6")  # beam5 keeps 5
    assert too_many.returncode == 1
    assert too_many.stderr.decode().strip() == (
        "error: search.n_best=6 with search.beam_size=5: a beam keeps at most beam_size "
        "hypotheses; set search.beam_size=6 or more"
    )


def test_a_failed_translation_leaves_the_output_file_as_it_was(tiny_run, tmp_path):
    """output=FILE appears whole or not at all: a run that stops at a bad line (strict=true)
    leaves an earlier FILE untouched and nothing half-written beside it."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"A dog runs.\n" * 30 + b"\xff bad\n")
    out = tmp_path / "out.txt"
    out.write_text("an earlier translation\n")
    result = nmt_translate(
        tiny_run, b"", f"input={src}", f"output={out}", "strict=true", "buffer_lines=4"
    )
    assert result.returncode == 1 and f"{src}:31: invalid UTF-8" in result.stderr.decode()
    assert out.read_text() == "an earlier translation\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]
    missing = nmt_translate(tiny_run, b"A dog.\n", f"output={tmp_path / 'nowhere' / 'out.txt'}")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr.decode()
    assert missing.stderr.decode().strip().splitlines()[-1] == (
        f"error: output={tmp_path / 'nowhere' / 'out.txt'}: the directory "
        f"{tmp_path / 'nowhere'} does not exist; create it or choose another output"
    )
