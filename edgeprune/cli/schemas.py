"""The JSON Schemas of EdgePrune's four file kinds, derived from the dataclasses that validate them.

``python -m edgeprune.cli.schemas`` writes ``schemas/{scenario,profile,cluster,sweep}.schema.json`` (``--check``
only compares and exits 1 when a published file is stale; a test does the same).  Each schema comes from
:func:`edgeprune.config.schema_model` over the same frozen dataclasses the loaders validate with, so
what an editor accepts is what the loader accepts, key for key (bounds, choices, unknown keys).  The
scenario's ``[arrivals]`` and ``[[policy]]`` tables, validated per ``kind`` by their own dataclasses, appear
as a union keyed on ``kind`` over every registered arrival and policy kind.  Rules that span keys or files
(stages vs. the profile, lengths vs. the ladder, ``check()`` methods) stay in code and are not in the
schemas.

Editors: Taplo / "Even Better TOML" read a first line ``#:schema ../schemas/scenario.schema.json``; VS Code
maps JSON files to a schema with ``json.schemas`` in its settings.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import Field

from edgeprune.config import schema_model

__all__ = ["FILE_KINDS", "SCHEMA_DIR", "main", "render", "schema_of"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_POLICY_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def _tagged(cls: type, kind: str, title: str, extra: dict[str, Any] | None = None) -> type[pydantic.BaseModel]:
    """The model of ``cls`` named ``title`` with a required ``kind = <kind>`` (and any ``extra`` fields)."""
    fields: dict[str, Any] = {"kind": (Literal[kind], Field(description=f"'{kind}'"))}
    fields.update(extra or {})
    return pydantic.create_model(title, __base__=schema_model(cls), **fields)  # type: ignore[call-overload, no-any-return]


def _camel(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.replace("-", "_").split("_"))


def _scenario() -> dict[str, Any]:
    from edgeprune.controller.registry import kinds
    from edgeprune.scenario import _RawScenario
    from traces.spec import KINDS

    arrivals = [_tagged(cls, kind, f"{cls.__name__}Table") for kind, cls in KINDS.items()]
    policies = [
        _tagged(
            k.params_cls,
            name,
            _camel(name) + "Policy",
            {"name": (str, Field(default=name, pattern=_POLICY_NAME, description="display name (names a folder)"))},
        )
        for name, k in sorted(kinds().items())
    ]
    arrival_union: Any = Annotated[Union[tuple(arrivals)], Field(discriminator="kind")]  # noqa: UP007
    policy_union: Any = Annotated[Union[tuple(policies)], Field(discriminator="kind")]  # noqa: UP007
    model = pydantic.create_model(  # type: ignore[call-overload]
        "Scenario",
        __base__=schema_model(_RawScenario),
        __doc__="An EdgePrune scenario (TOML): what to simulate or run on hardware.",
        arrivals=(arrival_union, Field(description="arrival process: kind + the kind's keys")),
        policy=(tuple[policy_union, ...], Field(min_length=1, description="policies to compare")),
    )
    return model.model_json_schema()  # type: ignore[no-any-return]


def _of(module: str, name: str, title: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        import importlib

        cls = getattr(importlib.import_module(module), name)
        schema: dict[str, Any] = schema_model(cls).model_json_schema()
        schema["title"] = title
        return schema

    return make


#: file kind -> how its schema is made
FILE_KINDS: dict[str, Callable[[], dict[str, Any]]] = {
    "scenario": _scenario,
    "profile": _of("edgeprune.profile", "ProfileFile", "EdgePrune profile (JSON)"),
    "cluster": _of("hil.cluster", "_RawCluster", "EdgePrune HIL cluster file (TOML)"),
    "sweep": _of("edgeprune.sweep.spec", "_RawSweep", "EdgePrune sweep file (TOML)"),
}


def schema_of(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one file kind."""
    schema = FILE_KINDS[kind]()
    return {"$schema": _DIALECT, **schema}


def render(kind: str) -> str:
    """The published text of one schema (stable key order, so a stale file shows as a diff)."""
    return json.dumps(schema_of(kind), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` compare) ``schemas/*.schema.json``."""
    from edgeprune.cli.common import ArgumentParser
    from edgeprune.results import atomic_write_text

    p = ArgumentParser(prog="python -m edgeprune.cli.schemas", description="Write the JSON Schemas of the file kinds.")
    p.add_argument("--out", type=Path, default=SCHEMA_DIR, help=f"folder (default {SCHEMA_DIR})")
    p.add_argument("--check", action="store_true", help="compare only; exit 1 if a file is missing or stale")
    args = p.parse_args(argv)
    stale = []
    for kind in FILE_KINDS:
        path = args.out / f"{kind}.schema.json"
        text = render(kind)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
