"""The layering of docs/architecture.md holds in the code: a module imports only modules listed
before it, and every module of nmt/ is on the list."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def documented_order() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return re.findall(r"^\d+\. `(\w+)\.py`", text, flags=re.MULTILINE)


def nmt_imports(path: Path) -> set[str]:
    """Modules of nmt a file imports: anywhere in it, inside a function or under TYPE_CHECKING
    alike (a type-only import upward is a circle all the same, one the type checker walks)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "nmt":  # modules; a name of the package itself (__version__) is none
                found.update(
                    a.name for a in node.names if (ROOT / "nmt" / f"{a.name}.py").is_file()
                )
            elif node.module.startswith("nmt."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nmt."))
    return found


def test_every_module_is_documented_once():
    order = documented_order()
    modules = sorted(p.stem for p in (ROOT / "nmt").glob("*.py") if p.stem != "__init__")
    assert sorted(order) == modules


def test_every_module_with_logic_has_its_own_test_file():
    """tests/ mirrors nmt/: a module that defines a function or a class has test_<module>.py (a
    module of constants, such as specials.py, has none)."""
    missing = []
    for path in sorted((ROOT / "nmt").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defines = any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body)
        if defines and not (ROOT / "tests" / f"test_{path.stem}.py").is_file():
            missing.append(path.name)
    assert missing == []


def test_the_drawing_names_every_module_once():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = text.split("The floors, drawn")[1].split("The orchestration layer")[0]
    named = []
    for line in drawing.splitlines()[1:]:
        if not line.startswith("    ") or "─" in line:
            continue
        words = line.split()
        if line[4] != " ":  # a floor's first line starts with its label ("data", "model", ...)
            words = words[1:]
        named += [w for w in words if (ROOT / "nmt" / f"{w}.py").is_file()]
    assert sorted(named) == sorted(documented_order())


def test_no_module_imports_one_above_it():
    order = documented_order()
    rank = {name: i for i, name in enumerate(order)}
    upward = []
    for name in order:
        for imported in nmt_imports(ROOT / "nmt" / f"{name}.py"):
            if rank[imported] >= rank[name]:
                upward.append(f"{name}.py imports {imported}.py")
    assert not upward, upward


def test_inference_does_not_import_training():
    for name in ("translate", "search", "model"):
        assert not {"train", "optim", "progress"} & nmt_imports(ROOT / "nmt" / f"{name}.py")


def test_the_checker_sees_upward_imports(tmp_path):
    """The test above would notice: an import inside a function counts, a type-only one too."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from nmt.cli import x\n"
        "def f():\n    from nmt import train\n"
    )
    assert nmt_imports(module) == {"train", "cli"}


def test_commands_start_without_the_plotting_and_statistics_stack():
    """Every nmt-* command imports nmt.cli; matplotlib and scipy (about a second) load only where
    a plot or a statistic is drawn (nmt.plots, nmt.stats, the report), datasets with pandas and
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
