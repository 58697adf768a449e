"""SSH connections to every node in parallel, host keys verified, each failure kind one clear line.

Host keys are always checked against the node's ``known_hosts`` file from the cluster file (asyncssh
``known_hosts=<path>``); there is no switch to turn verification off.  Authentication uses the identity file
named in the cluster file, else the agent and the default keys; passwords are never used.

Failure kinds (each a :class:`~edgeprune.errors.HilError` naming node, address and cause):

=====================================  ==========================================================
``asyncssh.HostKeyNotVerifiable``      unknown or changed host key (possible man-in-the-middle)
``asyncssh.PermissionDenied``          authentication refused (key not authorised for the user)
``ConnectionRefusedError``             nothing listening on the SSH port
``TimeoutError``                       no answer within ``connect_timeout_s``
``OSError`` errno 101/113 (ENETUNREACH/EHOSTUNREACH)  no route to the host
``socket.gaierror``                    the address does not resolve
=====================================  ==========================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from edgeprune.errors import HilError
from hil.cluster import CoordinatorSpec, HostSpec

__all__ = ["Node", "close_all", "connect_all", "connect_error", "connect_node", "where"]


@dataclass
class Node:
    """A connected node: its spec and the live SSH connection."""

    spec: HostSpec
    conn: asyncssh.SSHClientConnection

    @property
    def name(self) -> str:
        """The node's name."""
        return self.spec.name


def where(host: HostSpec) -> str:
    """``name (user@address:port)`` for messages."""
    return f"{host.name} ({host.login}@{host.address}:{host.port})"


def connect_error(host: HostSpec, exc: BaseException, timeout_s: float) -> HilError:
    """The one-line error for a failed connection (see the module docstring's table)."""
    at = where(host)
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HilError(
            f"{at}: host key not verified against {host.known_hosts} — unknown or changed host key "
            f"(if the node was reinstalled, check its key and update known_hosts): {exc.reason}"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        key = host.identity_file or "the agent / default keys"
        return HilError(f"{at}: authentication refused for user {host.login!r} with {key}")
    if isinstance(exc, ConnectionRefusedError):
        return HilError(f"{at}: connection refused (no SSH server listening on port {host.port})")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return HilError(f"{at}: timed out after {timeout_s:g} s (node down or packets dropped)")
    if isinstance(exc, socket.gaierror):
        return HilError(f"{at}: address {host.address!r} does not resolve ({exc.strerror})")
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return HilError(f"{at}: unreachable (no route to host: {exc.strerror})")
    if isinstance(exc, asyncssh.Error):
        return HilError(f"{at}: SSH error: {exc.reason}")
    if isinstance(exc, OSError):
        return HilError(f"{at}: connection failed: {exc.strerror or exc}")
    return HilError(f"{at}: connection failed: {type(exc).__name__}: {exc}")


def _check_files(host: HostSpec) -> None:
    if not Path(host.known_hosts).is_file():
        raise HilError(f"{where(host)}: known_hosts file {host.known_hosts} not found (host keys are always verified)")
    if host.identity_file and not Path(host.identity_file).is_file():
        raise HilError(f"{where(host)}: identity file {host.identity_file} not found")


async def connect_node(host: HostSpec, opts: CoordinatorSpec) -> Node:
    """One verified, authenticated connection (raises the mapped :class:`HilError`)."""
    _check_files(host)
    keys = [host.identity_file] if host.identity_file else ()
    try:
        conn = await asyncssh.connect(
            host.address,
            port=host.port,
            username=host.login,
            known_hosts=host.known_hosts,
            client_keys=keys or None,
            password=None,
            kbdint_auth=False,
            connect_timeout=opts.connect_timeout_s,
            keepalive_interval=opts.keepalive_interval_s,
            keepalive_count_max=opts.keepalive_count_max,
        )
    except Exception as exc:
        raise connect_error(host, exc, opts.connect_timeout_s) from None
    return Node(host, conn)


async def connect_all(hosts: Sequence[HostSpec], opts: CoordinatorSpec) -> list[Node]:
    """Connect to every host in parallel; on any failure close the others and raise the first error.

    When several nodes fail, the message lists each of them (one clause per node).
    """
    results = await asyncio.gather(*(connect_node(h, opts) for h in hosts), return_exceptions=True)
    nodes = [r for r in results if isinstance(r, Node)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await close_all(nodes)
        hil = [e for e in errors if isinstance(e, HilError)]
        if len(hil) != len(errors):
            raise next(e for e in errors if not isinstance(e, HilError))
        raise hil[0] if len(hil) == 1 else HilError("; ".join(str(e) for e in hil))
    return nodes


async def close_all(nodes: Sequence[Node]) -> None:
    """Close every connection and wait for them to end."""
    for n in nodes:
        n.conn.close()
    for n in nodes:
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            await asyncio.wait_for(n.conn.wait_closed(), 5.0)
