"""The stage worker, run on a node as ``python -m hil.worker serve|profile ...`` (the only torch user in hil/).

``serve``: read the run's secret (the first line on stdin), load the nested checkpoint, keep only stage ``k``
(all its levels resident: switching a level is an integer store), listen on a TCP port of the address the
coordinator names (``--listen``: the node's address, or loopback behind the ``ssh`` transport; never all
interfaces), and serve requests from upstream in arrival order:

* a *receiver* thread per upstream connection first challenges the peer (:mod:`hil.protocol`: HMAC of the
  run's secret; a peer that fails is refused, reported as a ``refused`` event, and the run goes on), then
  reads checked frames into the stage's queue (a tensor must have this stage's input shape, an image
  request is for the first stage only, at most ``MAX_IMAGE_PIXELS`` pixels, in an allowed format),
  enforcing the scenario's queue capacity (tail or head drop) and counting arrivals and drops; a malformed
  frame or a broken link ends that connection with an ``error`` event naming the peer and the cause, which
  makes the coordinator end the run;
* the *main* thread takes the oldest request, applies a pending level (between two requests, as the
  controller contract says), decodes the tensor without copying, runs the stage, encodes the output, and
  sends it downstream (the next stage, or the coordinator after the last stage) with its level appended;
* a *control* thread reads JSON lines on stdin (``connect``, ``level``, ``report``, ``reset``) and answers
  on stdout; stdin end-of-file means shut down (so a lost SSH session ends the worker).  A report also
  carries what the node exposes about its physics (:mod:`hil.readings`: temperature, frequency, throttle
  flag, CPU time of the stage and of the rest of the node, a power meter's watts; ``None`` where unknown).

Service time (``busy_s``) is measured from taking a request off the queue to its output being encoded
(level switch, decode, compute, encode), which is exactly what ``profile`` measures, so the environment
factor ``busy_s / nominal_s`` is 1 on an unloaded node.  ``nominal_s`` adds the profile's mean at the level
each request was served at (the coordinator passes the means with ``--nominal-s``).

``profile``: load, say ``ready``, wait for a line on stdin (the coordinator applies the node's CPU quota once
every node has loaded), then time this node's stage at every level (levels interleaved within each round,
warm-up first) along the same decode → compute → encode path, and print one JSON line with the samples.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hil.protocol import (
    AUTH_TIMEOUT_S,
    MAX_IMAGE_PIXELS,
    ProtocolError,
    client_handshake_sock,
    decode_line,
    encode_frame,
    encode_line,
    read_frame_sock,
    server_handshake_sock,
)
from hil.readings import NodeProbe

__all__ = ["StageRunner", "Worker", "check_image", "main"]

IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")  # what PIL may decode for an image request
TORCH_DTYPES = {"float32": torch.float32}  # the wire's dtype allow-list (hil.protocol.DTYPE_BYTES) in torch
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class StageRunner:
    """One stage of a nested checkpoint, fed with frames: decode → stage → encode."""

    def __init__(self, checkpoint: str, stage: int, threads: int) -> None:
        from models import load_nested

        torch.set_num_threads(threads)
        pipe = load_nested(checkpoint)
        stages = pipe.stage_list
        if not 0 <= stage < len(stages):
            raise SystemExit(f"stage {stage}: the checkpoint has {len(stages)} stages")
        self.stage = stages[stage]
        self.index = stage
        self.n_stages = len(stages)
        self.n_levels = len(pipe.levels)
        self.image_size = pipe.image_size
        self.input_shape = tuple(self.stage.input_shape(pipe.image_size))
        self.info = {
            "model_id": pipe.info.get("model_id", ""),
            "partition": [list(b) for b in pipe.partition],
            "ratios": list(pipe.ratios),
            "detail": [{"heads": s.heads, "mlp_hidden": s.mlp_hidden} for s in pipe.levels],
            "image_size": list(pipe.image_size),
        }
        self.level = 0
        self.stage.set_level(0)
        del pipe

    def set_level(self, level: int) -> None:
        """Switch this stage's level (clamped to the ladder)."""
        level = min(max(int(level), 0), self.n_levels - 1)
        self.stage.set_level(level)
        self.level = level

    def decode(self, header: dict[str, Any], payload: bytearray) -> torch.Tensor:
        """The request's input tensor (no copy for tensors; decode + resize + normalise for images)."""
        if header.get("kind") == "image":
            return self._image(payload)
        return torch.frombuffer(payload, dtype=TORCH_DTYPES[header["dtype"]]).reshape(header["shape"])

    def _image(self, payload: bytearray) -> torch.Tensor:
        h, w = self.image_size
        img = check_image(payload).convert("RGB").resize((w, h))
        pixels = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        mean, std = np.asarray(CLIP_MEAN, dtype=np.float32), np.asarray(CLIP_STD, dtype=np.float32)
        chw = ((pixels - mean) / std).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32)).unsqueeze(0)

    def run(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], memoryview]:
        """Serve one request: the outgoing header and the output bytes."""
        with torch.inference_mode():
            y = self.stage(self.decode(header, payload)).contiguous()
        arr = y.numpy()
        out = {
            "id": header["id"],
            "kind": "tensor",
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "levels": [*header.get("levels", []), self.level],
            "run": header.get("run"),
        }
        return out, memoryview(arr).cast("B")


