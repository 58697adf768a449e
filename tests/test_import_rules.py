"""The house rules on imports, checked statically (imports inside functions included), so a forbidden
import fails the suite instead of surfacing as a cycle or a torch requirement on a Pi.

Layers, lowest first; a module may import from its own layer and the layers below it:

0. ``edgeprune.errors``, ``edgeprune.config`` — the base every package uses;
1. ``traces`` — arrivals (imports only the base);
2. the core — every other ``edgeprune`` module (schemas, controller, results, records, physics, checker);
3. the backends' libraries — ``sim`` and ``models`` (neither imports the other);
4. ``hil`` — the hardware backend (its worker runs ``models``; its comparison runs ``sim``);
5. the faces — the CLIs (``edgeprune.cli``, ``hil.cli``, ``models.cli``, ``models.train_cli``,
   ``traces.cli``), sweeps and reports.

And the controller rule: ``edgeprune.controller`` imports no SimPy, asyncio, asyncssh, torch or clock
(``time``, ``datetime``), so one policy object runs in the simulator and on the cluster.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgeprune", "traces", "sim", "models", "hil")
BASE = ("edgeprune.errors", "edgeprune.config")
FACES = (
    "edgeprune.cli",
    "edgeprune.sweep",
    "edgeprune.report",
    "hil.cli",
    "models.cli",
    "models.train_cli",
    "traces.cli",
)
CONTROLLER_FORBIDDEN = ("simpy", "asyncio", "asyncssh", "torch", "time", "datetime")
PAIRS_FORBIDDEN = {("sim", "models"), ("models", "sim")}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer(module: str) -> int:
    """The layer of one of our modules (see the module docstring)."""
    if _under(module, FACES):
        return 5
    if _under(module, BASE) or module == "edgeprune":
        return 0
    top = module.split(".")[0]
    return {"traces": 1, "edgeprune": 2, "sim": 3, "models": 3, "hil": 4}[top]


def imports_of(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import statement, at any depth (functions included)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.lineno, node.module


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """Every broken rule in one module's source, as 'module:line imports X (reason)'."""
    out = []
    for line, target in imports_of(source, module, is_package):
        top = target.split(".")[0]
        where = f"{module}:{line} imports {target}"
        if _under(module, ("edgeprune.controller",)) and top in CONTROLLER_FORBIDDEN:
            out.append(f"{where} (a policy runs on both backends: no {top})")
        if top not in PACKAGES:
            continue
        if (module.split(".")[0], top) in PAIRS_FORBIDDEN:
            out.append(f"{where} ({module.split('.')[0]} and {top} are independent backends)")
        elif layer(target) > layer(module):
            out.append(f"{where} (layer {layer(module)} may not import layer {layer(target)})")
    return out


def _modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def test_the_tree_keeps_the_import_rules() -> None:
    found = [v for mod, path in _modules() for v in violations(mod, path.read_text(), path.name == "__init__.py")]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source", "reason"),
    [
        ("traces.replay", "def f():\n    from sim import run_scenario\n", "layer 1 may not import layer 3"),
        ("sim.window", "import hil.session\n", "layer 3 may not import layer 4"),
        ("sim.runner", "def f():\n    import models.nested\n", "independent backends"),
        ("models.nested", "from sim.engine import simulate\n", "independent backends"),
        ("edgeprune.scenario", "def f():\n    from sim import run_scenario\n", "layer 2 may not import layer 3"),
        ("edgeprune.results", "from hil import records\n", "layer 2 may not import layer 4"),
        ("edgeprune.controller.bottleneck", "import time\n", "no time"),
        ("edgeprune.controller.thermal", "def f():\n    from datetime import datetime\n", "no datetime"),
        ("edgeprune.controller.predictive", "import simpy\n", "no simpy"),
        ("edgeprune.controller.oracle", "import torch\n", "no torch"),
        ("edgeprune.controller.registry", "from ..cli import sim\n", "layer 2 may not import layer 5"),
    ],
)
def test_a_forbidden_import_is_caught(module: str, source: str, reason: str) -> None:
    found = violations(module, source)
    assert len(found) == 1 and reason in found[0], found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("hil.compare", "from sim.runner import run_policy\n"),  # hil sits above sim
        ("edgeprune.cli.sim", "def f():\n    from sim import run_scenario\n"),  # faces import anything
        ("edgeprune.scenario", "from traces import arrivals_from_table\n"),  # traces below the core
        ("traces.spec", "from edgeprune.config import build\n"),  # the base below traces
        ("edgeprune.checker", "import time\n"),  # the checker times policies from outside the policy package
    ],
)
def test_allowed_imports_pass(module: str, source: str) -> None:
    assert violations(module, source) == []
