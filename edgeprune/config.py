"""Typed loading of configuration tables into frozen dataclasses, in one place, with one declarative schema.

Scenario, sweep, cluster and profile files are all read through :func:`build`.  The frozen stdlib
dataclasses the rest of the code uses *are* the schema: :func:`schema_model` derives a pydantic v2 model
from a dataclass (field types, ``spec_field`` bounds and docs, nested dataclasses, ``extra = "forbid"``,
strict scalars) and pydantic validates the parsed table.  The same model gives the published JSON Schema
(:mod:`edgeprune.cli.schemas`), so validation and the editors' schema cannot drift apart.  Any dataclass whose
fields use :func:`spec_field` (or plain fields) plugs in with no extra code: a nested dataclass field is
validated recursively and appears in the JSON Schema.

Every error is one line naming the file, the dotted key and the offending value, with the closest valid
name where one exists::

    scenarios/bursty.toml: arrivals.rate_hz = 2.0: unknown key (did you mean 'rates_hz'?)

Field metadata understood (use :func:`spec_field`): ``gt``, ``ge``, ``lt``, ``le`` (numeric bounds,
applied to every number of a sequence), ``min_length`` (of a sequence), ``doc``.  Cross-field rules live in
a ``check(self) -> list[tuple[str, object, str]]`` method returning ``(key, value, problem)`` triples;
:func:`build` turns the first into a :class:`ConfigError` (nested tables are checked before their parent).
A nested dataclass with a ``from_table(table, ctx)`` classmethod is read by it instead (e.g. a preset with
overrides, merged before validation); its JSON Schema is the dataclass's with every key optional.

Why a model derived from the dataclass rather than pydantic dataclasses: the frozen stdlib dataclasses stay
plain (cheap to build in hot loops, constructible in Python without validation), bounds on a sequence apply
to its elements (pydantic's own ``Field(ge=...)`` would apply to the sequence), and TOML lists are accepted
for tuples while scalars stay strict (no ``"1.5"`` for a number, no ``true`` for an integer).
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import ConfigDict, Field, Strict

from edgeprune.errors import ConfigError, did_you_mean

__all__ = ["Ctx", "build", "load_toml", "schema_model", "spec_field", "type_name"]

T = TypeVar("T")

_BOUNDS = ("gt", "ge", "lt", "le")
_MODEL_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
_PARTIAL_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, from_attributes=True)


def spec_field(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with bounds that :func:`build` checks and a doc string for the JSON Schema."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "min_length": min_length, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Ctx:
    """Where a value came from: the file and the dotted key path inside it."""

    file: str
    key: str = ""

    def child(self, name: str | int) -> Ctx:
        """The context of a sub-key (``name``) or list element (``int``)."""
        if isinstance(name, int):
            return Ctx(self.file, f"{self.key}[{name}]")
        return Ctx(self.file, f"{self.key}.{name}" if self.key else name)

    def error(self, value: object, problem: str) -> ConfigError:
        """A one-line :class:`ConfigError` naming file, key and value."""
        shown = _show(value)
        if self.key:
            return ConfigError(f"{self.file}: {self.key} = {shown}: {problem}")
        return ConfigError(f"{self.file}: {problem}")

    def missing(self) -> ConfigError:
        """A one-line :class:`ConfigError` for a required key that is absent."""
        return ConfigError(f"{self.file}: {self.key}: required key is missing")


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    return text if len(text) <= 60 else text[:57] + "..."


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a :class:`ConfigError` naming it."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, expected a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: malformed TOML: {exc}") from None


def type_name(tp: Any) -> str:
    """A short human name for an annotation (used in error messages and schema docs)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None)) + (
            " (optional)" if type(None) in args else ""
        )
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


# ----------------------------------------------------------------------------------------------- the model


def _scalar(tp: Any, bounds: Mapping[str, Any]) -> Any:
    """A strict scalar annotation with the field's numeric bounds."""
    if tp in (float, int, bool, str):
        constraints = {k: v for k, v in bounds.items() if v is not None} if tp in (float, int) else {}
        return Annotated[tp, Strict(), Field(**constraints)]
    return tp


