"""Hydra entry points: compose the configuration, turn its groups into arguments, call the stages.

Each ``*_main`` is a console script (``nmt-data``, ``nmt-spm``, ``nmt-train``, ``nmt-translate``,
``nmt-eval``). A stage reads its input artifact from ``run_dir`` (running the cheap, cached
upstream stages when it is missing) and writes its own artifact there. Errors the user can fix
(:class:`nmt.core.errors.UserError`) print as one line and exit with status 1.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

from nmt import __version__, resume, sweep
from nmt.core.compose import conf_dir
from nmt.core.config import register_configs
from nmt.core.errors import UserError, one_line, os_error_line, require_extra
from nmt.core.overrides import cell_as_preset, check_overrides
from nmt.core.provenance import record_command
from nmt.core.rundir import write_json

if TYPE_CHECKING:
    from nmt.translate import Translator

# The stages (and torch with them, about two seconds) are imported by the task that runs them:
# what this module imports at the top is free of torch, so a command that is refused (a bad
# override, a run directory it must not touch, a missing extra) says so in a fraction of that.

CONF_DIR = conf_dir()  # where Hydra finds conf/ (nmt.core.compose.conf_dir)


def _run_dir() -> Path:
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_task(cfg: DictConfig) -> None:
    """Data stage: write run_dir/data (the cleaned corpus in datasets format)."""
    from nmt import pipeline

    pipeline.stage_data(cfg, _run_dir())


def spm_task(cfg: DictConfig) -> None:
    """Tokenizer stage: write run_dir/spm.model and run_dir/encoded."""
    from nmt import pipeline

    pipeline.stage_spm(cfg, _run_dir())


# The process of a multirun (nmt-train -m), for the jobs its launcher runs in other processes.
SWEEP_PID = "NMT_SWEEP_PID"


def train_task(cfg: DictConfig) -> float:
    """Train a model (``nmt.pipeline.train_run``); returns the best validation BLEU."""
    from nmt import pipeline

    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    # joblib's workers outlive their jobs (submitit's job processes end with theirs)
    in_worker = in_sweep and "joblib" in str(hydra_cfg.launcher.get("_target_", ""))
    try:
        return pipeline.train_run(cfg, _run_dir(), in_sweep=in_sweep)
    finally:
        if in_worker:
            _leave_if_the_sweep_is_gone()


def _leave_if_the_sweep_is_gone() -> None:
    """A job that ran in joblib's worker process whose sweep has gone — stopped by a signal
    while the job saved its checkpoint — ends that process, instead of leaving it behind,
    orphaned, to wait for work that never comes (seen: idle for hours, holding memory)."""
    sweep = os.environ.get(SWEEP_PID)
    if sweep and int(sweep) != os.getpid() and os.getppid() != int(sweep):
        failed = sys.exc_info()[0] is not None
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130 if failed else 0)


def translate_task(cfg: DictConfig) -> None:
    """Translate stdin or input=FILE to stdout or output=FILE: exactly one line per input line;
    with gates=DIR, each line's gates too."""
    from nmt.decoding.stream import check_output, translate_file
    from nmt.translate import Translator

    check_output(cfg.output)  # before the model loads
    if cfg.gates:  # the gates are traced in PyTorch, a model at a time: chosen or refused here
        require_extra("report", "nmt-translate gates=DIR")
        if cfg.backend == "onnxruntime" or cfg.ensemble:
            why = "backend=onnxruntime" if cfg.backend == "onnxruntime" else "an ensemble"
            raise UserError(
                f"gates={cfg.gates}: {why} has no gates to show; use backend=torch, one model"
            )
        if cfg.backend == "auto":
            cfg.backend, cfg.quantize = "torch", "none" if cfg.quantize == "auto" else cfg.quantize
    translator = Translator.from_config(cfg)
    each = None
    if cfg.gates:
        refusal = translator.gates_refusal()
        if refusal is not None:
            raise UserError(refusal)
        each = functools.partial(write_gates, translator, Path(cfg.gates))
    translate_file(
        translator,
        cfg.input,
        cfg.output,
        strict=cfg.strict,
        buffer_lines=cfg.buffer_lines,
        each=each,
    )


