"""What differs between a saved run and a command's settings (nmt.core.overrides)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from test_config import compose_train


def test_a_run_continues_under_another_precision_or_from_before_the_key(tmp_path):
    """precision, like the device, may change between a run and its continuation (another
    machine), and a run saved before the key existed is not 'trained with other settings'; a
    key that changes results still is."""
    from nmt.core.overrides import changed_settings

    saved = tmp_path / "config.yaml"
    cfg = compose_train("precision=bf16")
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["precision"]
    OmegaConf.save(OmegaConf.create(old), saved)
    assert changed_settings(compose_train("precision=fp32"), saved) == []
    assert changed_settings(cfg, saved) == []
    assert [k for k, *_ in changed_settings(compose_train("seed=7"), saved)] == ["seed"]


def test_an_option_added_since_a_run_was_made_counts_only_when_on(tmp_path):
    """A run saved before model.conditional and train.keep_last existed continues under
    today's defaults (off); turning the new option on is another run."""
    from nmt.core.overrides import changed_settings

    saved = tmp_path / "config.yaml"
    old = OmegaConf.to_container(compose_train(), resolve=True)
    del old["model"]["conditional"], old["train"]["keep_last"]
    OmegaConf.save(OmegaConf.create(old), saved)
    assert changed_settings(compose_train(), saved) == []
    assert changed_settings(compose_train("train.keep_last=3"), saved) == []  # kept, not trained
    changed = changed_settings(compose_train("model.conditional=true"), saved)
    assert changed == [("model.conditional", None, True)]


def test_a_path_quoted_for_an_override_reads_back_as_itself():
    """A sweep's run directory (``model.attention=bahdanau,model=gru,seed=1``) passed as
    ``run_dir=`` unquoted is a syntax error (a path with a comma alone, a sweep); quoted, it is
    one path, alone or in a list, whatever quotes, spaces or brackets it holds."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from nmt.core.overrides import quoted

    parser = OverridesParser.create()
    sweep_run = "runs/ablation_gates/model.attention=bahdanau,model=gru,seed=1"
    with pytest.raises(HydraException):
        parser.parse_override(f"run_dir={sweep_run}")
    assert parser.parse_override("run_dir=runs/a,b").is_sweep_override()
    for path in (sweep_run, "it's here", "a b [c]", "back\\slash", "plain"):
        assert parser.parse_override(f"run_dir={quoted(path)}").value() == path
        listed = parser.parse_override(f"compare=[{quoted(path)},{quoted('x')}]")
        assert listed.value() == [path, "x"]


def test_an_unquoted_sweep_run_is_one_line_that_shows_the_quotes(tmp_path, capsys):
    """``run_dir=`` a sweep's run, unquoted, is Hydra's syntax error: the one line says what to
    type, and what it says composes to that directory."""
    from nmt.core.overrides import check_overrides

    run = str(tmp_path / "model.attention=bahdanau,model=gru,seed=1")
    with pytest.raises(SystemExit) as stopped:
        check_overrides("serve", [f"run_dir={run}", "port=8000"])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: run_dir={run}: ") and "quoted" in line
    typed = line.split("(in a shell: ")[1].removesuffix(")")
    assert typed == f"\"run_dir='{run}'\""
    cfg = check_overrides("serve", [typed.strip('"'), "port=8000"])  # as the shell passes it
    assert cfg.run_dir == run
