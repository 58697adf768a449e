"""Policy kinds by name: each kind is a frozen parameter dataclass plus a factory.

A scenario's ``[[policy]]`` table is ``name``, ``kind`` and the kind's parameters; :func:`policy_from_table`
validates it (unknown kind or key → the closest valid name) and :func:`make_policy` builds a fresh policy
object for one run.  Register new kinds with :func:`register` (see ``static.py`` for the smallest one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeprune.config import Ctx, build
from edgeprune.controller.contract import PipelineCurves, Policy
from edgeprune.errors import ConfigError, did_you_mean

__all__ = ["PolicyKind", "PolicySpec", "kinds", "make_policy", "policy_from_table", "register"]


@dataclass(frozen=True)
class PolicyKind:
    """A registered policy kind."""

    name: str
    params_cls: type
    factory: Callable[[Any, PipelineCurves], Policy]
    summary: str = ""


@dataclass(frozen=True)
class PolicySpec:
    """A validated ``[[policy]]`` entry: a display name, a kind and its parameters."""

    name: str
    kind: str
    params: Any  # an instance of the kind's params_cls

    @property
    def period_s(self) -> float:
        """Control period (every kind has one; static policies use it for monitoring only)."""
        return float(self.params.period_s)


_KINDS: dict[str, PolicyKind] = {}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def register(kind: PolicyKind) -> None:
    """Add a policy kind (a later registration under the same name replaces the earlier)."""
    _KINDS[kind.name] = kind


def kinds() -> Mapping[str, PolicyKind]:
    """All registered kinds by name."""
    _load_builtin()
    return dict(_KINDS)


def _load_builtin() -> None:
    # Imported lazily so that registering modules can import this one.
    from edgeprune.controller import bottleneck, oracle, predictive, static, thermal, threshold  # noqa: F401


def policy_from_table(
    table: Mapping[str, Any], ctx: Ctx, *, n_stages: int, n_levels: int, has_accuracy: bool
) -> PolicySpec:
    """Validate one ``[[policy]]`` table against its kind and the pipeline it will control."""
    _load_builtin()
    if not isinstance(table, Mapping):
        raise ctx.error(table, "expected a table")
    if "kind" not in table:
        raise ConfigError(f"{ctx.file}: {ctx.child('kind').key}: required key is missing")
    kind_name = table["kind"]
    kind = _KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise ctx.child("kind").error(kind_name, "unknown policy kind" + did_you_mean(str(kind_name), _KINDS))
    name = table.get("name", kind_name)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ctx.child("name").error(name, "expected a name of letters, digits, '.', '_' or '-' (it names a folder)")
    rest = {k: v for k, v in table.items() if k not in ("kind", "name")}
    params: Any = build(kind.params_cls, rest, ctx)
    check = getattr(params, "check_pipeline", None)
    if callable(check):
        for key, value, problem in check(n_stages=n_stages, n_levels=n_levels, has_accuracy=has_accuracy):
            raise ctx.child(key).error(value, problem)
    return PolicySpec(name=name, kind=kind_name, params=params)


def make_policy(spec: PolicySpec, curves: PipelineCurves) -> Policy:
    """A fresh policy object for one run."""
    _load_builtin()
    return _KINDS[spec.kind].factory(spec.params, curves)