def write_gates(translator: Translator, out: Path, line: int, text: str, result) -> None:
    """gates=DIR: a line's gates as DIR/<line>.json (the values) and DIR/<line>.png (a panel per
    layer); nothing for an empty line."""
    trace = translator.gates(result)
    if trace is None:
        return
    from nmt.report.plots import plot_token_gates  # matplotlib: only when drawing

    values = {"line": line, "text": text, "translation": result.texts[0], **trace.as_dict()}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{line:04d}.json", values)
    plot_token_gates(values, out / f"{line:04d}.png", title=f"{text}\n{result.texts[0]}")


def _corpus_run(cfg: DictConfig, command: str) -> Path:
    """The run directory whose corpus a command reads (its splits): a model file has none."""
    if cfg.model_file:
        raise UserError(
            f"model={cfg.model_file}: {command} reads the splits of a run directory's corpus; name "
            "it with run_dir=runs/X (model=FILE is for nmt-translate)"
        )
    if not cfg.run_dir:
        raise UserError(f"{command}: name the run with run_dir=runs/X")
    return Path(cfg.run_dir)


def eval_task(cfg: DictConfig) -> dict:
    """Score a split: translate it with the run's model, or score given hypothesis files."""
    from nmt.scoring.evaluate import check_split, evaluate_split, score_files
    from nmt.translate import Translator

    run_dir = _corpus_run(cfg, "nmt-eval")
    check_split(run_dir, cfg.split)  # before the model loads
    if cfg.hyps:
        return score_files(run_dir, cfg.split, list(cfg.hyps), samples=cfg.bootstrap_samples)
    translator = Translator.from_config(cfg)
    evaluation = evaluate_split(
        translator,
        run_dir,
        cfg.split,
        # An ensemble's translations and scores go beside the single model's, not over them.
        checkpoint=cfg.checkpoint + (f"-ensemble{1 + len(cfg.ensemble)}" if cfg.ensemble else ""),
        search_name=cfg.search.name,
        progress=cfg.progress,
    )
    if cfg.attention_plots:
        # Imported here: matplotlib (and scipy through nmt.scoring.stats) cost every nmt-* command about a
        # second at start-up, and only this step draws.
        from nmt.report.plots import attention_heatmaps

        first = evaluation.translations[: cfg.attention_plots]
        attention_heatmaps(first, translator.target_pieces, evaluation.out_dir / "attention")
    return evaluation.scores


def tune_search_task(cfg: DictConfig) -> dict:
    """Choose beam size and length penalty on a split (the validation split by default)."""
    from nmt.scoring.search_tuning import choose_split, tune_search
    from nmt.translate import Translator

    run_dir = _corpus_run(cfg, "nmt-tune-search")
    split = choose_split(run_dir, cfg.split, allow_test=cfg.allow_test)
    return tune_search(
        Translator.from_config(cfg),
        run_dir,
        split,
        list(cfg.beam_sizes),
        list(cfg.alphas),
        checkpoint=cfg.checkpoint,
        progress=cfg.progress,
    )


def export_task(cfg: DictConfig) -> dict:
    """Write a run's model out of its run directory (format=bundle: one file; onnx: a
    directory with the ONNX graphs)."""
    from nmt.serving.export import check_out, write_bundle, write_onnx

    writers = {"bundle": write_bundle, "onnx": write_onnx}
    if cfg.format not in writers:
        raise UserError(f"format={cfg.format!r}: expected bundle or onnx")
    check_out(cfg.out, overwrite=cfg.overwrite)
    manifest = writers[cfg.format](cfg.run_dir, cfg.out, cfg.checkpoint)
    out = Path(cfg.out)
    files = out.rglob("*") if out.is_dir() else [out]
    size = sum(f.stat().st_size for f in files if f.is_file()) / 2**20
    print(
        f"wrote {cfg.out} ({size:.1f} MiB): {manifest['src']}->{manifest['tgt']} "
        f"{manifest['cell']} + {manifest['attention']}, {manifest['parameters']:,} parameters, "
        f"{cfg.checkpoint} (steps {', '.join(map(str, manifest['steps']))}); "
        f"next: nmt-translate model={cfg.out}"
        + (" backend=onnxruntime" if cfg.format == "onnx" else "")
    )
    return manifest


