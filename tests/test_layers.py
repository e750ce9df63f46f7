"""Layering: retention/ is the domain core and must stay importable without the web, database, training
or data-frame stacks. service/ and training/ may import retention, never the reverse.

Checked statically with `ast`, so a violation inside a function that no test calls is still caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("retention", "service", "store", "training")
CORE = "retention"
# Never imported by the core, not even lazily inside a function.
FORBIDDEN_ANYWHERE = frozenset({"flask", "sqlalchemy", "alembic", "werkzeug", "marshmallow", "psycopg",
                                "service", "store", "training"})
# Heavy or optional: allowed only lazily inside a function (a loader or an adapter), never at import time.
# pandas: the fitted scikit-learn Pipelines select columns by name, so scoring hands them a DataFrame.
FORBIDDEN_AT_TOP_LEVEL = frozenset({"duckdb", "sklearn", "pandas"})


def _py_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_parts(path: Path) -> list[str]:
    """Dotted name of the *package* that holds `path`, as a list (what a relative import starts from)."""
    return list(path.relative_to(ROOT).parent.parts)


def _walk(node: ast.AST, in_function: bool = False, type_checking: bool = False):
    """Yield (node, in_function, type_checking) for every node, tracking where it executes."""
    for child in ast.iter_child_nodes(node):
        child_in_function = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        child_type_checking = type_checking
        if isinstance(node, ast.If) and child in node.body and _is_type_checking(node.test):
            child_type_checking = True
        yield child, child_in_function, child_type_checking
        yield from _walk(child, child_in_function, child_type_checking)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_modules(node: ast.AST, package: list[str]) -> list[tuple[str, str]]:
    """Absolute dotted names a node imports, each with a description for the error message.

    Relative imports are resolved against the file's package, so `from .. import service` inside
    retention/ is seen as importing `service`. Dynamic imports with a literal name are included too.
    """
    if isinstance(node, ast.Import):
        return [(a.name, f"import {a.name}") for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            return [(node.module or "", f"from {node.module} import ...")]
        up = node.level - 1
        src = f"from {'.' * node.level}{node.module or ''} import ..."
        if up > len(package):
            return [("<beyond the project root>", src)]
        base = package[: len(package) - up]
        if node.module:
            return [(".".join([*base, node.module]), src)]
        # `from .. import x`: each name may itself be a module.
        return [(".".join([*base, a.name]), src) for a in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            target = node.args[0].value
            return [(target, f"{name}({target!r})")]
    return []


def core_violations(source: str, filename: str, package: list[str]) -> list[str]:
    """Layering violations of one retention/ module, as 'file:line: message' strings."""
    tree = ast.parse(source, filename=filename)
    problems = []
    for node, in_function, type_checking in _walk(tree):
        for module, desc in _imported_modules(node, package):
            top = module.split(".")[0]
            where = f"{filename}:{node.lineno}"
            if module == "<beyond the project root>" or (package and top != package[0] and isinstance(node, ast.ImportFrom) and node.level):
                problems.append(f"{where}: `{desc}` reaches outside the {CORE} package")
            elif top in FORBIDDEN_ANYWHERE:
                problems.append(f"{where}: `{desc}`: {CORE}/ must never import {top}")
            elif top in FORBIDDEN_AT_TOP_LEVEL and not in_function and not type_checking:
                problems.append(f"{where}: `{desc}` at import time: {CORE}/ may import {top} only inside a function")
    return problems


def test_core_package_exists():
    files = _py_files(CORE)
    assert ROOT / CORE / "__init__.py" in files and len(files) >= 2


def test_all_layer_files_parse():
    errors = []
    for package in PACKAGES:
        for path in _py_files(package):
            try:
                ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            except SyntaxError as exc:
                errors.append(f"{path.relative_to(ROOT)}:{exc.lineno}: {exc.msg}")
    assert not errors, "files that do not parse:\n" + "\n".join(errors)


def test_core_does_not_depend_on_outer_layers():
    problems = []
    for path in _py_files(CORE):
        rel = path.relative_to(ROOT)
        problems += core_violations(path.read_text(encoding="utf-8"), str(rel), _module_parts(path))
    assert not problems, "layering violations in retention/:\n" + "\n".join(problems)


# The checker itself: each of these must be caught, or the test above proves nothing.
@pytest.mark.parametrize(
    "source, expected",
    [
        ("import flask", "must never import flask"),
        ("from sqlalchemy.orm import Session", "must never import sqlalchemy"),
        ("import alembic.op", "must never import alembic"),
        ("from werkzeug import Request", "must never import werkzeug"),
        ("import marshmallow", "must never import marshmallow"),
        ("from service.app import create_app", "must never import service"),
        ("import training.cli", "must never import training"),
        ("def f():\n    import training", "must never import training"),
        ("from store import Store", "must never import store"),
        ("import pandas", "may import pandas only inside a function"),
        ("import duckdb", "may import duckdb only inside a function"),
        ("from sklearn.linear_model import LogisticRegression", "may import sklearn only inside a function"),
        ("try:\n    import duckdb\nexcept ImportError:\n    duckdb = None", "only inside a function"),
        ("class A:\n    import sklearn", "only inside a function"),
        ("from .. import service", "reaches outside the retention package"),
        ("from ..training import cli", "reaches outside the retention package"),
        ("from ... import x", "reaches outside the retention package"),
        ("import importlib\nm = importlib.import_module('service.app')", "must never import service"),
        ("m = __import__('flask')", "must never import flask"),
    ],
)
def test_checker_catches(source, expected):
    problems = core_violations(source, "retention/x.py", ["retention"])
    assert len(problems) == 1 and expected in problems[0], problems
    assert problems[0].startswith("retention/x.py:")


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nimport joblib",
        "from retention.contract import REASONS",
        "from .contract import REASONS",
        "from . import offers",
        "def f():\n    import duckdb",
        "def f():\n    from sklearn.metrics import roc_auc_score",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sklearn",
        "import servicex",  # a prefix match is not the forbidden package
    ],
)
def test_checker_allows(source):
    assert core_violations(source, "retention/x.py", ["retention"]) == []


def test_checker_reports_the_line():
    problems = core_violations("import os\n\n\nimport flask\n", "retention/x.py", ["retention"])
    assert problems == ["retention/x.py:4: `import flask`: retention/ must never import flask"]