def check_image(payload: bytes | bytearray) -> Any:
    """The image of an image request, opened lazily (header only) after the format and pixel-count checks;
    raises :class:`ProtocolError` for anything else (not an image, a format not allowed, a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(payload), formats=IMAGE_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ProtocolError(f"image request: not a {'/'.join(IMAGE_FORMATS)} image ({type(exc).__name__})") from None
    pixels = img.width * img.height
    if pixels > MAX_IMAGE_PIXELS or pixels == 0:
        raise ProtocolError(f"image request: {img.width}x{img.height} pixels (limit {MAX_IMAGE_PIXELS})")
    return img


@dataclass
class Counters:
    """Per-period counters of the stage (see ``edgeprune.controller.contract.StageObs``)."""

    arrivals: int = 0
    served: int = 0
    busy_s: float = 0.0
    nominal_s: float = 0.0
    dropped: int = 0
    switches: int = 0
    dropped_ids: list[int] = field(default_factory=list)


class Worker:
    """The ``serve`` process: queue, counters, data sockets and control loop."""

    def __init__(
        self,
        runner: StageRunner,
        nominal_s: Sequence[float],
        capacity: int | None,
        drop_head: bool,
        listen: str,
        secret: bytes,
        probe: NodeProbe | None = None,
    ) -> None:
        self.runner = runner
        self.probe = probe  # the node's physics, read at every report (hil.readings)
        self.secret = secret
        self.auth_timeout_s = AUTH_TIMEOUT_S  # a connecting peer must answer the challenge within this
        self.nominal_s = list(nominal_s) or [0.0] * runner.n_levels
        self.capacity = capacity
        self.drop_head = drop_head
        self.queue: collections.deque[tuple[dict[str, Any], bytearray]] = collections.deque()
        self.cond = threading.Condition()
        self.counters = Counters()
        self.busy = False
        self.pending_level: int | None = None
        self.stopping = False
        self.out_lock = threading.Lock()
        self.down: socket.socket | None = None
        self.listener = socket.create_server((listen, 0))

    # -- control plane -------------------------------------------------------------------------------------
    def emit(self, obj: dict[str, Any]) -> None:
        """Write one event line to stdout."""
        with self.out_lock:
            sys.stdout.write(encode_line(obj))
            sys.stdout.flush()

    def control_loop(self) -> None:
        """Read commands until stdin ends, then stop the worker."""
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                self.command(decode_line(line))
            except Exception as exc:  # report and go on: a bad command must not kill a run
                self.emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        self.stop()

    def command(self, cmd: dict[str, Any]) -> None:
        """Apply one control command."""
        kind = cmd.get("cmd")
        if kind == "level":
            with self.cond:
                self.pending_level = int(cmd["level"])
        elif kind == "report":
            node = self.probe.read() if self.probe is not None else {}
            self.emit({"event": "report", "seq": cmd.get("seq"), **self.snapshot(), **node})
        elif kind == "connect":
            self.connect_downstream(str(cmd["host"]), int(cmd["port"]))
            self.emit({"event": "connected"})
        elif kind == "reset":
            with self.cond:
                self.queue.clear()
                self.counters = Counters()
                self.pending_level = 0
            if self.probe is not None:
                self.probe.restart()
            self.emit({"event": "reset"})
        else:
            self.emit({"event": "error", "message": f"unknown command {kind!r}"})

    def snapshot(self) -> dict[str, Any]:
        """The counters of the period that just ended (and reset them)."""
        with self.cond:
            c, self.counters = self.counters, Counters()
            return {
                "level": self.runner.level,
                "queue_len": len(self.queue),
                "busy": self.busy,
                "arrivals": c.arrivals,
                "served": c.served,
                "busy_s": c.busy_s,
                "nominal_s": c.nominal_s,
                "dropped": c.dropped,
                "switches": c.switches,
                "dropped_ids": c.dropped_ids,
            }

    def connect_downstream(self, host: str, port: int) -> None:
        """Connect (or reconnect) to the next stage or the coordinator."""
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client_handshake_sock(sock, self.secret)
        except ProtocolError as exc:
            sock.close()
            raise ProtocolError(f"downstream {host}:{port}: {exc}") from None
        old, self.down = self.down, sock
        if old is not None:
            old.close()

    # -- data plane ----------------------------------------------------------------------------------------
    def accept_loop(self) -> None:
        """Accept upstream connections, one receiver thread each."""
        while not self.stopping:
            try:
                conn, addr = self.listener.accept()
            except OSError:
                return
            peer = f"{addr[0]}:{addr[1]}"
            threading.Thread(target=self.connection, args=(conn, peer), daemon=True).start()

    def connection(self, conn: socket.socket, peer: str) -> None:
        """One upstream connection: authenticate the peer, then receive its frames (see the module docstring)."""
        with conn:
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                server_handshake_sock(conn, self.secret, self.auth_timeout_s)
            except (ProtocolError, OSError) as exc:
                self.emit({"event": "refused", "peer": peer, "reason": str(exc)})
                return
            try:
                self.receive_loop(conn)
            except ProtocolError as exc:
                self.emit({"event": "error", "message": f"malformed frame from {peer}: {exc}"})
            except OSError as exc:
                self.emit({"event": "error", "message": f"upstream link lost ({peer}): {exc}"})

    def receive_loop(self, conn: socket.socket) -> None:
        """Queue every incoming frame (queue capacity and drop policy applied) until the peer ends."""
        while True:
            frame = read_frame_sock(conn)
            if frame is None:
                return
            self.admit(*frame)
            self.enqueue(*frame)

    def admit(self, header: dict[str, Any], payload: bytearray) -> None:
        """Refuse a well-formed frame this stage cannot serve (raises :class:`ProtocolError`)."""
        if header["kind"] == "image":
            if self.runner.index != 0:
                raise ProtocolError(f"request {header['id']}: image request sent to stage {self.runner.index}")
            check_image(payload)
        elif tuple(header["shape"]) != tuple(self.runner.input_shape):
            raise ProtocolError(
                f"request {header['id']}: shape {header['shape']} is not this stage's input "
                f"{list(self.runner.input_shape)}"
            )

    def enqueue(self, header: dict[str, Any], payload: bytearray) -> None:
        """Admit one request, or drop one when the queue is full."""
        with self.cond:
            self.counters.arrivals += 1
            if self.capacity is not None and len(self.queue) >= self.capacity:
                if not self.drop_head or not self.queue:
                    self.counters.dropped += 1
                    self.counters.dropped_ids.append(int(header["id"]))
                    return
                old, _ = self.queue.popleft()
                self.counters.dropped += 1
                self.counters.dropped_ids.append(int(old["id"]))
            self.queue.append((header, payload))
            self.cond.notify()

    def serve_loop(self) -> None:
        """Serve requests in order until stopped."""
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                header, payload = self.queue.popleft()
                self.busy = True
                pending, self.pending_level = self.pending_level, None
            t0 = time.perf_counter()
            switched = pending is not None and pending != self.runner.level
            if pending is not None:
                self.runner.set_level(pending)
            try:
                out_header, out = self.runner.run(header, payload)
            except Exception as exc:  # reported (the coordinator ends the run), never a silent thread death
                with self.cond:
                    self.busy = False
                self.emit({"event": "error", "message": f"request {header['id']}: cannot serve: {exc!r}"[:300]})
                continue
            service_s = time.perf_counter() - t0
            level = self.runner.level
            with self.cond:
                c = self.counters
                c.served += 1
                c.busy_s += service_s
                c.nominal_s += self.nominal_s[level]
                c.switches += int(switched)
                self.busy = False
            self.send(out_header, out)

    def send(self, header: dict[str, Any], payload: memoryview) -> None:
        """Send one frame downstream (dropped with a message when no downstream is connected)."""
        if self.down is None:
            self.emit({"event": "error", "message": f"request {header['id']}: no downstream connected"})
            return
        for buf in encode_frame(header, payload):
            self.down.sendall(buf)

    def stop(self) -> None:
        """Stop serving (stdin ended)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.listener.close()


