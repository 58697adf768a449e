"""The simulator, controller, traces, reports and HIL coordinator must import and run without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TORCH_FREE = [
    "edgeprune",
    "edgeprune.config",
    "edgeprune.profile",
    "edgeprune.scenario",
    "edgeprune.results",
    "edgeprune.controller",
    "edgeprune.cli.sim",
    "sim",
    "traces",
    "models.levels",
    "models.partition",
]
OPTIONAL = ["edgeprune.report", "edgeprune.cli.report", "edgeprune.cli.sweep", "hil.cli", "hil.coordinator"]


def _run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``import torch`` (and friends) fails."""
    prelude = textwrap.dedent(
        """
        import sys
        BLOCKED = {"torch", "torchvision", "open_clip", "torch_pruning"}

        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked in this test)", name=name)
                return None

        sys.meta_path.insert(0, _Block())
        """
    )
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=False)


def test_imports_without_torch() -> None:
    present = [m for m in OPTIONAL if (Path(__file__).parents[1] / m.split(".")[0]).is_dir()]
    code = textwrap.dedent(
        f"""
        import importlib, importlib.util
        failed = []
        for name in {TORCH_FREE + present!r}:
            try:
                if name in {present!r} and importlib.util.find_spec(name) is None:
                    continue
                importlib.import_module(name)
            except Exception as exc:
                failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
        print("\\n".join(failed))
        raise SystemExit(1 if failed else 0)
        """
    )
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_simulation_runs_without_torch(case: Path) -> None:
    code = textwrap.dedent(
        f"""
        from edgeprune.cli.sim import main
        raise SystemExit(main([{str(case)!r}, "--no-progress"]))
        """
    )
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert "dynamic" in proc.stdout