def serve_task(cfg: DictConfig) -> None:
    """Serve the model over HTTP until stopped (Ctrl-C)."""
    require_extra("serve", "nmt-serve")
    import uvicorn

    from nmt import loader
    from nmt.serving.serve import Limits, create_app

    # uvicorn stops on SIGTERM, then raises it again once its handlers are gone: by default the
    # process would die there (or while loading), before the model file unpacked in the temporary
    # directory goes. As an exit, the translator's temporary directories are removed.
    holding, held = [False], []  # a SIGTERM held while uvicorn sets up logging (below)

    def stop(signum, _frame) -> None:
        if holding[0]:
            held.append(signum)
            return
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    models = loader.compared(cfg)
    limits = Limits(**{k: cfg[k] for k in Limits.__dataclass_fields__})
    app = create_app(models, limits)
    names = f" ({', '.join(models)})" if len(models) > 1 else ""
    try:
        # uvicorn's Config sets up logging under logging's locks: a SIGTERM raised in there left
        # a lock released twice and the process ended with a traceback and status 1. It is held
        # until the server is about to run, then stops the process here as anywhere else.
        holding[0] = True
        server = uvicorn.Server(
            uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning")
        )
        print(
            f"serving{names} on http://{cfg.host}:{cfg.port} (POST /translate, docs at /docs)",
            flush=True,
        )
        holding[0] = False  # from here a SIGTERM stops the process at once
        if held:
            sys.exit(128 + held[0])
        server.run()
    finally:
        for translator in models.values():
            translator.close()


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _check_run_dir(cfg: DictConfig) -> Path | None:
    """Before Hydra makes run_dir (its own error is a traceback): a run_dir that is a file."""
    try:
        run_dir = Path(cfg.run_dir)
    except Exception:  # noqa: BLE001 - an interpolation only Hydra's run resolves: it checks later
        return None
    resume.check_run_dir(run_dir)
    return run_dir


def _make_run_dir(run_dir: Path | None) -> None:
    """The last check before Hydra: a run_dir that cannot be made (a read-only file system, no
    permission) is one line; made here, as Hydra would, once nothing else refuses the command."""
    if run_dir is None:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"run_dir={run_dir} cannot be made: {os_error_line(e)}") from None


def _check_stage(command: str, artifact: str) -> Callable[[DictConfig], None]:
    """nmt-data and nmt-spm: never into a run directory that holds a trained run, whose weights
    were trained on the data and tokenizer there (train.resume=true refuses a changed one too)."""

    def check(cfg: DictConfig) -> None:
        run_dir = _check_run_dir(cfg)
        if run_dir is not None and resume.holds_run(run_dir):
            raise UserError(
                f"run_dir={run_dir} holds a trained run; {command} would replace its {artifact} "
                f"under the weights trained on them; name a new run_dir (nmt-train prepares its "
                "own data and tokenizer)"
            )
        _make_run_dir(run_dir)

    return check


def _check_eval(cfg: DictConfig) -> None:
    if cfg.attention_plots:
        require_extra("report", f"attention_plots={cfg.attention_plots}")


# Hydra's launcher plugins, by the name a hydra/launcher= override gives them.
LAUNCHERS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
}


def _check_launcher(args: list[str]) -> None:
    """A launcher named on the command line whose plugin (the [launchers] extra) is missing."""
    for arg in args:
        key, _, name = arg.partition("=")
        if key == "hydra/launcher" and name in LAUNCHERS:
            require_extra("launchers", arg, (LAUNCHERS[name],))


def _check_train(cfg: DictConfig) -> None:
    """Before anything is written: the run directory, and the extras the run asks for."""
    run_dir = _check_run_dir(cfg)
    if cfg.train.tensorboard:
        require_extra("tb", "train.tensorboard=true")
    _make_run_dir(run_dir)


