"""The layering of docs/architecture.md holds in the code: the subpackages are floors that import
only from themselves and the floors below, a module imports only modules listed before it, and
every module of nmt/ is on the list once."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NMT = ROOT / "nmt"
TOP = "nmt"  # the floor of the orchestration modules at the top of nmt/


def architecture() -> str:
    return (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def documented_floors() -> list[str]:
    """The subpackages, bottom to top, then the top of nmt/ itself."""
    return [*re.findall(r"^\d+\. `nmt/(\w+)/` —", architecture(), flags=re.MULTILINE), TOP]


def documented_order() -> list[str]:
    """Modules as paths under nmt/ without .py (core/errors, loader), bottom to top."""
    return re.findall(r"^\d+\. `((?:\w+/)?\w+)\.py`", architecture(), flags=re.MULTILINE)


def modules() -> list[str]:
    return sorted(
        p.relative_to(NMT).with_suffix("").as_posix()
        for p in NMT.rglob("*.py")
        if p.name != "__init__.py"
    )


def floor(module: str) -> str:
    return module.split("/")[0] if "/" in module else TOP


def _module(parts: list[str], root: Path) -> str | None:
    """The module a dotted path under nmt names (nmt.core.errors.X -> core/errors), if any."""
    if parts and (root / f"{parts[0]}.py").is_file():
        return parts[0]
    if len(parts) >= 2 and (root / parts[0] / f"{parts[1]}.py").is_file():
        return f"{parts[0]}/{parts[1]}"
    return None


def nmt_imports(path: Path, root: Path = NMT) -> set[str]:
    """Modules of nmt a file imports: anywhere in it, inside a function or under TYPE_CHECKING
    alike (a type-only import upward is a circle all the same, one the type checker walks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nmt":
            parts = node.module.split(".")[1:]
            named = _module(parts, root)
            if named:
                found.add(named)
            else:  # from nmt import loader / from nmt.core import errors: the names are modules
                found.update(m for a in node.names if (m := _module([*parts, a.name], root)))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("nmt.") and (m := _module(a.name.split(".")[1:], root)):
                    found.add(m)
    return found


def test_every_module_is_documented_once():
    order = documented_order()
    assert sorted(order) == modules()
    assert len(order) == len(set(order))


def test_every_package_is_a_documented_floor():
    packages = sorted(p.parent.name for p in NMT.glob("*/__init__.py"))
    assert sorted(documented_floors()[:-1]) == packages
    # the list runs floor by floor, bottom to top
    ranks = [documented_floors().index(floor(m)) for m in documented_order()]
    assert ranks == sorted(ranks)


def test_every_module_with_logic_has_its_own_test_file():
    """tests/ mirrors nmt/: a module that defines a function or a class has test_<module>.py (a
    module of constants, such as core/specials.py, has none)."""
    missing = []
    for path in sorted(NMT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body)
        if defines and not (ROOT / "tests" / f"test_{path.stem}.py").is_file():
            missing.append(path.relative_to(NMT).as_posix())
    assert missing == []


def test_the_drawing_names_every_module_once():
    drawing = architecture().split("The floors, drawn")[1].split("The orchestration layer")[0]
    named, label = [], None
    for line in drawing.splitlines()[1:]:
        if not line.startswith("    ") or "─" in line:
            continue
        words = line.split()
        if line[4] != " ":  # a floor's first line starts with its label ("core/", "nmt/")
            label, words = words[0].rstrip("/"), words[1:]
        prefix = "" if label == TOP else f"{label}/"
        named += [f"{prefix}{w}" for w in words if (NMT / f"{prefix}{w}.py").is_file()]
    assert sorted(named) == sorted(documented_order())


def upward_imports(root: Path = NMT) -> list[str]:
    order, floors = documented_order(), documented_floors()
    rank = {name: i for i, name in enumerate(order)}
    upward = []
    for name in order:
        for imported in nmt_imports(root / f"{name}.py", root):
            if floors.index(floor(imported)) > floors.index(floor(name)):
                upward.append(f"{name}.py imports {imported}.py, a floor above")
            elif rank[imported] >= rank[name]:
                upward.append(f"{name}.py imports {imported}.py, listed after it")
    return upward


def test_no_module_imports_one_above_it():
    assert upward_imports() == []


def test_inference_does_not_import_training():
    for name in ("decoding/translator", "decoding/search", "model/seq2seq", "serving/serve"):
        assert not {m for m in nmt_imports(NMT / f"{name}.py") if floor(m) == "training"}


def test_the_checker_sees_upward_imports(tmp_path):
    """The tests above would notice: an import inside a function counts, a type-only one too,
    in every spelling; and a floor importing from one above it."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from nmt.cli import x\n"
        "def f():\n    from nmt.training import train\n"
        "    import nmt.model.rnn\n    from nmt.core.errors import UserError\n"
    )
    assert nmt_imports(module) == {"training/train", "cli", "model/rnn", "core/errors"}
    import shutil

    copy = tmp_path / "nmt"
    shutil.copytree(NMT, copy)
    cells = copy / "model" / "cells.py"
    cells.write_text(cells.read_text() + "\nfrom nmt.training.optim import build_optimizer\n")
    assert upward_imports(copy) == ["model/cells.py imports training/optim.py, a floor above"]


def test_commands_start_without_the_plotting_and_statistics_stack():
    """Every nmt-* command imports nmt.cli; matplotlib and scipy (about a second) load only where
    a plot or a statistic is drawn (nmt.report.plots, nmt.scoring.stats, the report), datasets with pandas and
    pyarrow (1.3 s here) only where a corpus is built or read, never for nmt-translate."""
    code = (
        "import sys, nmt.cli\n"
        "stack = ('matplotlib', 'scipy', 'datasets', 'pandas')\n"
        "print(' '.join(m for m in stack if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert loaded == ""