def _read_secret() -> bytes:
    """The run's secret: the first line on stdin, ``{"cmd": "auth", "secret": HEX}`` (never on the command line)."""
    line = sys.stdin.readline()
    try:
        cmd = decode_line(line)
        secret = bytes.fromhex(str(cmd["secret"])) if cmd.get("cmd") == "auth" else b""
    except (ProtocolError, KeyError, ValueError):
        secret = b""
    if len(secret) < 16:
        raise SystemExit("hil.worker serve: the first line on stdin must be the run's secret")
    return secret


def _serve(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    secret = _read_secret()
    runner = StageRunner(args.checkpoint, args.stage, args.threads)
    nominal = [float(v) for v in args.nominal_s.split(",")] if args.nominal_s else []
    capacity = None if args.queue_capacity < 0 else args.queue_capacity
    probe = NodeProbe(args.thermal_file, args.freq_file, args.cpu_cgroup, args.power_meter)
    worker = Worker(runner, nominal, capacity, args.drop == "head", args.listen, secret, probe)
    worker.emit(
        {
            "event": "ready",
            "port": worker.listener.getsockname()[1],
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
            "stage": runner.index,
            "n_stages": runner.n_stages,
            "n_levels": runner.n_levels,
            "input_shape": list(runner.input_shape),
            "load_s": round(time.perf_counter() - t0, 3),
            "torch": torch.__version__,
        }
    )
    threading.Thread(target=worker.accept_loop, daemon=True).start()
    threading.Thread(target=worker.control_loop, daemon=True).start()
    try:
        worker.serve_loop()
    except (BrokenPipeError, ConnectionError) as exc:
        worker.emit({"event": "error", "message": f"downstream link lost: {exc}"})
        return 3
    return 0


def _timed_levels(runner: StageRunner, samples: int, warmup: int, seed: int) -> list[list[float]]:
    """latency[level] -> samples along the serve path, levels interleaved within each round."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(runner.input_shape, generator=gen)
    payload = bytearray(x.numpy().tobytes())
    header = {"id": 0, "kind": "tensor", "shape": list(x.shape), "dtype": "float32", "levels": []}
    out: list[list[float]] = [[] for _ in range(runner.n_levels)]
    for level in range(runner.n_levels):
        runner.set_level(level)
        for _ in range(warmup):
            runner.run(header, payload)
    for _ in range(samples):
        for level in range(runner.n_levels):
            t0 = time.perf_counter()
            runner.set_level(level)
            runner.run(header, payload)
            out[level].append(time.perf_counter() - t0)
    return out


def _switch_s(runner: StageRunner, repeats: int = 500) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        runner.set_level(i % runner.n_levels)
        times.append(time.perf_counter() - t0)
    runner.set_level(0)
    return float(np.median(times))


def _profile(args: argparse.Namespace) -> int:
    runner = StageRunner(args.checkpoint, args.stage, args.threads)
    sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()  # "go": the coordinator applies the node's CPU quota after every node has loaded
    t0 = time.time()
    latency = _timed_levels(runner, args.samples, args.warmup, args.seed)
    x = torch.randn(runner.input_shape)
    out_header, out = runner.run(
        {"id": 0, "kind": "tensor", "shape": list(x.shape), "dtype": "float32"}, bytearray(x.numpy().tobytes())
    )
    result = {
        "event": "profile",
        "stage": runner.index,
        "latency_s": latency,
        "switch_s": _switch_s(runner),
        "activation_bytes": len(out),
        "input_bytes": x.numel() * 4,
        "info": runner.info,
        "meta": {
            "threads": args.threads,
            "warmup": args.warmup,
            "samples": args.samples,
            "batch": 1,
            "dtype": "float32",
            "path": "decode + stage + encode, as served by hil.worker",
            "host": platform.node(),
            "torch": torch.__version__,
            "load_avg_start": [round(v, 2) for v in os.getloadavg()],
            "wall_s": round(time.time() - t0, 2),
        },
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    del out_header
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hil.worker", description="EdgePrune stage worker (run by edgeprune-hil)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("serve", "profile"):
        s = sub.add_parser(name)
        s.add_argument("--checkpoint", required=True)
        s.add_argument("--stage", type=int, required=True)
        s.add_argument("--threads", type=int, default=1)
        s.add_argument("--tag", default="", help="marker naming the run (visible in the process list)")
    serve = sub.choices["serve"]
    serve.add_argument("--nominal-s", default="", help="profiled mean service time per level, comma-separated")
    serve.add_argument("--queue-capacity", type=int, default=-1, help="waiting requests; -1 = unbounded")
    serve.add_argument("--drop", choices=("tail", "head"), default="tail")
    serve.add_argument(
        "--listen", default="127.0.0.1", help="address to accept upstream connections on (the node's address)"
    )
    serve.add_argument("--thermal-file", default="", help="thermal-zone file (millidegrees C) read at every report")
    serve.add_argument("--freq-file", default="", help="cpufreq file (kHz) read at every report")
    serve.add_argument("--cpu-cgroup", default="", help="the node's cgroup v1 cpu folder (its cpuacct.usage)")
    serve.add_argument("--power-meter", default="", help="shell command printing the node's power in watts")
    prof = sub.choices["profile"]
    prof.add_argument("--samples", type=int, default=30)
    prof.add_argument("--warmup", type=int, default=5)
    prof.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m hil.worker serve|profile``."""
    args = _parser().parse_args(argv)
    return _serve(args) if args.command == "serve" else _profile(args)


if __name__ == "__main__":
    sys.exit(main())
