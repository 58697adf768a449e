"""The exception tree of EdgePrune.

Every error a user can cause by what they wrote (a scenario, a profile, a trace, a cluster file, a policy
parameter) is an :class:`EdgePruneError`.  The command-line tools print ``str(error)`` as one line and exit
with status 2; anything else escaping them is a bug and keeps its traceback.

::

    EdgePruneError              one line: what is wrong, where, and the closest valid choice
    ├── ConfigError             a TOML file (scenario, sweep, cluster): malformed, unknown key, bad value
    ├── ProfileError            a profile JSON: missing, malformed, wrong schema version, bad shape
    ├── TraceError              an arrival trace: missing file or column, NaN / negative / unparseable time
    ├── PolicyError             a controller policy: unknown kind, bad parameter, contract violation
    ├── ModelError              models/: weights that cannot be loaded, a partition that does not fit
    ├── ResultError             an output directory that exists or cannot be written
    └── HilError                hardware in the loop: a node, its host key, its environment, a lost link
        └── ProtocolError       a malformed frame, control line or handshake on the HIL wire
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "EdgePruneError",
    "HilError",
    "ModelError",
    "PolicyError",
    "ProfileError",
    "ProtocolError",
    "ResultError",
    "TraceError",
    "closest",
    "did_you_mean",
]


class EdgePruneError(Exception):
    """Base of every error caused by user input; its message is one self-contained line."""


class ConfigError(EdgePruneError):
    """A configuration file (TOML) is malformed or holds an unknown key or an invalid value."""


class ProfileError(EdgePruneError):
    """A profile JSON file is missing, malformed, of an unknown version, or inconsistent."""


class TraceError(EdgePruneError):
    """An arrival trace cannot be read or holds invalid timestamps."""


class PolicyError(EdgePruneError):
    """A controller policy is unknown, badly parameterised, or broke the controller contract."""


class ModelError(EdgePruneError):
    """A model cannot be loaded, sliced or pruned as asked."""


class ResultError(EdgePruneError):
    """Results cannot be written where asked."""


class HilError(EdgePruneError):
    """A hardware-in-the-loop failure, naming the node and the cause."""


class ProtocolError(HilError):
    """A malformed frame, control line or handshake on the HIL wire (a bug or a foreign peer)."""


def closest(word: str, choices: Iterable[str]) -> str | None:
    """Return the valid choice closest to ``word`` (or ``None`` if nothing is reasonably close)."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return a suffix for an error message: ``" (did you mean 'x'?)"`` or the valid choices."""
    options = sorted(set(choices))
    best = closest(word, options)
    if best is not None:
        return f" (did you mean {best!r}?)"
    if options:
        return f" (valid: {', '.join(repr(o) for o in options)})"
    return ""
