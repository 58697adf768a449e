"""A running pipeline on the cluster: one stage worker per node, chained, plus the coordinator's sockets.

:class:`Session` starts every worker over SSH in parallel (:mod:`hil.remote`: own process group, pid file),
waits for each to load its stage at all levels, connects the chain (direct TCP, or SSH tunnels), opens the
coordinator's feed connection to the first stage and its result listener for the last, and from then on:

* ``send`` feeds one request; results arrive on the listener and go to ``on_result``;
* ``report_all`` asks every worker for its period counters (answers matched by sequence number);
* ``set_level`` / ``reset_all`` send control lines (applied by the worker between two requests);
* ``failure`` is a future set to a :class:`HilError` naming the node and the cause as soon as a worker ends,
  reports an error or its SSH link is lost;
* ``close`` ends everything: stdin EOF to every worker, then ``kill -TERM/-KILL`` of every recorded process
  group (over a fresh connection where the link is gone).

Transports: ``direct`` — stage ``k`` connects to stage ``k+1`` at its ``worker_address``, the last stage to the
coordinator's ``listen_address``; ``ssh`` — every hop goes through the coordinator over SSH port forwards
(``forward_local_port`` to reach a worker, ``forward_remote_port`` to give a worker a local address that
leads to the next hop), for networks where the nodes' ports must not be exposed.  Workers listen only on the
node's ``worker_address`` (``direct``) or on loopback (``ssh``).

Every data connection (feed, stage to stage, results) is authenticated with a secret drawn for this session
(:func:`hil.protocol.new_secret`) and handed to each worker as the first line of its SSH stdin; a peer
without it is refused by the worker or the result listener, printed as a warning and kept in ``refused``,
and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from edgeprune.errors import HilError
from hil.cluster import ClusterSpec
from hil.connect import Node, where
from hil.protocol import (
    ProtocolError,
    check_event,
    client_handshake_async,
    decode_line,
    encode_frame,
    encode_line,
    new_secret,
    read_frame_async,
    server_handshake_async,
)
from hil.remote import RemoteProc, exit_cause, kill_groups, start_remote

__all__ = ["Session", "WorkerConfig", "WorkerHandle", "new_tag"]

ResultCallback = Callable[[dict[str, Any], float], None]

LINK_LOSS_GRACE_S = 2.0  # how long a "down/upstream link lost" report waits for the dead worker's own exit
LINK_LOSS = ("downstream link lost", "upstream link lost")


def new_tag(kind: str) -> str:
    """A unique marker for a run's remote processes (visible in ``ps`` and in pid-file names)."""
    return f"edgeprune-hil-{kind}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker is started with besides its stage."""

    checkpoint: dict[str, str]  # node name -> checkpoint path on that node
    nominal_s: tuple[tuple[float, ...], ...]  # [stage][level]
    queue_capacity: int | None
    drop_head: bool
    threads: int


@dataclass
class WorkerHandle:
    """One started worker."""

    stage: int
    stage_name: str
    node: Node
    rp: RemoteProc
    ready: dict[str, Any] = field(default_factory=dict)
    reports: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    acks: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    @property
    def label(self) -> str:
        """``stage s1 on pi2 (pi@addr:port)`` for messages."""
        return f"stage {self.stage_name} on {where(self.node.spec)}"


