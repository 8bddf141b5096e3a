from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import invoke
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nmt.cli import CONF_DIR
from nmt.core.config import Config, register_configs

ROOT = Path(__file__).resolve().parents[1]
GROUPS = sorted(p for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name != "hydra")
# Every option file of every group, found recursively so none is forgotten.
OPTIONS = [
    (group.name, str(f.relative_to(group).with_suffix("")))
    for group in GROUPS
    for f in sorted(group.rglob("*.yaml"))
    if f.stem != "base"
]


def compose_train(*overrides: str, name: str = "train"):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=name != "train")


def test_every_group_has_options():
    assert {g.name for g in GROUPS} >= {
        "data",
        "tokenizer",
        "model",
        "optim",
        "search",
        "experiment",
    }
    assert len(OPTIONS) >= 10


def tuned_run(tmp_path: Path) -> Path:
    """A run directory holding what ``make tune-search`` writes (``search=tuned`` reads it)."""
    (tmp_path / "search.json").write_text('{"chosen": {"beam_size": 3, "alpha": 0.6}}')
    return tmp_path


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if option == "tuned":  # its beam size and alpha come from the run's search.json
        overrides.append(f"run_dir={tuned_run(tmp_path)}")
    if option.startswith("ablation_") and option not in ("ablation_quick", "ablation_full"):
        # its rate comes from nmt-ablate's tuning.json in the sweep
        overrides.append("optim.lr=0.001")  # directory (tests/test_ablate.py), as in the tuning
    cfg = compose_train(*overrides)
    obj = OmegaConf.to_object(cfg)  # resolves every value and checks it against the schema
    assert isinstance(obj, Config)
    if group == "model":
        assert obj.model.cell == option  # each cell's file names its own cell
    # The option took effect: every plain value its file sets is in the composed config (the
    # file's own package: the group, or the whole config for experiments), unless the command
    # line's override for the test set it.
    written = OmegaConf.load(Path(CONF_DIR) / group / f"{option}.yaml")
    is_global = (
        (Path(CONF_DIR) / group / f"{option}.yaml").read_text().startswith("# @package _global_")
    )
    base = OmegaConf.to_container(cfg if is_global else cfg[group], resolve=True)
    for key, value in _plain_values(OmegaConf.to_container(written, resolve=False)):
        if key in ("defaults",) or key.split(".")[0] in ("hydra", "defaults"):
            continue
        if any(o.split("=")[0] in (key, f"{group}.{key}") for o in overrides[1:]):
            continue
        assert _at(base, key) == value, (group, option, key)


def _plain_values(tree: dict, prefix: str = ""):
    """(dotted key, value) of a YAML tree's leaves that are values, not interpolations."""
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _plain_values(v, key + ".")
        elif not (isinstance(v, str) and "${" in v):
            yield key, v


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_typo_in_override_is_rejected():
    with pytest.raises(Exception, match="srcc"):
        compose_train("data.srcc=en")
    with pytest.raises(Exception, match="max_steps"):
        compose_train("train.max_steps=many")