def _annotation(tp: Any, bounds: Mapping[str, Any], partial: bool = False) -> Any:
    """The pydantic annotation of a dataclass field type; bounds go to every number inside it.

    ``partial``: nested tables get their every-key-optional model (the overrides of a preset).
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_annotation(a, bounds, partial) for a in args)]  # noqa: UP007
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[_annotation(args[0], bounds, partial), ...]  # type: ignore[misc]
        return tuple[tuple(_annotation(a, bounds, partial) for a in args)]  # type: ignore[misc]
    if origin is list:
        return list[_annotation(args[0], bounds, partial)]  # type: ignore[misc]
    if origin is dict:
        return dict[_annotation(args[0], {}), _annotation(args[1], bounds, partial)]  # type: ignore[misc]
    if dataclasses.is_dataclass(tp):
        return schema_model(tp, partial or callable(getattr(tp, "from_table", None)))  # type: ignore[arg-type]
    if tp is object:
        return Any
    return _scalar(tp, bounds)


def _json_default(value: Any) -> Any:
    """A default as the JSON Schema shows it (tuples as lists)."""
    if isinstance(value, tuple):
        return [_json_default(v) for v in value]
    return value


@functools.cache
def schema_model(cls: type, partial: bool = False) -> type[pydantic.BaseModel]:
    """The pydantic model that validates tables for dataclass ``cls`` (cached; its JSON Schema is published).

    ``partial``: every key optional, nested tables too (a ``from_table`` class's overrides); it also
    accepts an instance of ``cls`` already built by ``from_table`` (read from its attributes).
    """
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        bounds = {k: f.metadata.get(k) for k in _BOUNDS}
        extra: dict[str, Any] = {"description": f.metadata.get("doc") or None}
        if f.metadata.get("min_length") is not None:
            extra["min_length"] = f.metadata["min_length"]
        if f.default is not dataclasses.MISSING:
            extra["default"] = _json_default(f.default)
        elif f.default_factory is not dataclasses.MISSING or partial:
            extra["default"] = None  # built by the dataclass (or from_table); never used by validation
            extra["json_schema_extra"] = _drop_default
        # a key such as "schema" would shadow a BaseModel attribute: keep it as the alias only
        py_name = f"{f.name}_" if hasattr(pydantic.BaseModel, f.name) else f.name
        if py_name != f.name:
            extra["alias"] = f.name
        names[py_name] = f.name
        fields[py_name] = (_annotation(hints[f.name], bounds, partial), Field(**extra))
    model = pydantic.create_model(  # type: ignore[call-overload]
        cls.__name__ + ("Overrides" if partial else ""),
        __config__=_PARTIAL_CONFIG if partial else _MODEL_CONFIG,
        __doc__=(cls.__doc__ or "").strip() or None,
        **fields,
    )
    _DATACLASS_OF[model] = (cls, names)
    return model  # type: ignore[no-any-return]


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


_DATACLASS_OF: dict[type, tuple[type, dict[str, str]]] = {}


def _to_dataclass(value: Any) -> Any:
    """Turn validated model instances back into the frozen dataclasses (only the keys the file set)."""
    if isinstance(value, pydantic.BaseModel):
        cls, names = _DATACLASS_OF[type(value)]
        return cls(**{names[py]: _to_dataclass(getattr(value, py)) for py in value.model_fields_set})
    if isinstance(value, (tuple, list)):
        return type(value)(_to_dataclass(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_dataclass(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------------------------- validation


def build(cls: type[T], table: object, ctx: Ctx) -> T:
    """Validate ``table`` (a parsed TOML/JSON table) against dataclass ``cls`` and construct it."""
    if not isinstance(table, Mapping):
        raise ctx.error(table, "expected a table")
    model = schema_model(cls)  # type: ignore[arg-type]
    try:
        validated = model.model_validate(_prepare_fields(cls, table, ctx))
    except pydantic.ValidationError as exc:
        raise _first_error(exc, cls, ctx) from None
    obj = _to_dataclass(validated)
    _run_checks(obj, ctx)
    return obj  # type: ignore[no-any-return]


def _prepare(tp: Any, value: Any, ctx: Ctx) -> Any:
    """The table with every ``from_table`` class's sub-table replaced by the instance it builds."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args and args[-1] is Ellipsis and isinstance(value, list):
        return [_prepare(args[0], v, ctx.child(i)) for i, v in enumerate(value)]
    if origin is dict and len(args) == 2 and isinstance(value, Mapping):
        return {k: _prepare(args[1], v, ctx.child(str(k))) for k, v in value.items()}
    if not dataclasses.is_dataclass(tp) or not isinstance(value, Mapping):
        return value
    from_table = getattr(tp, "from_table", None)
    if callable(from_table):  # a nested table with its own reader
        return from_table(value, ctx)
    return _prepare_fields(tp, value, ctx)


def _prepare_fields(cls: Any, table: Mapping[str, Any], ctx: Ctx) -> dict[str, Any]:
    """:func:`_prepare` applied to each key of a table of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {k: _prepare(hints[k], v, ctx.child(k)) if k in hints else v for k, v in table.items()}


def _run_checks(value: Any, ctx: Ctx) -> None:
    """Call ``check()`` on every dataclass in the tree, nested ones first; raise the first problem."""
    if isinstance(value, (tuple, list)):
        if value and isinstance(value[0], (int, float, str)):
            return  # a list of plain values (e.g. latency samples) holds no dataclass
        for i, v in enumerate(value):
            _run_checks(v, ctx.child(i))
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _run_checks(v, ctx.child(str(k)))
        return
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return
    for f in dataclasses.fields(value):
        _run_checks(getattr(value, f.name), ctx.child(f.name))
    check = getattr(value, "check", None)
    if callable(check):
        for key, bad, problem in check():
            raise ctx.child(key).error(bad, problem)


_PRIORITY = {"extra_forbidden": 0, "too_short": 2}


def _first_error(exc: pydantic.ValidationError, cls: type, ctx: Ctx) -> ConfigError:
    """The one-line :class:`ConfigError` for the most telling of pydantic's errors."""
    errors = sorted(exc.errors(), key=lambda e: _PRIORITY.get(e["type"], 1))
    err = errors[0]
    loc, tp = _walk(cls, err["loc"])
    sub = ctx
    for part in loc:
        sub = sub.child(part)
    kind = err["type"]
    if kind == "missing":
        return sub.missing()
    value = err.get("input")
    if _strip_optional(tp) is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # shown as the number it would have become
    if kind == "extra_forbidden":
        parent_tp = _walk_type(cls, loc[:-1])
        names = [f.name for f in dataclasses.fields(parent_tp)] if dataclasses.is_dataclass(parent_tp) else []
        return sub.error(value, "unknown key" + did_you_mean(str(loc[-1]), names))
    return sub.error(value, _problem(kind, err, tp))


def _problem(kind: str, err: Any, tp: Any) -> str:
    """The reason part of a message, in the project's words."""
    ctx = err.get("ctx") or {}
    words = {
        "greater_than": ("gt", ">"),
        "greater_than_equal": ("ge", ">="),
        "less_than": ("lt", "<"),
        "less_than_equal": ("le", "<="),
    }
    if kind in words:
        key, word = words[kind]
        bound = ctx.get(key)
        shown = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"must be {word} {shown}"
    if kind == "literal_error":
        choices = [str(a) for a in typing.get_args(_strip_optional(tp))]
        return "not one of the valid choices" + did_you_mean(str(err.get("input")), choices)
    if kind == "finite_number":
        return "expected a finite number"
    if kind == "too_short":
        n = ctx.get("min_length")
        return f"need at least {n} {'entry' if n == 1 else 'entries'}"
    if kind in ("model_type", "dict_type", "model_attributes_type", "dataclass_type"):
        return "expected a table"
    tp = _strip_optional(tp)
    if tp in _SCALAR_WORDS:
        return f"expected {_SCALAR_WORDS[tp]}"
    return f"expected {type_name(tp)}" if tp is not None else str(err.get("msg", "invalid"))


_SCALAR_WORDS = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _walk(cls: type, loc: Sequence[Any]) -> tuple[list[str | int], Any]:
    """The user-facing key path of a pydantic error location and the dataclass type found there.

    Pydantic adds a segment naming the member of a union it tried; such segments are dropped (the error is
    reported at the union's key with the union's type).
    """
    path: list[str | int] = []
    tp: Any = cls
    for part in loc:
        tp = _strip_optional(tp)
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            break
        path.append(part)
        tp = _step(tp, part)
    return path, tp


def _walk_type(cls: type, loc: Sequence[Any]) -> Any:
    """The type at a key path below ``cls`` (``None`` when the path leaves the declared types)."""
    tp: Any = cls
    for part in loc:
        tp = _step(_strip_optional(tp), part)
    return _strip_optional(tp)


def _step(tp: Any, part: Any) -> Any:
    """The type one key (or index) below ``tp``; ``None`` when unknown."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple and args:
        return args[0] if args[-1] is Ellipsis else args[part] if isinstance(part, int) else None
    if origin is dict and args:
        return args[1]
    if dataclasses.is_dataclass(tp) and isinstance(part, str):
        return typing.get_type_hints(tp).get(part)
    return None