class Session:
    """See the module docstring."""

    def __init__(self, cluster: ClusterSpec, nodes: Sequence[Node], stage_names: Sequence[str], tag: str) -> None:
        self.cluster = cluster
        self.nodes = list(nodes)
        self.stage_names = list(stage_names)
        self.tag = tag
        self.workers: list[WorkerHandle] = []
        self.failure: asyncio.Future[HilError] = asyncio.get_running_loop().create_future()
        self.on_result: ResultCallback | None = None
        self._closing = False
        self._server: asyncio.Server | None = None
        self._feed: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._forwards: list[asyncssh.SSHListener] = []
        self._seq = 0
        self.secret = new_secret()
        self.refused: list[str] = []  # connections refused for want of the secret (logged; the run goes on)

    # -- start ---------------------------------------------------------------------------------------------
    async def start(self, cfg: WorkerConfig) -> None:
        """Start, load and chain every worker (see the module docstring)."""
        ssh = self.cluster.coordinator.transport == "ssh"
        starts = [self._start_worker(k, node, cfg, ssh) for k, node in enumerate(self.nodes)]
        started = await asyncio.gather(*starts, return_exceptions=True)
        self.workers = [w for w in started if isinstance(w, WorkerHandle)]
        for w in started:
            if isinstance(w, BaseException):
                raise w
        timeout_s = self.cluster.coordinator.ready_timeout_s
        await self._race(asyncio.gather(*(self._await_ready(w, timeout_s) for w in self.workers)))
        for w in self.workers:
            self._tasks.append(asyncio.create_task(self._read_events(w)))
        await self._race(self._connect_chain(ssh))

    async def _start_worker(self, k: int, node: Node, cfg: WorkerConfig, ssh: bool) -> WorkerHandle:
        argv = [
            node.spec.python,
            "-m",
            "hil.worker",
            "serve",
            "--checkpoint",
            cfg.checkpoint[node.name],
            "--stage",
            str(k),
            "--threads",
            str(cfg.threads),
            "--tag",
            self.tag,
            "--nominal-s",
            ",".join(repr(v) for v in cfg.nominal_s[k]),
            "--queue-capacity",
            str(-1 if cfg.queue_capacity is None else cfg.queue_capacity),
            "--drop",
            "head" if cfg.drop_head else "tail",
            "--listen",
            "127.0.0.1" if ssh else node.spec.data_address,
            "--thermal-file",
            node.spec.thermal_zone_file,
            "--freq-file",
            node.spec.cpu_freq_file,
            "--cpu-cgroup",
            node.spec.cpu_cgroup,
            "--power-meter",
            node.spec.power_meter_command,
        ]
        rp = await start_remote(node, f"{self.tag}-s{k}", argv)
        w = WorkerHandle(k, self.stage_names[k], node, rp)
        self._write(w, {"cmd": "auth", "secret": self.secret.hex()})
        return w

    async def _await_ready(self, w: WorkerHandle, timeout_s: float) -> None:
        try:
            line = await asyncio.wait_for(w.rp.proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise HilError(f"{w.label}: worker not ready after {timeout_s:g} s (ready_timeout_s)") from None
        except (asyncssh.Error, OSError) as exc:
            raise HilError(f"{w.label}: SSH link lost while the worker was loading: {exc}") from None
        if not line:
            raise await self._exit_error(w, "worker failed to start")
        try:
            event = check_event(decode_line(line))
        except ProtocolError as exc:
            raise HilError(f"{w.label}: unexpected first message from the worker: {exc}") from None
        if event.get("event") != "ready":
            raise HilError(f"{w.label}: unexpected first message from the worker: {line.strip()[:120]}")
        w.ready = event

    async def _exit_error(self, w: WorkerHandle, what: str) -> HilError:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError, asyncssh.Error, OSError):
            await asyncio.wait_for(w.rp.proc.wait_closed(), 2.0)
        await asyncio.sleep(0.05)  # let the stderr collector take the last lines
        status = w.rp.proc.exit_status
        sig = w.rp.proc.exit_signal
        conn_lost = w.node.conn.is_closed() if hasattr(w.node.conn, "is_closed") else False
        if conn_lost or (status is None and sig is None):
            return HilError(f"{w.label}: SSH link lost ({what})")
        how, why = exit_cause(status, sig[0] if sig else None, w.rp.stderr_tail)
        return HilError(f"{w.label}: {what} ({how}): {why}")

    async def _connect_chain(self, ssh: bool) -> None:
        opts = self.cluster.coordinator
        listen = "127.0.0.1" if ssh else opts.listen_address
        self._server = await asyncio.start_server(self._accept_results, listen, 0)
        result_port = self._server.sockets[0].getsockname()[1]
        targets = [(w.node.spec.data_address, int(w.ready["port"])) for w in self.workers]
        if ssh:
            targets = [await self._local_forward(w) for w in self.workers]
        for k, w in enumerate(self.workers):
            nxt = targets[k + 1] if k + 1 < len(self.workers) else (listen, result_port)
            if ssh:
                nxt = await self._remote_forward(w, nxt[1])
            await self._command(w, {"cmd": "connect", "host": nxt[0], "port": nxt[1]}, "connected")
        reader, self._feed = await asyncio.open_connection(*targets[0])
        self._feed.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY
        try:
            await client_handshake_async(reader, self._feed, self.secret)
        except ProtocolError as exc:
            raise HilError(f"{self.workers[0].label}: feed connection: {exc}") from None

    async def _local_forward(self, w: WorkerHandle) -> tuple[str, int]:
        listener = await w.node.conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", int(w.ready["port"]))
        self._forwards.append(listener)
        return "127.0.0.1", listener.get_port()

    async def _remote_forward(self, w: WorkerHandle, local_port: int) -> tuple[str, int]:
        listener = await w.node.conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", local_port)
        self._forwards.append(listener)
        return "127.0.0.1", listener.get_port()

    # -- events --------------------------------------------------------------------------------------------
    async def _read_events(self, w: WorkerHandle) -> None:
        try:
            async for line in w.rp.proc.stdout:
                if not line:
                    break
                event = check_event(decode_line(line))
                kind = event.get("event")
                if kind == "report":
                    w.reports.put_nowait(event)
                elif kind == "refused":
                    self._refused(w.label, str(event.get("peer")), str(event.get("reason")))
                elif kind == "error":
                    err = HilError(f"{w.label}: worker error: {event.get('message')}")
                    if str(event.get("message", "")).startswith(LINK_LOSS):
                        # Usually the consequence of the next worker dying: give that root cause a moment
                        # to be reported first, so the message names the node that actually failed.
                        asyncio.get_running_loop().call_later(LINK_LOSS_GRACE_S, self._fail, err)
                    else:
                        self._fail(err)
                else:
                    w.acks.put_nowait(event)
        except ProtocolError as exc:
            self._fail(HilError(f"{w.label}: worker sent {exc}"))
            return
        except (asyncssh.Error, OSError) as exc:
            self._fail(HilError(f"{w.label}: SSH link lost: {exc}"))
            return
        if not self._closing:
            self._fail(await self._exit_error(w, "worker ended unexpectedly"))

    def _refused(self, where_: str, peer: str, reason: str) -> None:
        """Log a connection refused for want of the run's secret (the run goes on)."""
        text = f"{where_}: refused a connection from {peer}: {reason}"
        self.refused.append(text)
        print(f"warning: {text}", file=sys.stderr)

    def _fail(self, err: HilError) -> None:
        if not self.failure.done() and not self._closing:
            self.failure.set_result(err)

    async def _race(self, aw: Any) -> Any:
        """Await ``aw`` unless a failure comes first (then raise it)."""
        task = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait({task, self.failure}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise self.failure.result()

    def check(self) -> None:
        """Raise the failure if one happened."""
        if self.failure.done():
            raise self.failure.result()

    async def _accept_results(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            await server_handshake_async(reader, writer, self.secret)
        except (ProtocolError, OSError) as exc:
            self._refused("the coordinator's result listener", f"{peer[0]}:{peer[1]}" if peer else "?", str(exc))
            writer.close()
            return
        except asyncio.CancelledError:
            writer.close()
            return
        await self._receive_results(reader, writer)

    async def _receive_results(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await read_frame_async(reader)
                if frame is None:
                    break
                if self.on_result is not None:
                    self.on_result(frame[0], loop.time())
        except ProtocolError as exc:
            self._fail(HilError(f"{self.workers[-1].label}: malformed result frame: {exc}"))
        except OSError as exc:
            self._fail(HilError(f"result link from the last stage broken: {exc}"))
        except asyncio.CancelledError:  # session closing: not an error
            return
        finally:
            writer.close()
        if not self._closing:
            self._fail(HilError(f"{self.workers[-1].label}: result link closed by the last stage"))

    # -- commands ------------------------------------------------------------------------------------------
    def _write(self, w: WorkerHandle, cmd: dict[str, Any]) -> None:
        try:
            w.rp.proc.stdin.write(encode_line(cmd))
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            raise HilError(f"{w.label}: SSH link lost: {exc}") from None

    async def _command(self, w: WorkerHandle, cmd: dict[str, Any], expect: str) -> dict[str, Any]:
        self._write(w, cmd)
        timeout_s = self.cluster.coordinator.report_timeout_s + 30.0
        try:
            ack = await asyncio.wait_for(w.acks.get(), timeout_s)
        except TimeoutError:
            raise HilError(f"{w.label}: no answer to {cmd['cmd']!r} within {timeout_s:g} s") from None
        if ack.get("event") != expect:
            raise HilError(f"{w.label}: unexpected answer to {cmd['cmd']!r}: {ack}")
        return ack

    def send(self, header: dict[str, Any], payload: bytes | memoryview) -> None:
        """Feed one request to the first stage (buffered; see :meth:`drain`)."""
        assert self._feed is not None
        self._feed.writelines(encode_frame(header, payload))

    async def drain(self) -> None:
        """Wait for the feed buffer to flush."""
        assert self._feed is not None
        try:
            await self._feed.drain()
        except OSError as exc:
            raise HilError(f"{self.workers[0].label}: feed link broken: {exc}") from None

    def set_level(self, stage: int, level: int) -> None:
        """Ask stage ``stage`` to switch level before its next request."""
        self._write(self.workers[stage], {"cmd": "level", "level": int(level)})

    async def report_all(self) -> list[dict[str, Any]]:
        """Every worker's counters for the period that just ended."""
        self._seq += 1
        seq = self._seq
        for w in self.workers:
            self._write(w, {"cmd": "report", "seq": seq})
        timeout_s = self.cluster.coordinator.report_timeout_s
        return list(await self._race(asyncio.gather(*(self._report(w, seq, timeout_s) for w in self.workers))))

    async def _report(self, w: WorkerHandle, seq: int, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                rep = await asyncio.wait_for(w.reports.get(), max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise HilError(f"{w.label}: no report within {timeout_s:g} s (node overloaded or hung)") from None
            if rep.get("seq") == seq:
                return rep

    async def reset_all(self) -> None:
        """Zero every worker's counters, drop queued requests, back to level 0."""
        await self._race(asyncio.gather(*(self._command(w, {"cmd": "reset"}, "reset") for w in self.workers)))

    # -- shutdown ------------------------------------------------------------------------------------------
    async def close(self, grace_s: float = 3.0) -> list[str]:
        """End every worker (EOF, then process-group kill); returns cleanup problems (empty when clean)."""
        self._closing = True
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.rp.proc.stdin.write_eof()
        if self._feed is not None:
            self._feed.close()
        waits = [asyncio.wait_for(w.rp.proc.wait_closed(), grace_s) for w in self.workers]
        await asyncio.gather(*waits, return_exceptions=True)
        kills = [kill_groups(n, self.tags_on(n), self.cluster.coordinator) for n in self.nodes]
        problems = [p for p in await asyncio.gather(*kills) if p]
        for t in self._tasks:
            t.cancel()
        for fwd in self._forwards:
            fwd.close()
        if self._server is not None:
            self._server.close()
        return problems

    def tags_on(self, node: Node) -> list[str]:
        """Process tags started on ``node`` (one worker per node)."""
        return [w.rp.tag for w in self.workers if w.node is node]
