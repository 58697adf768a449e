"""Typed loading of TOML configuration tables into frozen dataclasses, in one place.

Scenario, sweep and cluster files are all read through :func:`build`, so every file gets the same
behaviour: unknown keys are rejected with the closest valid name, values are type-checked against the
dataclass annotations, numeric bounds declared in field metadata are enforced, and every error is one line
naming the file, the dotted key and the offending value::

    scenarios/bursty.toml: arrivals.rate_hz = 2.0: unknown key (did you mean 'rates_hz'?)

Field metadata understood by :func:`build` (use :func:`spec_field`): ``gt``, ``ge``, ``lt``, ``le``
(numeric bounds, applied to every element of a sequence), ``choices`` (allowed strings), ``doc``.
Cross-field rules live in a ``check(self) -> list[tuple[str, object, str]]`` method returning
``(key, value, problem)`` triples; :func:`build` turns the first into a :class:`ConfigError`.  A nested
dataclass with a ``from_table(table, ctx)`` classmethod is read by it instead (e.g. presets + overrides).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from edgeprune.errors import ConfigError, did_you_mean

__all__ = ["Ctx", "build", "load_toml", "spec_field", "type_name"]

T = TypeVar("T")


def spec_field(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with bounds that :func:`build` checks (and a doc string for the schema docs)."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "doc": doc}
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
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " (optional)"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if dataclasses.is_dataclass(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def build(cls: type[T], table: object, ctx: Ctx) -> T:
    """Validate ``table`` (a parsed TOML table) against dataclass ``cls`` and construct it."""
    if not isinstance(table, Mapping):
        raise ctx.error(table, "expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in table:
        if key not in fields:
            raise ctx.child(key).error(table[key], "unknown key" + did_you_mean(key, fields))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = ctx.child(name)
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{ctx.file}: {sub.key}: required key is missing")
            continue
        value = _convert(hints[name], table[name], sub)
        _check_bounds(f.metadata, value, sub)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        for key, value, problem in check():
            raise ctx.child(key).error(value, problem)
    return obj


def _check_bounds(meta: Mapping[str, Any], value: Any, ctx: Ctx) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        for bound, ok, word in (
            ("gt", lambda x, b: x > b, ">"),
            ("ge", lambda x, b: x >= b, ">="),
            ("lt", lambda x, b: x < b, "<"),
            ("le", lambda x, b: x <= b, "<="),
        ):
            b = meta.get(bound)
            if b is not None and not ok(v, b):
                raise ctx.error(value, f"must be {word} {b}")


def _convert(tp: Any, value: Any, ctx: Ctx) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        errors: list[ConfigError] = []
        for a in inner:
            try:
                return _convert(a, value, ctx)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ctx.error(value, f"expected {type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ctx.error(value, "not one of the valid choices" + did_you_mean(str(value), map(str, args)))
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ctx.error(value, f"expected {type_name(tp)}")
        elem = args[0]
        return tuple(_convert(elem, v, ctx.child(i)) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ctx.error(value, "expected a table")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        from_table = getattr(tp, "from_table", None)  # a class with its own reader (presets, merging)
        if callable(from_table):
            return from_table(value, ctx)
        return build(tp, value, ctx)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.error(value, "expected true or false")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(value, "expected a number")
        if not math.isfinite(value):
            raise ctx.error(value, "expected a finite number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(value, "expected an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ctx.error(value, "expected a string")
        return value
    if tp is Any or tp is object:
        return value
    raise TypeError(f"config: unsupported annotation {tp!r} at {ctx.key}")  # a programming error
