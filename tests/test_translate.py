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
