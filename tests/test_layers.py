"""The layers hold: every package imports only what its layer may (import-linter's contracts in setup.cfg),
and no module imports another module's private names. Each rule is also shown to catch a violation."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("retention", "store", "training", "reports", "service", "cli", "bench")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    # cwd first on the path: import-linter analyses the packages found there (a copy in the probe test).
    return subprocess.run([str(LINT_IMPORTS), "--config", "setup.cfg", "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=120)


def test_every_layer_contract_is_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# A forbidden import per contract, each in a module of its own added to a copy of the tree.
PROBES = {
    "retention/_probe_web.py": ("import flask\n", "needs no web, database"),
    "retention/_probe_store.py": ("from store import Store\n", "Layers:"),
    "store/_probe_training.py": ("import training.train\n", "Layers:"),
    "service/_probe_training.py": ("from training import train\n", "never the offline training code"),
    "training/_probe_click.py": ("import click\n", "Click lives in cli/ only"),
    "reports/_probe_sql.py": ("import sqlalchemy\n", "talk SQL"),
    "cli/data.py": ("from cli import main\n", "never import the root group"),
    "cli/offers.py": ("from cli import train\n", "never import each other"),
}


def test_a_forbidden_import_breaks_its_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    for name, (source, _) in PROBES.items():
        path = tmp_path / name
        path.write_text((path.read_text() if path.exists() else "") + source)
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = " ".join(result.stdout.split("Broken contracts", 1)[-1].split())  # names are wrapped at 80 columns
    for name, (_, contract) in PROBES.items():
        module = name.removesuffix(".py").replace("/", ".")
        assert contract in broken and module in broken, (name, result.stdout)


def private_imports(source: str, filename: str) -> list[str]:
    """`from a.b import _c` lines importing another module's private name, as 'file:line: ...'."""
    problems = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    problems.append(f"{filename}:{node.lineno}: imports {node.module}.{alias.name}")
    return problems


def test_no_module_imports_another_modules_private_names():
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            problems += private_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not problems, "private names imported across modules:\n" + "\n".join(problems)


def test_the_private_name_check_catches_one():
    assert private_imports("from training.report import _e, png\n", "x.py") == [
        "x.py:1: imports training.report._e"]
    assert private_imports("from a import b, __version__\nimport _thread\n", "x.py") == []
