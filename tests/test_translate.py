from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import nmt_translate
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from nmt.translate import Translator, single_line

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
LONG = "house " * 2000


def test_api_one_output_per_input(tiny_run):
    translator = Translator.from_run_dir(tiny_run, search={"beam_size": 2})
    out = translator.translate(["A dog runs.", "", LONG, "Two men."])
    assert len(out) == 4 and out[1] == ""
    full = translator.translate_full([LONG])
    assert full[0].truncated
    # One string in, one string out (compared with the same batch of one: a batch of four may
    # break a near tie otherwise, its matrix products blocked another way).
    alone = translator.translate(["Two men."])
    assert isinstance(alone[0], str) and translator.translate("Two men.") == alone[0]
    assert translator.translate_full("Two men.").texts == alone


def test_api_and_command_line_translate_alike(tiny_run):
    """With nothing chosen, the API decodes as nmt-translate does (conf/translate.yaml: beam 5,
    precision auto), not with the search the run was trained with (greedy)."""
    from nmt.core.runtime import pick_device, pick_precision

    lines = ["A dog runs in the park.", "", "Two men talk.", "A woman reads a book."]
    api = Translator.from_run_dir(tiny_run)
    assert OmegaConf.load(tiny_run / "config.yaml").search.beam_size == 1
    assert (api.search.beam_size, api.search.alpha) == (5, 0.6)
    assert api.precision == pick_precision("auto", pick_device("auto"))
    cli = nmt_translate(tiny_run, "".join(f"{t}\n" for t in lines).encode())
    assert cli.returncode == 0, cli.stderr.decode()[-2000:]
    assert cli.stdout.decode().split("\n")[:-1] == api.translate(lines)
    # A setting chosen on both sides: the same translations again.
    greedy = nmt_translate(tiny_run, "".join(f"{t}\n" for t in lines).encode(), "search=greedy")
    api_greedy = Translator.from_run_dir(tiny_run, search="greedy").translate(lines)
    assert greedy.stdout.decode().split("\n")[:-1] == api_greedy
    with pytest.raises(ValidationError):
        Translator.from_run_dir(tiny_run, max_tokens="many")


def test_translations_stay_on_one_line():
    assert single_line("ein\nHund\r\nläuft\r") == "ein Hund läuft "


def test_gates_written_for_each_line(tiny_run, tmp_path):
    """nmt-translate gates=DIR: each line's gates as JSON (every unit, the rows as the pieces)
    and as a PNG, the translation on stdout as without it; none for an empty line."""
    import json

    import matplotlib.image

    lines = ["A dog runs in the park.", "", "Two men talk."]
    stdin = "".join(f"{t}\n" for t in lines).encode()
    plain = nmt_translate(tiny_run, stdin, "backend=torch", "precision=fp32")
    out = tmp_path / "gates"
    done = nmt_translate(tiny_run, stdin, "backend=torch", "precision=fp32", f"gates={out}")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == plain.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "0001.json",
        "0001.png",
        "0003.json",
        "0003.png",
    ]
    translations = done.stdout.decode().split("\n")
    translator = Translator.from_run_dir(tiny_run, backend="torch", precision="fp32")
    for line in (1, 3):
        values = json.loads((out / f"{line:04d}.json").read_text())
        assert values["line"] == line and values["text"] == lines[line - 1]
        assert values["translation"] == translations[line - 1]
        result = translator.translate_full(lines[line - 1])
        assert values["source"] == result.src_pieces + ["</s>"]
        assert [layer["name"] for layer in values["layers"]] == [
            "encoder layer 1, forward",
            "encoder layer 1, backward",
            "decoder layer 1",
        ]
        decoder = values["layers"][2]["gates"]["update"]
        assert len(decoder["units"]) == len(values["target"]) and len(decoder["units"][0]) == 64
        image = matplotlib.image.imread(out / f"{line:04d}.png")
        assert image.shape[0] > 100 and image.shape[1] > 200  # a real figure


def test_gates_refused_in_one_line_where_the_backend_has_none(tiny_run, tmp_path):
    """Refused before the model loads: onnxruntime's graphs and an ensemble have no gates to
    show; backend=auto takes PyTorch for them."""
    for asked in (["backend=onnxruntime"], [f"ensemble=[{tiny_run}]"]):
        done = nmt_translate(tiny_run, b"A dog.\n", *asked, f"gates={tmp_path / 'g'}")
        assert done.returncode == 1 and done.stdout == b""
        error = done.stderr.decode()
        assert error.count("\n") == 1 and "has no gates to show; use backend=torch" in error
        assert not (tmp_path / "g").exists()
    auto = nmt_translate(tiny_run, b"A dog.\n", f"gates={tmp_path / 'g'}")  # backend=auto
    assert auto.returncode == 0 and (tmp_path / "g" / "0001.json").is_file()