def test_cli_typo_fails_with_one_line(tmp_path):
    result = invoke("nmt-data", "data.srcc=en", f"run_dir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "srcc" in lines[0]


@pytest.mark.parametrize("name", ["translate", "eval"])
@pytest.mark.parametrize("search", [o for g, o in OPTIONS if g == "search"])
def test_translate_and_eval_configs_compose(name, search, tmp_path):
    cfg = compose_train(f"run_dir={tuned_run(tmp_path)}", f"search={search}", name=name)
    assert cfg.hydra.job_logging.handlers.console.stream == "ext://sys.stderr"
    from nmt.core.config import EvalConfig, TranslateConfig

    schema = TranslateConfig if name == "translate" else EvalConfig
    node = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    assert isinstance(obj, schema) and obj.search.name == search
    if search == "tuned":
        assert (obj.search.beam_size, obj.search.alpha) == (3, 0.6)


def schema_keys() -> set[str]:
    """Every key of every config: the fields of the schema's dataclasses, nested ones included."""
    import dataclasses
    import typing

    from nmt.core import config

    keys, todo = set(), [config.Config, config.TranslateConfig, config.EvalConfig]
    todo.append(config.TuneSearchConfig)
    while todo:
        cls = todo.pop()
        hints = typing.get_type_hints(cls, vars(config))
        for f in dataclasses.fields(cls):
            keys.add(f.name)
            todo += [t for t in (hints[f.name], *typing.get_args(hints[f.name]))]
            todo = [t for t in todo if dataclasses.is_dataclass(t)]
    return keys


# Parameters that carry a conf key under another name.
ALIASES = {"samples": "bootstrap_samples", "edges": "buckets"}


def report_keys() -> set[str]:
    """The keys of conf/report.yaml (the report's settings, which have no dataclass)."""
    return set(OmegaConf.load(ROOT / "conf" / "report.yaml").keys())


def defaults_in_code(keys: set[str]) -> list[str]:
    """Parameters and class fields of nmt/ named as a config key (or its alias) whose default is
    a value, and options of scripts/report.py (which reads conf/report.yaml) with a default: the
    YAML under conf/ is that key's one home. None (the key's absence, or "as conf/ says") is no
    value; in the schema (config.py) MISSING, a nested group's field(default_factory=Group) and
    an empty list's are none either."""
    import ast

    def is_value(node: ast.expr, schema: bool) -> bool:
        if isinstance(node, ast.Constant) and node.value is None:
            return False
        if schema and isinstance(node, ast.Name) and node.id == "MISSING":
            return False
        if schema and isinstance(node, ast.Call) and ast.unparse(node.func) == "field":
            factory = ast.unparse(node.keywords[0].value) if node.keywords else ""
            return factory.startswith("lambda")  # a value made by a function is a default too
        return True

    def named(name: str) -> bool:
        return name in keys or ALIASES.get(name) in keys

    found = []
    script = ROOT / "scripts" / "report.py"
    for node in ast.walk(ast.parse(script.read_text())):
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("add_argument")
            and str(getattr(node.args[0], "value", "")).startswith("--")
        ):
            name = node.args[0].value[2:].replace("-", "_")
            found += [
                f"{script.name}:{node.lineno} {name}={ast.unparse(k.value)}"
                for k in node.keywords
                if k.arg == "default" and named(name) and is_value(k.value, False)
            ]
    for path in sorted((ROOT / "nmt").rglob("*.py")):
        schema = path.name == "config.py"

        for node in ast.walk(ast.parse(path.read_text())):
            pairs = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                positional = [*a.posonlyargs, *a.args]
                with_default = positional[len(positional) - len(a.defaults) :]
                pairs += zip(with_default, a.defaults, strict=True)
                pairs += [
                    (p, d)
                    for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                    if d is not None
                ]
                pairs = [(p.arg, d) for p, d in pairs]
            elif (
                isinstance(node, ast.ClassDef)
                and not any(ast.unparse(base) == "BaseModel" for base in node.bases)
            ):  # a pydantic model is an HTTP body (nmt.serving.serve), whose fields are not conf/'s keys
                pairs = [
                    (s.target.id, s.value)
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and s.value and isinstance(s.target, ast.Name)
                ]
            found += [
                f"{path.name}:{d.lineno} {name}={ast.unparse(d)}"
                for name, d in pairs
                if named(name) and is_value(d, schema)
            ]
    return found


def test_no_default_in_code_for_a_key_of_conf():
    keys = schema_keys() | report_keys()
    assert {"var_dropout", "max_tokens", "max_lr_decays", "checkpoint", "beam_size"} <= keys
    assert {"baseline", "buckets", "bootstrap_samples", "betas", "device"} <= keys
    assert defaults_in_code(keys) == []


@pytest.mark.parametrize(
    ("path", "old", "new", "said"),
    [
        (
            "nmt/model/seq2seq.py",
            "var_dropout: float,",
            "var_dropout: float = 0.0,",
            " var_dropout=0.0",
        ),
        ("nmt/scoring/stats.py", "samples: int,", "samples: int = 1000,", " samples=1000"),
        (
            "nmt/core/config.py",
            "betas: list[float] = MISSING",
            "betas: list[float] = field(default_factory=lambda: [0.9, 0.999])",
            " betas=field(default_factory=lambda: [0.9, 0.999])",
        ),
        (
            "scripts/report.py",
            '"--device", help',
            '"--device", default="cpu", help',
            " device='cpu'",
        ),
    ],
)
def test_the_check_finds_a_default_added_back(tmp_path, monkeypatch, path, old, new, said):
    """The scan above, on a copy of the tree where one default comes back into the code."""
    import shutil

    copy = tmp_path / "repo"
    for part in ("nmt", "scripts", "conf"):
        shutil.copytree(ROOT / part, copy / part)
    changed = copy / path
    assert old in changed.read_text()
    changed.write_text(changed.read_text().replace(old, new, 1))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", copy)
    (found,) = defaults_in_code(schema_keys() | report_keys())
    assert found.startswith(f"{Path(path).name}:") and found.endswith(said)
