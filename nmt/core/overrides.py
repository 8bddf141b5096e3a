"""The command line against the configs: overrides checked before a command starts (one line, not
Hydra's page), the cell named either way (``model.cell=X`` read as ``model=X``), and what differs
between a run's saved config.yaml and the settings of a command that meets it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nmt.core.compose import compose, conf_dir
from nmt.core.errors import one_line
from nmt.core.naming import NAME_EXCLUDE


def _flat(node: object, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.removesuffix("."): node}


def quoted(value: str) -> str:
    """``value`` as one value of a Hydra override: single-quoted, so that a path with ``=``,
    ``,``, spaces or brackets (a sweep's run directory is named like
    ``model.attention=bahdanau,model=gru,seed=1``) stays one path and not a sweep or a syntax
    error."""
    return "'" + value.replace("'", "\\'") + "'"


def changed_settings(cfg: DictConfig, saved_path: Path) -> list[tuple[str, object, object]]:
    """(key, saved value, value now) for each setting that differs from a saved config.yaml,
    keys that cannot change results (NAME_EXCLUDE, train.threads) aside, and ``precision``: like
    the device, a run may continue on other hardware (and a run from before the key had none);
    and the sweep plan (``ablation``): a seed added to a sweep does not change its finished runs."""
    neutral = (
        *NAME_EXCLUDE,
        "train.threads",
        "train.keep_last",  # what is kept for averaging, not what is trained
        "train.keep_best",
        "precision",
        "ablation",
    )
    now = _flat(OmegaConf.to_container(cfg, resolve=True))
    saved = _flat(OmegaConf.to_container(OmegaConf.load(saved_path)))
    keys = sorted(
        k for k in now.keys() | saved.keys() if k.split(".")[0] not in neutral and k not in neutral
    )
    # An option added after the run was made, left off (false, 0, null), trains as before.
    new_and_off = {k for k in now.keys() - saved.keys() if now[k] in (False, 0, None, [], "")}
    return [
        (k, saved.get(k), now.get(k))
        for k in keys
        if now.get(k) != saved.get(k) and k not in new_and_off
    ]


def cell_as_preset(args: list[str]) -> list[str]:
    """``model.cell=X`` read as ``model=X``, so that the cell's optimizer preset (``optim:
    ${model}``) follows it whichever way it is spelled; X must be a preset of conf/model/."""
    models = Path(conf_dir()) / "model"
    out = []
    for arg in args:
        key, eq, value = arg.lstrip("+~").partition("=")
        if key != "model.cell" or not eq:
            out.append(arg)
            continue
        if any(a.lstrip("+~").startswith("model=") for a in args):
            print(
                f"error: {arg} beside model=...: choose the cell once, with model={value}",
                file=sys.stderr,
            )
            sys.exit(2)
        unknown = [v for v in value.split(",") if not (models / f"{v}.yaml").is_file()]
        if unknown:
            presets = sorted(p.stem for p in models.glob("*.yaml"))
            presets.remove("base")
            print(
                f"error: model.cell={unknown[0]!r}: expected one of {', '.join(presets)}",
                file=sys.stderr,
            )
            sys.exit(2)
        out.append(f"model={value}")
    return out


def check_overrides(config_name: str, args: list[str]) -> DictConfig | None:
    """Compose once up front so a bad override fails with one line instead of Hydra's page;
    the composed config (None for Hydra's own flags and for sweeps)."""
    if any(a.startswith("-") for a in args) or any("MULTIRUN" in a for a in args):
        return None  # --help, --cfg, -m ...: Hydra's own handling
    overrides = [a for a in args if not a.lstrip("+~").startswith("hydra")]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        # Sweeps (model=gru,lstm) are checked by Hydra itself, against the presets' hydra.mode.
        parsed = OverridesParser.create().parse_overrides(overrides)
        overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
        cfg = compose(config_name, overrides)
    except Exception as e:
        print(f"error: {_unquoted(overrides) or one_line(e)}", file=sys.stderr)
        sys.exit(2)
    return None if any(o.is_sweep_override() for o in parsed) else cfg


def _unquoted(overrides: list[str]) -> str | None:
    """What to type instead of an override whose value holds an '=' (a sweep's run directory,
    ``.../model.attention=bahdanau,model=gru,seed=1``), which Hydra's grammar cannot read
    unquoted; None if none does."""
    for arg in overrides:
        key, eq, value = arg.partition("=")
        if eq and "=" in value and not value.startswith(("'", '"', "[")):
            fixed = f"{key}={quoted(value)}"
            shell = f'"{fixed}"'
            return (
                f"{arg}: a value with '=' in it is quoted for Hydra: {fixed} (in a shell: {shell})"
            )
    return None
