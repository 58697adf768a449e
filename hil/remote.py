"""Remote processes with a recorded process group, and their certain end.

Without a pty, closing an SSH connection does not end the remote process, so every long-lived process the
coordinator starts on a node (stage workers, ``stress-ng`` load) is started as::

    cd WORKDIR && exec setsid -w sh -c 'echo $$ > run/TAG.pgid; exec COMMAND'

``setsid`` gives it a process group of its own (its id written to ``run/TAG.pgid``); ``exec`` keeps the SSH
channel attached to it, so stdin end-of-file reaches it (workers treat that as *shut down*) and its exit
status comes back.  :func:`kill_groups` ends what is left: ``kill -TERM -PGID``, then ``KILL`` after a
grace period (not ``kill -- -PGID``: dash, ``/bin/sh`` on Debian and Raspberry Pi OS, rejects ``--``),
over the existing connection when it is alive, else over a fresh one.  On real Pis with systemd,
``systemd-run --user --collect`` would be tighter; plain ``setsid`` works everywhere.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncssh

from edgeprune.errors import HilError
from hil.cluster import CoordinatorSpec
from hil.connect import Node, connect_node, where

__all__ = ["RemoteProc", "exit_cause", "kill_groups", "start_remote"]

# util-linux ``setsid -w`` reports a child ended by a signal as this line and exits with the raw wait status
_SETSID_SIGNALLED = re.compile(r"setsid: child \d+ did not exit normally")


@dataclass
class RemoteProc:
    """A process started by :func:`start_remote` on a node."""

    node: Node
    tag: str
    proc: asyncssh.SSHClientProcess[str]
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def pgid_file(self) -> str:
        """Path of the process-group file, relative to the node's workdir."""
        return f"run/{self.tag}.pgid"


def launch_command(workdir: str, tag: str, argv: Sequence[str]) -> str:
    """The shell command line that starts ``argv`` in its own process group (see the module docstring)."""
    inner = f"echo $$ > run/{tag}.pgid; exec {shlex.join(argv)}"
    wd = shlex.quote(workdir)
    return f"mkdir -p {wd}/run && cd {wd} && exec setsid -w sh -c {shlex.quote(inner)}"


async def start_remote(node: Node, tag: str, argv: Sequence[str]) -> RemoteProc:
    """Start ``argv`` on ``node`` (stdin/stdout/stderr as text streams)."""
    cmd = launch_command(node.spec.workdir, tag, argv)
    try:
        proc = await node.conn.create_process(cmd, encoding="utf-8")
    except (asyncssh.Error, OSError) as exc:
        raise HilError(f"{where(node.spec)}: cannot start {argv[0]}: {exc}") from None
    rp = RemoteProc(node, tag, proc)
    asyncio.get_running_loop().create_task(_collect_stderr(rp))
    return rp


async def _collect_stderr(rp: RemoteProc, keep: int = 20) -> None:
    """Keep the last lines of the process's stderr for error messages."""
    try:
        async for line in rp.proc.stderr:
            if line:
                rp.stderr_tail.append(line.rstrip())
                del rp.stderr_tail[:-keep]
    except (asyncssh.Error, OSError, asyncio.CancelledError):
        return


def _signal_text(sig: int | str) -> str:
    """``signal 9 (SIGKILL)`` from a number or an SSH signal name (``KILL``)."""
    try:
        s = signal.Signals(sig) if isinstance(sig, int) else signal.Signals[f"SIG{sig.removeprefix('SIG')}"]
    except (KeyError, ValueError):
        return f"signal {sig}"
    return f"signal {s.value} ({s.name})"


def exit_cause(status: int | None, ssh_signal: str | None, stderr_tail: Sequence[str]) -> tuple[str, str]:
    """How a remote process ended and its last words: ``("killed by signal 9 (SIGKILL)", "no message")``.

    A process ended by a signal under ``setsid -w`` shows as ``exit status N`` plus setsid's own line
    ``setsid: child PID did not exit normally: Success``, where ``N`` is the raw wait status (signal number
    in its low 7 bits); that is reported as the signal, and setsid's line is not the process's message.
    """
    lines = [ln.strip() for ln in stderr_tail if ln.strip()]
    signalled = bool(lines) and _SETSID_SIGNALLED.search(lines[-1]) is not None
    if signalled:
        lines.pop()
    why = lines[-1] if lines else "no message"
    if ssh_signal:
        return f"killed by {_signal_text(ssh_signal)}", why
    if signalled and status is not None and status & 0x7F:
        return f"killed by {_signal_text(status & 0x7F)}", why
    return f"exit status {status}", why


def _kill_script(tags: Sequence[str], grace_s: float) -> str:
    files = " ".join(shlex.quote(f"run/{t}.pgid") for t in tags)
    return (
        f"pgs=''; for f in {files}; do [ -f $f ] && pgs=\"$pgs $(cat $f)\"; done; "
        f"for g in $pgs; do kill -TERM -$g 2>/dev/null; done; sleep {grace_s}; "
        f"for g in $pgs; do kill -KILL -$g 2>/dev/null; done; rm -f {files}; true"
    )


async def kill_groups(node: Node, tags: Sequence[str], opts: CoordinatorSpec, grace_s: float = 0.5) -> str | None:
    """End the process groups of ``tags`` on ``node``; returns a problem description, or ``None``.

    Uses the node's connection when it is alive, else a fresh one (the link may be what failed).
    """
    if not tags:
        return None
    script = f"cd {shlex.quote(node.spec.workdir)} && {_kill_script(tags, grace_s)}"
    conn: asyncssh.SSHClientConnection = node.conn
    fresh = None
    try:
        try:
            result = await asyncio.wait_for(conn.run(script, check=False), grace_s + 10)
        except (asyncssh.Error, OSError, TimeoutError):
            fresh = await connect_node(node.spec, opts)
            result = await asyncio.wait_for(fresh.conn.run(script, check=False), grace_s + 10)
        if result.exit_status not in (0, None):
            return f"{where(node.spec)}: cleanup exited with status {result.exit_status}: {result.stderr!s}"
        return None
    except HilError as exc:
        return f"cannot clean up: {exc}"
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        return f"{where(node.spec)}: cannot clean up: {type(exc).__name__}: {exc}"
    finally:
        if fresh is not None:
            fresh.conn.close()
