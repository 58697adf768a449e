"""Addressing one value inside a scenario's TOML document by a key path, and setting it.

A key path is what a sweep axis varies.  Grammar (whitespace not allowed)::

    path     := segment ( "." segment | "[" selector "]" )*
    segment  := a bare name: letters, digits, "_" and "-"
    selector := an integer index            environment[0].slowdown
              | a bare or quoted name       policy[dynamic].min_accuracy, policy["dyn.v2"].period_s

A name applied to an array of tables picks the element whose ``name`` key equals it, so
``policy.dynamic.min_accuracy``, ``device.pi2.speed`` and ``stage.s1.device`` work as well as indices.
Tables missing along the way are created (``queue.capacity`` on a scenario without ``[queue]``); whether
the resulting key is valid is left to the scenario loader, which names the closest valid key.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from edgeprune.errors import ConfigError, did_you_mean

__all__ = ["Token", "parse_key", "set_key"]

Token = str | int

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_BRACKET = re.compile(r"\[(?:(\d+)|\"([^\"]+)\"|'([^']+)'|([A-Za-z0-9_.-]+))\]")


class KeyPathError(ConfigError):
    """A key path that is malformed or does not lead anywhere in the base scenario (message: the problem)."""


def parse_key(key: str) -> tuple[Token, ...]:
    """Split a key path into names (``str``) and indices (``int``); a malformed path is a KeyPathError."""
    tokens: list[Token] = []
    pos = 0
    expect_name = True
    while pos < len(key):
        if expect_name:
            m = _BARE.match(key, pos)
            if m is None:
                raise KeyPathError(f"malformed key path at character {pos + 1}")
            tokens.append(m.group(0))
            pos = m.end()
            expect_name = False
        elif key[pos] == ".":
            pos += 1
            expect_name = True
        elif key[pos] == "[":
            b = _BRACKET.match(key, pos)
            if b is None:
                raise KeyPathError(f"malformed selector at character {pos + 1} (use [0] or [name])")
            index, dq, sq, bare = b.groups()
            tokens.append(int(index) if index is not None else (dq or sq or bare))
            pos = b.end()
        else:
            raise KeyPathError(f"unexpected {key[pos]!r} at character {pos + 1}")
    if expect_name:
        raise KeyPathError("empty or trailing '.' in key path")
    return tuple(tokens)


def _shown(tokens: tuple[Token, ...]) -> str:
    out = ""
    for t in tokens:
        out += f"[{t}]" if isinstance(t, int) else (f".{t}" if out else t)
    return out


def _named_index(items: list[Any], name: str, where: tuple[Token, ...]) -> int:
    names = [it.get("name") for it in items if isinstance(it, MutableMapping)]
    for i, it in enumerate(items):
        if isinstance(it, MutableMapping) and it.get("name") == name:
            return i
    valid = [n for n in names if isinstance(n, str)]
    raise KeyPathError(f"{_shown(where)} has no element named {name!r}" + did_you_mean(name, valid))


def _step(node: Any, tok: Token, where: tuple[Token, ...], next_tok: Token) -> Any:
    """The child of ``node`` at ``tok``, creating a missing table when the path continues by name."""
    if isinstance(node, MutableMapping):
        if isinstance(tok, int):
            raise KeyPathError(f"{_shown(where)} is a table, not an array (use .name)")
        if tok not in node:
            if isinstance(next_tok, int):
                raise KeyPathError(f"{_shown((*where, tok))}: not in the base scenario" + did_you_mean(tok, node))
            node[tok] = {}
        return node[tok]
    if isinstance(node, list):
        i = tok if isinstance(tok, int) else _named_index(node, tok, where)
        if not 0 <= i < len(node):
            raise KeyPathError(f"{_shown(where)} has {len(node)} elements, index {i} is out of range")
        return node[i]
    raise KeyPathError(f"{_shown(where)} is a value, not a table or array")


def set_key(doc: MutableMapping[str, Any], tokens: tuple[Token, ...], value: Any) -> None:
    """Set the value at ``tokens`` inside ``doc`` (in place); see the module docstring for the rules."""
    node: Any = doc
    for depth, tok in enumerate(tokens[:-1]):
        node = _step(node, tok, tokens[:depth], tokens[depth + 1])
    last = tokens[-1]
    where = tokens[:-1]
    if isinstance(node, MutableMapping):
        if isinstance(last, int):
            raise KeyPathError(f"{_shown(where)} is a table, not an array (use .name)")
        node[last] = value
    elif isinstance(node, list):
        i = last if isinstance(last, int) else _named_index(node, last, where)
        if not 0 <= i < len(node):
            raise KeyPathError(f"{_shown(where)} has {len(node)} elements, index {i} is out of range")
        node[i] = value
    else:
        raise KeyPathError(f"{_shown(where)} is a value, not a table or array")
