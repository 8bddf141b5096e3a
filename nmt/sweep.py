"""Ablation sweeps: ``nmt-ablate`` (``make ablate``) and the Hydra callback that writes the report.

A preset without an ``ablation`` block (``ablation_quick``) is a plain Hydra multirun over its
``hydra.sweeper.params``. A preset with one runs in phases, each training run an ``nmt-train``
job (so every resume rule and run name is the usual one):

1. tuning (``ablation.tune``): every cell (x attention, or with ``tune.attention`` only, its rate
   then serving all its attentions) trains with each learning rate of ``tune.lrs`` for
   ``tune.max_steps`` updates, seed ``tune.seed``, into ``<sweep>/tune``, ``ablation.jobs`` runs at
   once. While a cell's best validation BLEU is at the lowest or highest rate it has tried, the
   next rate beyond that edge (x or / ``tune.factor``) is tried, up to ``tune.max_points`` rates:
   the search stops for a cell once its best has a worse rate on each side (bracketed). The
   chosen rates, every score and whether each optimum is bracketed go to ``<sweep>/tuning.json``.
   Every cell gets the same search and the same budget per rate;
2. one multirun per attention of ``ablation.seeds`` (attention -> seeds) over all cells and its
   seeds, then one per setting of ``ablation.also`` (cells, attention, seeds, overrides such as
   another language pair, in ``extra``), each run taking its cell's tuned rate (the preset sets
   ``optim.lr: ${nmt_tuned_lr:...}``);
3. the report over ``<sweep>`` (tuning included).

Rerunning the same command skips finished runs and resumes unfinished ones (``train.resume=auto``):
an interrupted sweep continues where it stopped, its tuning included.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nmt.core.compose import compose
from nmt.core.errors import UserError, require_extra
from nmt.core.rundir import DONE_FILE, TUNING_FILE, write_json
from nmt.scoring.tuning import bracket

log = logging.getLogger("nmt")
JOBLIB = "hydra_plugins.hydra_joblib_launcher"  # ablation.jobs > 1 runs its jobs through it

TUNE_DIR = "tune"
PLANNED = ("model", "model.cell", "model.attention", "seed", "optim.lr")  # set by the plan


class ReportCallback(Callback):
    """After the last job of a multirun: ``nmt.report.ablation.write_report(<sweep dir>)``."""

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
    from nmt.report import ablation as report  # imported late: the jobs never need matplotlib

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


def tuning_runs(tune_dir: Path) -> dict[tuple[str, str, float], dict]:
    """The finished (done.json) tuning runs: (cell, attention, rate) -> done.json."""
    found = {}
    for done_path in sorted(tune_dir.glob(f"*/{DONE_FILE}")):
        config = OmegaConf.load(done_path.parent / "config.yaml")
        key = (config.model.cell, config.model.attention, float(config.optim.lr))
        found[key] = json.loads(done_path.read_text())
    return found


def _score(done: dict) -> float | None:
    return done.get("bleu") if done.get("status") == "finished" else None


def choose_rates(tune_dir: Path, plan: DictConfig) -> dict:
    """tuning.json's content from the finished tuning runs: per cell and attention every rate's
    best validation BLEU (None where the run failed), the chosen rate and whether it is
    bracketed."""
    found = tuning_runs(tune_dir)
    runs, chosen, bracketed = [], {}, {}
    for cell in plan.cells:
        for attention in _tuned_attentions(plan):
            for lr in plan.tune.lrs:
                if (cell, attention, float(lr)) not in found:
                    raise UserError(f"{tune_dir}: no tuning run of {cell}, {attention}, lr={lr}")
            scored = {}
            for (c, a, lr), done in sorted(found.items()):
                if (c, a) != (cell, attention):
                    continue
                scored[lr] = _score(done)
                runs.append(
                    {
                        "cell": cell,
                        "attention": attention,
                        "lr": lr,
                        "status": done.get("status"),
                        "steps": done.get("steps"),
                        "valid_bleu": scored[lr],
                    }
                )
            if all(v is None for v in scored.values()):
                raise UserError(f"{tune_dir}: every tuning run of {cell}, {attention} failed")
            rate, beyond = bracket(scored, plan.tune.factor)
            chosen.setdefault(cell, {})[attention] = rate
            bracketed.setdefault(cell, {})[attention] = beyond is None
        if plan.tune.attention is not None:  # one tuning per cell, its rate for every attention
            rate = chosen[cell][plan.tune.attention]
            chosen[cell] = {a: rate for a in [plan.tune.attention, *_served(plan)]}
    return {
        "lrs": [float(x) for x in plan.tune.lrs],
        "factor": float(plan.tune.factor),
        "max_points": int(plan.tune.max_points),
        "max_steps": int(plan.tune.max_steps),
        "seed": int(plan.tune.seed),
        "attention": plan.tune.attention,
        "metric": "best validation BLEU (greedy)",
        "runs": runs,
        "chosen": chosen,
        "bracketed": bracketed,
    }


def _served(plan: DictConfig) -> list[str]:
    """Every attention the sweep trains with (its seeds' and its further settings')."""
    return sorted({*plan.seeds, *(setting.attention for setting in plan.also)})


def _tuned_attentions(plan: DictConfig) -> list[str]:
    return [plan.tune.attention] if plan.tune.attention is not None else _served(plan)


def tune(plan: DictConfig, common: list[str], tune_dir: Path) -> None:
    """The tuning phase (module docstring): ``ablation.jobs`` nmt-train jobs at once, each cell's
    next rate decided as soon as its rates so far have all ended. Runs that already ended (an
    interrupted sweep) are read, not trained again; on an error the jobs still running stop
    (a rerun resumes them)."""
    points = {
        (cell, attention): [float(lr) for lr in plan.tune.lrs]
        for cell in plan.cells
        for attention in _tuned_attentions(plan)
    }
    queue = [(key, lr) for key, rates in points.items() for lr in rates]
    running: dict[subprocess.Popen, tuple] = {}
    # The directory is read when the loop starts and when a job ends (only the jobs write to
    # it): each read loads every ended run's config, which a poll each second would repeat.
    ended = tuning_runs(tune_dir)
    try:
        while queue or running:
            queue = [(key, lr) for key, lr in queue if (*key, lr) not in ended]
            while queue and len(running) < max(1, plan.jobs):
                point = queue.pop(0)
                running[_start_train([*common, *_tuning_job(plan, tune_dir, *point)])] = point
            finished = [p for p in running if p.poll() is not None]
            if finished:
                ended = tuning_runs(tune_dir)
            for process in finished:
                (cell, attention), lr = running.pop(process)
                if (cell, attention, lr) not in ended:
                    raise UserError(
                        f"tuning run {cell}, {attention}, lr={lr} ended with status "
                        f"{process.returncode} and no {DONE_FILE} under {tune_dir}; its log "
                        "says why"
                    )
            busy = {key for key, _ in queue} | {key for key, _ in running.values()}
            queue += _beyond_edges(plan, points, ended, busy)
            if running and not finished:
                time.sleep(1.0)
    finally:
        for process in running:
            process.terminate()
            process.wait()


def _tuning_job(plan: DictConfig, tune_dir: Path, key: tuple[str, str], lr: float) -> list[str]:
    cell, attention = key
    return [
        f"hydra.sweep.dir={tune_dir}",
        f"model={cell}",
        f"model.attention={attention}",
        f"optim.lr={lr}",
        f"seed={plan.tune.seed}",
        f"train.max_steps={plan.tune.max_steps}",
        "final_eval=[]",
    ]


def _beyond_edges(plan: DictConfig, points: dict, ended: dict, busy: set) -> list[tuple]:
    """The next rate of every cell whose rates have all ended with the best at an edge (while
    it has tried fewer than tune.max_points); added to ``points``."""
    extra = []
    for key, rates in points.items():
        if key in busy or any((*key, lr) not in ended for lr in rates):
            continue
        if len(rates) >= plan.tune.max_points:
            continue
        _, beyond = bracket({lr: _score(ended[(*key, lr)]) for lr in rates}, plan.tune.factor)
        if beyond is not None and beyond not in rates:
            rates.append(beyond)
            extra.append((key, beyond))
            log.info("nmt-ablate: %s, %s: the best rate is at an edge; trying %s", *key, beyond)
    return extra


def _start_train(args: list[str]) -> subprocess.Popen:
    command = [_nmt_train_command(), *args]
    log.info("nmt-ablate: %s", " ".join(command[1:]))
    return subprocess.Popen(command)


def _nmt_train_command() -> str:
    beside = Path(sys.executable).with_name("nmt-train")  # the same environment's script
    return str(beside) if beside.is_file() else shutil.which("nmt-train") or "nmt-train"


def _nmt_train(args: list[str]) -> int:
    """One ``nmt-train`` process (a Hydra multirun), its output passed through."""
    command = [_nmt_train_command(), *args]
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
    for setting in plan.also:
        strange = sorted(set(setting.cells) - set(plan.cells))
        if strange:
            raise UserError(
                f"ablation.also: {', '.join(strange)} not in ablation.cells: only tuned cells "
                "train in a further setting"
            )
        taken = [o for o in setting.extra if o.lstrip("+~").split("=")[0] in PLANNED]
        if taken:
            raise UserError(
                f"ablation.also extra {taken[0]}: a setting's cells, attention and seeds are its "
                "own fields"
            )
    sweep_dir = Path(cfg.hydra.sweep.dir)
    args = [a for a in args if not a.startswith("hydra.sweep.dir=")]  # set per phase below
    single_jobs = ["-m", *args, "~hydra.callbacks.report"]  # one run each (the tuning's)
    common = list(single_jobs)
    if plan.jobs > 1:
        require_extra("launchers", f"ablation.jobs={plan.jobs}", (JOBLIB,))
        common += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={plan.jobs}"]
    if plan.tune.lrs:
        tune(plan, single_jobs, sweep_dir / TUNE_DIR)
        tuning = choose_rates(sweep_dir / TUNE_DIR, plan)
        write_json(sweep_dir / TUNING_FILE, tuning)
        log.info("nmt-ablate: tuned learning rates %s", tuning["chosen"])
        for cell, by_attention in tuning["bracketed"].items():
            for attention, ok in by_attention.items():
                if not ok:
                    log.warning(
                        "nmt-ablate: %s, %s: the best rate is at an edge of those tried "
                        "(tune.max_points=%s): not tuned, and the report says so",
                        cell,
                        attention,
                        plan.tune.max_points,
                    )
    settings = [(plan.cells, attention, seeds, []) for attention, seeds in plan.seeds.items()]
    settings += [(s.cells, s.attention, s.seeds, list(s.extra)) for s in plan.also]
    for cells, attention, seeds, overrides in settings:
        code = _nmt_train(
            [
                *common,
                f"hydra.sweep.dir={sweep_dir}",
                f"model={','.join(cells)}",
                f"model.attention={attention}",
                f"seed={','.join(str(s) for s in seeds)}",
                *overrides,
            ]
        )
        if code:
            return code
    return write_report_or_say_why(sweep_dir, device=cfg.device)
