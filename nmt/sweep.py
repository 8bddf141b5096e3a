"""Ablation sweeps: ``nmt-ablate`` (``make ablate``) and the Hydra callback that writes the report.

A preset without an ``ablation`` block (``ablation_quick``) is a plain Hydra multirun over its
``hydra.sweeper.params``. A preset with one runs in phases, each a Hydra multirun of
``nmt-train`` (so every launcher, resume rule and run name is the usual one):

1. tuning (``ablation.tune``): every cell x attention of the grid (or every cell with
   ``tune.attention`` only, its rate then serving all its attentions) trains with each learning
   rate of ``tune.lrs`` for ``tune.max_steps`` updates, seed ``tune.seed``, into
   ``<sweep>/tune``; the best validation BLEU picks the rate, written to ``<sweep>/tuning.json``.
   Every cell gets the same budget;
2. one multirun per attention of ``ablation.seeds`` (attention -> seeds) over all cells and its
   seeds, each run taking its tuned rate (the preset sets ``optim.lr: ${nmt_tuned_lr:...}``);
3. the report over ``<sweep>`` (tuning included).

Rerunning the same command skips finished runs and resumes unfinished ones (``train.resume=auto``):
an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nmt.compose import compose
from nmt.errors import UserError, require_extra
from nmt.rundir import DONE_FILE, TUNING_FILE, write_json

log = logging.getLogger("nmt")
JOBLIB = "hydra_plugins.hydra_joblib_launcher"  # ablation.jobs > 1 runs its jobs through it

TUNE_DIR = "tune"
PLANNED = ("model", "model.cell", "model.attention", "seed", "optim.lr")  # set by the plan


class ReportCallback(Callback):
    """After the last job of a multirun: ``nmt.report.write_report(<sweep dir>)``."""

    def __init__(self, out: str | None = None):
        self.out = out

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        out = Path(self.out) if self.out else None
        if write_report_or_say_why(sweep_dir, out, device=config.device):
            sys.exit(1)  # the sweep's exit status says that it did not finish


def write_report_or_say_why(sweep_dir: Path, out: Path | None = None, *, device: str) -> int:
    """The report of a finished sweep; on failure one line that says how to rebuild it, and 1
    (every run is saved; only the report is missing)."""
    from nmt import report  # imported late: the jobs never need matplotlib

    try:
        written = report.write_report(sweep_dir, out, device=device)
    except report.ReportError as e:
        print(
            f"error: report: {e}; the runs are complete, rebuild the report with: "
            f"python scripts/report.py {sweep_dir}",
            file=sys.stderr,
        )
        return 1
    log.info("report: %s", written)
    return 0


def choose_rates(tune_dir: Path, plan: DictConfig) -> dict:
    """tuning.json's content from the finished tuning runs: per cell and attention every rate's
    best validation BLEU (None where the run failed) and the chosen rate."""
    found: dict[tuple[str, str, float], dict] = {}
    for done_path in sorted(tune_dir.glob(f"*/{DONE_FILE}")):
        config = OmegaConf.load(done_path.parent / "config.yaml")
        key = (config.model.cell, config.model.attention, float(config.optim.lr))
        found[key] = json.loads(done_path.read_text())
    attentions = _tuned_attentions(plan)
    runs, chosen = [], {}
    for cell in plan.cells:
        for attention in attentions:
            scored = []
            for lr in plan.tune.lrs:
                done = found.get((cell, attention, float(lr)))
                if done is None:
                    raise UserError(f"{tune_dir}: no tuning run of {cell}, {attention}, lr={lr}")
                ok = done.get("status") == "finished"
                runs.append(
                    {
                        "cell": cell,
                        "attention": attention,
                        "lr": float(lr),
                        "status": done.get("status"),
                        "steps": done.get("steps"),
                        "valid_bleu": done.get("bleu") if ok else None,
                    }
                )
                if ok:
                    scored.append((done["bleu"], -float(lr), float(lr)))
            if not scored:
                raise UserError(f"{tune_dir}: every tuning run of {cell}, {attention} failed")
            # Best validation BLEU; a tie goes to the smaller rate.
            chosen.setdefault(cell, {})[attention] = max(scored)[2]
        if plan.tune.attention is not None:  # one tuning per cell, its rate for every attention
            rate = chosen[cell][plan.tune.attention]
            chosen[cell] = {plan.tune.attention: rate, **{a: rate for a in plan.seeds}}
    return {
        "lrs": [float(x) for x in plan.tune.lrs],
        "max_steps": int(plan.tune.max_steps),
        "seed": int(plan.tune.seed),
        "attention": plan.tune.attention,
        "metric": "best validation BLEU (greedy)",
        "runs": runs,
        "chosen": chosen,
    }


def _tuned_attentions(plan: DictConfig) -> list[str]:
    return [plan.tune.attention] if plan.tune.attention is not None else sorted(plan.seeds)


def _nmt_train(args: list[str]) -> int:
    """One ``nmt-train`` process (a Hydra multirun), its output passed through."""
    beside = Path(sys.executable).with_name("nmt-train")  # the same environment's script
    command = [str(beside) if beside.is_file() else shutil.which("nmt-train") or "nmt-train", *args]
    log.info("nmt-ablate: %s", " ".join(command[1:]))
    return subprocess.run(command, check=False).returncode


def ablate(args: list[str]) -> int:
    """``nmt-ablate ARGS``: the sweep of the preset ARGS names (see the module docstring)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.startswith("-") for a in args):  # Hydra's flags (--cfg hydra, ...): its own handling
        return _nmt_train(args)
    # The plan is read from the preset with the grid values (model=gru,lstm) left out.
    parsed = OverridesParser.create().parse_overrides(args)
    single = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose("train", single, hydra_config=True)
    plan = cfg.ablation
    if plan is None:  # the preset's own grid (hydra.mode: MULTIRUN) and report callback
        return _nmt_train(args)
    taken = [a for a in args if a.lstrip("+~").split("=")[0] in PLANNED]
    if taken:
        raise UserError(
            f"{taken[0]}: this preset's grid comes from its ablation block; change it with "
            "ablation.cells=[...], ablation.seeds.<attention>=[...] or ablation.tune.lrs=[...]"
        )
    sweep_dir = Path(cfg.hydra.sweep.dir)
    args = [a for a in args if not a.startswith("hydra.sweep.dir=")]  # set per phase below
    common = ["-m", *args, "~hydra.callbacks.report"]
    if plan.jobs > 1:
        require_extra("launchers", f"ablation.jobs={plan.jobs}", (JOBLIB,))
        common += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={plan.jobs}"]
    cells = f"model={','.join(plan.cells)}"
    if plan.tune.lrs:
        attentions = ",".join(_tuned_attentions(plan))
        code = _nmt_train(
            [
                *common,
                f"hydra.sweep.dir={sweep_dir / TUNE_DIR}",
                cells,
                f"model.attention={attentions}",
                f"optim.lr={','.join(str(float(x)) for x in plan.tune.lrs)}",
                f"seed={plan.tune.seed}",
                f"train.max_steps={plan.tune.max_steps}",
                "final_eval=[]",
            ]
        )
        if code:
            return code
        tuning = choose_rates(sweep_dir / TUNE_DIR, plan)
        write_json(sweep_dir / TUNING_FILE, tuning)
        log.info("nmt-ablate: tuned learning rates %s", tuning["chosen"])
    for attention, seeds in plan.seeds.items():
        seeds = ",".join(str(s) for s in seeds)
        code = _nmt_train(
            [
                *common,
                f"hydra.sweep.dir={sweep_dir}",
                cells,
                f"model.attention={attention}",
                f"seed={seeds}",
            ]
        )
        if code:
            return code
    return write_report_or_say_why(sweep_dir, device=cfg.device)