def _entry(
    task: Callable[[DictConfig], object],
    config_name: str,
    preflight: Callable[[DictConfig], None] | None = None,
) -> None:
    if "--version" in sys.argv[1:]:
        print(f"nmt {__version__}")
        return
    record_command(sys.argv)  # for the results' provenance, before model.cell=X is rewritten
    register_configs()
    # The stages here take seconds and the training loop has its own bar (read when datasets loads).
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if config_name == "train":
        sys.argv[1:] = cell_as_preset(sys.argv[1:])
    else:  # model=FILE: a model file (conf/model/ is the train config's group of that name)
        sys.argv[1:] = [
            "model_file=" + a.split("=", 1)[1] if a.startswith("model=") else a
            for a in sys.argv[1:]
        ]
    try:
        _check_launcher(sys.argv[1:])
    except UserError as e:
        _fail(one_line(e))
    cfg = check_overrides(config_name, sys.argv[1:])
    if cfg is not None and preflight is not None:
        try:
            preflight(cfg)
        except UserError as e:
            _fail(one_line(e))

    def guarded(cfg: DictConfig) -> object:
        try:
            return task(cfg)
        except (UserError, InterpolationResolutionError) as e:
            # A resolver's refusal (search=tuned without search.json) is the user's to fix too.
            _fail(one_line(e))
        except OSError as e:  # a path that cannot be written or read, a full disk
            _fail(os_error_line(e))

    guarded.__name__ = task.__name__.removesuffix("_task")
    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(guarded)()


def _reader_may_leave(main: Callable[[], None]) -> Callable[[], None]:
    """A console script whose reader leaves early (``nmt-translate --help | head``) stops quietly,
    with the status a shell gives a program killed by SIGPIPE, instead of a traceback."""

    @functools.wraps(main)
    def wrapped() -> None:
        try:
            main()
            sys.stdout.flush()
        except BrokenPipeError:
            # Python flushes stdout once more at exit: point it at /dev/null first.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)

    return wrapped


@_reader_may_leave
def data_main() -> None:
    _entry(data_task, "train", preflight=_check_stage("nmt-data", "data/"))


@_reader_may_leave
def spm_main() -> None:
    _entry(spm_task, "train", preflight=_check_stage("nmt-spm", "spm.model and encoded/"))


@_reader_may_leave
def train_main() -> None:
    os.environ[SWEEP_PID] = str(os.getpid())  # inherited by a launcher's worker processes
    _entry(train_task, "train", preflight=_check_train)
    from nmt.training.distributed import World

    if World.from_env().enabled:
        # A torchrun rank whose work is done and whose process group is gone leaves without the
        # interpreter's teardown, where a gloo rank was seen to abort (SIGABRT, "terminate called
        # without an active exception") after a finished run, failing the whole launch.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@_reader_may_leave
def translate_main() -> None:
    _entry(translate_task, "translate")


@_reader_may_leave
def eval_main() -> None:
    _entry(eval_task, "eval", preflight=_check_eval)


@_reader_may_leave
def tune_search_main() -> None:
    _entry(tune_search_task, "tune_search")


@_reader_may_leave
def serve_main() -> None:
    _entry(serve_task, "serve")


@_reader_may_leave
def export_main() -> None:
    _entry(export_task, "export")


@_reader_may_leave
def ablate_main() -> None:
    """nmt-ablate: an ablation preset's phases (``nmt.sweep.ablate``), each a multirun of nmt-train."""
    if "--version" in sys.argv[1:]:
        print(f"nmt {__version__}")
        return
    register_configs()
    args = cell_as_preset(sys.argv[1:])
    if any(a in ("-h", "--help") for a in args):
        print(sweep.__doc__)
        return
    check_overrides("train", args)
    try:
        _check_launcher(args)
        require_extra("report", "nmt-ablate (its report's plots and statistics)")
        sys.exit(sweep.ablate(args))
    except UserError as e:
        _fail(one_line(e))
