"""Shape rules for the engine seam and the core, checked on the source: small functions and few parameters
(a function that needs more takes one state object), so the model stays readable and extendable."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = {"sim": 60}  # per package: the longest function allowed
MAX_PARAMS = 8
PARAM_SCOPE = ("sim", "edgeprune")


def _functions(pkg: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for path in sorted((ROOT / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [p.arg for p in (a.vararg, a.kwarg) if p]
    return len([n for n in names if n not in ("self", "cls")])


def test_no_long_functions_in_the_simulator() -> None:
    for pkg, limit in MAX_LINES.items():
        long = [
            (where, fn.end_lineno - fn.lineno + 1)
            for where, fn in _functions(pkg)
            if fn.end_lineno - fn.lineno + 1 > limit
        ]  # type: ignore[operator]
        assert long == [], f"functions over {limit} lines"


def test_no_function_takes_more_than_eight_parameters() -> None:
    wide = [(where, _params(fn)) for pkg in PARAM_SCOPE for where, fn in _functions(pkg) if _params(fn) > MAX_PARAMS]
    assert wide == []
