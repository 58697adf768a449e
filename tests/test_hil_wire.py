"""The HIL worker wire trusts nobody: fuzzed frames, the HMAC challenge, image limits, clear failures.

No sshd needed: the frame parser is fed through socket pairs and asyncio streams, and a real
:class:`hil.worker.Worker` (its stage replaced by an echo so no checkpoint is loaded) is driven over loopback
TCP exactly as the previous stage and the coordinator drive it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import queue
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeprune.errors import HilError, ProtocolError
from hil.protocol import (
    FRAME_HEAD,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    check_header,
    client_handshake_async,
    client_handshake_sock,
    encode_frame,
    new_secret,
    read_frame_async,
    read_frame_sock,
    server_handshake_async,
    server_handshake_sock,
)
from hil.remote import exit_cause

pytest.importorskip("torch")
from hil.worker import Worker, check_image

IN_SHAPE = (1, 3, 4)
WAIT_S = 5.0  # bound on every wait: a hang fails the test instead of blocking it


def _frame_bytes(header: dict[str, Any], payload: bytes) -> bytes:
    return b"".join(bytes(b) for b in encode_frame(header, payload))


def _tensor(rid: int, shape: tuple[int, ...] = IN_SHAPE) -> tuple[dict[str, Any], bytes]:
    payload = np.arange(int(np.prod(shape)), dtype=np.float32).tobytes()
    return {"id": rid, "run": 0, "kind": "tensor", "shape": list(shape), "dtype": "float32", "levels": []}, payload


# -- strategies: valid frames, then mutations of them and plain noise --------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    header = {
        "id": draw(st.integers(0, 2**53)),
        "run": draw(st.none() | st.integers(0, 9)),
        "kind": "tensor",
        "shape": shape,
        "dtype": "float32",
        "levels": draw(st.lists(st.integers(0, 7), max_size=4)),
    }
    return _frame_bytes(header, draw(st.binary(min_size=int(np.prod(shape)) * 4, max_size=int(np.prod(shape)) * 4)))


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_frames()))
    how = draw(st.sampled_from(["flip", "truncate", "header", "lengths", "splice"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "header":  # a random JSON value (or a valid header with one key replaced) as the header
        head_len, payload_len = FRAME_HEAD.unpack(data[:8])
        head = json.loads(data[8 : 8 + head_len])
        value = draw(json_values)
        head = {**head, draw(st.sampled_from([*head, "x"])): value} if draw(st.booleans()) else value
        body = json.dumps(head).encode()
        data = bytearray(FRAME_HEAD.pack(len(body), payload_len) + body) + data[8 + head_len :]
    elif how == "lengths":
        big = draw(st.sampled_from([0, MAX_HEADER_BYTES + 1, MAX_PAYLOAD_BYTES + 1, 2**32 - 1, 7]))
        data[:8] = (
            FRAME_HEAD.pack(big, FRAME_HEAD.unpack(data[:8])[1])
            if draw(st.booleans())
            else data[:4] + struct.pack("!I", big)
        )
    else:
        data += draw(st.binary(max_size=40))
    return bytes(data)


any_frames = st.binary(max_size=300) | mutated_frames() | valid_frames()


def _parse_all(data: bytes) -> tuple[int, BaseException | None]:
    """Frames read from ``data`` through a socket pair until the end or the first error."""
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        b.settimeout(WAIT_S)
        n = 0
        try:
            while (frame := read_frame_sock(b)) is not None:
                check_header(frame[0], len(frame[1]))  # what came out is a checked frame
                n += 1
        except (ProtocolError, ConnectionResetError) as exc:
            return n, exc
    return n, None


def _clear(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 300, text


# Each example is a batch of inputs, so that thousands of frames cost seconds, not minutes, of hypothesis'
# per-example overhead on a shared machine; HIL_FUZZ_SCALE multiplies the number of batches.
FUZZ_SCALE = float(os.environ.get("HIL_FUZZ_SCALE", "1"))
BATCH = 10


def _parse_all_async(loop: asyncio.AbstractEventLoop, data: bytes) -> tuple[int, BaseException | None]:
    """:func:`_parse_all` through the coordinator's asyncio reader."""

    async def run() -> tuple[int, BaseException | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        got = 0
        try:
            async with asyncio.timeout(WAIT_S):
                while await read_frame_async(reader) is not None:
                    got += 1
        except (ProtocolError, ConnectionResetError) as exc:
            return got, exc
        return got, None

    return loop.run_until_complete(run())


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for every example."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@settings(max_examples=int(200 * FUZZ_SCALE), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(any_frames, min_size=BATCH, max_size=BATCH))
def test_frame_parser_rejects_every_malformed_frame_with_a_clear_error(
    loop: asyncio.AbstractEventLoop, batch: list[bytes]
) -> None:
    for data in batch:
        n, err = _parse_all(data)
        if err is not None:
            _clear(err)
        n_async, err_async = _parse_all_async(loop, data)
        assert n_async == n and type(err_async) is type(err)  # both readers agree on every input


def test_frame_parser_examples() -> None:
    header, payload = _tensor(1)
    for bad, expect in [
        ({**header, "dtype": "object"}, "dtype = 'object': not one of ['float32']"),
        ({**header, "dtype": "__class__"}, "not one of"),
        ({**header, "shape": [1, 3, 5]}, "needs 60 B, the frame carries 48 B"),
        ({**header, "shape": [-1, 12]}, "sizes must be integers"),
        ({**header, "id": True}, "header id = 'True'"),
        ({**header, "kind": "pickle"}, "kind = 'pickle'"),
        ({**header, "evil": 1}, "unknown keys ['evil']"),
    ]:
        _, err = _parse_all(_frame_bytes(bad, payload))
        assert isinstance(err, ProtocolError) and isinstance(err, HilError) and expect in str(err), (bad, err)
    _, err = _parse_all(FRAME_HEAD.pack(10, MAX_PAYLOAD_BYTES + 1) + b"{}" * 5)
    assert isinstance(err, ProtocolError) and "limit" in str(err)  # refused before reading 64 MiB
    _, err = _parse_all(FRAME_HEAD.pack(6000, 0) + b"[" * 6000)
    assert isinstance(err, ProtocolError) and "not UTF-8 JSON" in str(err)  # deep nesting: no RecursionError


def test_a_stalled_frame_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import hil.protocol

    monkeypatch.setattr(hil.protocol, "FRAME_TIMEOUT_S", 0.2)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(_frame_bytes(*_tensor(1))[:20])  # the frame starts, then nothing more comes
        with pytest.raises(ProtocolError, match=r"frame incomplete after 0\.2 s"):
            read_frame_sock(b)


# -- the HMAC challenge --------------------------------------------------------------------------------------------
def _handshake_pair(server_secret: bytes, client_secret: bytes) -> tuple[BaseException | None, BaseException | None]:
    a, b = socket.socketpair()
    errors: list[BaseException | None] = [None]

    def serve() -> None:
        try:
            server_handshake_sock(a, server_secret, timeout_s=WAIT_S)
        except ProtocolError as exc:
            errors[0] = exc
            a.close()

    t = threading.Thread(target=serve)
    t.start()
    client_err = None
    try:
        client_handshake_sock(b, client_secret, timeout_s=WAIT_S)
    except ProtocolError as exc:
        client_err = exc
    t.join(WAIT_S)
    a.close()
    b.close()
    return errors[0], client_err


def test_handshake_accepts_the_secret_and_refuses_anything_else() -> None:
    key = new_secret()
    assert _handshake_pair(key, key) == (None, None)
    server_err, client_err = _handshake_pair(key, new_secret())
    assert "not this run's secret" in str(server_err) and "refused" in str(client_err)

    async def both_async() -> None:  # the coordinator's side: asyncio server and client
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await server_handshake_async(r, w, key)
            w.write(b"ok")
            await w.drain()
            w.close()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        await client_handshake_async(r, w, key)
        assert await r.read() == b"ok"
        w.close()
        server.close()

    asyncio.run(both_async())


# -- a real worker, its stage an echo --------------------------------------------------------------------------
class EchoStage:
    """Stands in for :class:`hil.worker.StageRunner`: stage 0 of 4 levels, output = input."""

    index = 0
    n_levels = 4
    level = 0
    input_shape = IN_SHAPE

    def set_level(self, level: int) -> None:
        self.level = level

    def run(self, header: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], memoryview]:
        if header["kind"] == "image":
            check_image(payload).convert("RGB")  # decode it as the real stage would
            payload = bytearray(np.zeros(IN_SHAPE, dtype=np.float32).tobytes())
        out = {**header, "kind": "tensor", "shape": list(IN_SHAPE), "dtype": "float32"}
        out["levels"] = [*header.get("levels", []), self.level]
        return out, memoryview(payload)


class Harness(Worker):
    """A worker whose events go to a queue instead of stdout."""

    events: queue.Queue[dict[str, Any]]

    def emit(self, obj: dict[str, Any]) -> None:
        self.events.put(obj)


@pytest.fixture(scope="module")
def wire() -> Iterator[tuple[Harness, socket.socket, bytes]]:
    """A serving worker on 127.0.0.1 and the downstream socket its results arrive on."""
    key = new_secret()
    worker = Harness(EchoStage(), [0.01] * 4, None, False, "127.0.0.1", key)  # type: ignore[arg-type]
    worker.events = queue.Queue()
    worker.auth_timeout_s = 0.3
    down = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = down.accept()
        server_handshake_sock(conn, key)
        accepted.append(conn)

    t = threading.Thread(target=accept)
    t.start()
    worker.connect_downstream("127.0.0.1", down.getsockname()[1])
    t.join(WAIT_S)
    for target in (worker.accept_loop, worker.serve_loop):
        threading.Thread(target=target, daemon=True).start()
    results = accepted[0]
    results.settimeout(WAIT_S)
    yield worker, results, key
    worker.stop()
    results.close()
    down.close()


def _connect(worker: Worker, key: bytes | None) -> socket.socket:
    s = socket.create_connection(worker.listener.getsockname()[:2], timeout=WAIT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as every sender of the pipeline does
    if key is not None:
        client_handshake_sock(s, key, timeout_s=WAIT_S)
    return s


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def _served(worker: Worker, results: socket.socket, key: bytes, rid: int) -> None:
    """Send one valid request on a new connection; its result must come out downstream."""
    with _connect(worker, key) as s:
        for buf in encode_frame(*_tensor(rid)):
            s.sendall(buf)
        while True:
            frame = read_frame_sock(results)
            assert frame is not None
            if frame[0]["id"] == rid:
                assert frame[0]["levels"] == [0] and bytes(frame[1]) == _tensor(rid)[1]
                return


def _events(worker: Harness) -> list[dict[str, Any]]:
    out = []
    while not worker.events.empty():
        out.append(worker.events.get_nowait())
    return out


PROBE_ID = 2**50


@settings(max_examples=int(100 * FUZZ_SCALE), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(any_frames, min_size=BATCH, max_size=BATCH))
def test_worker_rejects_malformed_requests_and_keeps_serving(
    wire: tuple[Harness, socket.socket, bytes], batch: list[bytes]
) -> None:
    for data in batch:
        _one_connection(wire, data)


def _one_connection(wire: tuple[Harness, socket.socket, bytes], data: bytes) -> None:
    worker, results, key = wire
    with _connect(worker, key) as s:
        with contextlib.suppress(OSError):  # the worker may have ended the connection already
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        assert _closed_by_peer(s)  # the worker ends the connection: no hang (recv bounded by WAIT_S)
    _served(worker, results, key, PROBE_ID)  # ... and serves the next valid frame (which also flushes the echo)
    n_ok, err = _parse_all(data)
    events = _events(worker)
    errors = [e["message"] for e in events if e["event"] == "error"]
    assert [e for e in events if e["event"] != "error"] == []
    # one error at most (the connection ends with it); exactly one when the parser itself refuses the bytes
    # (a well-formed frame of another shape than the stage's input is refused by the worker too)
    assert len(errors) == (1 if err is not None else len(errors)) and len(errors) <= 1, (n_ok, err, errors)
    for message in errors:
        assert message.startswith(("malformed frame from 127.0.0.1:", "upstream link lost (127.0.0.1:")), message
        assert "\n" not in message and len(message) < 300


def test_worker_refuses_clients_without_the_secret_and_goes_on(wire: tuple[Harness, socket.socket, bytes]) -> None:
    worker, results, key = wire
    with _connect(worker, None) as s:  # a stranger: reads the challenge, sends a frame instead of the answer
        s.recv(40)
        s.sendall(_frame_bytes(*_tensor(5)))
        assert _closed_by_peer(s)
    with _connect(worker, None) as s:  # one that never answers
        assert _closed_by_peer(s)
    with pytest.raises(ProtocolError, match="refused"), _connect(worker, new_secret()):
        pass
    _served(worker, results, key, 77)
    refused = [e for e in _events(worker) if e["event"] == "refused"]
    assert len(refused) == 3
    assert "not this run's secret" in refused[0]["reason"] and "within 0.3 s" in refused[1]["reason"]
    assert all(e["peer"].startswith("127.0.0.1:") for e in refused)


def _png(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, format=fmt)
    return buf.getvalue()


def test_image_requests_are_checked_before_decoding(wire: tuple[Harness, socket.socket, bytes]) -> None:
    worker, results, key = wire
    assert check_image(_png((64, 48))).size == (64, 48)
    bomb = _png((5000, 5000))  # 75 Mpx, a few tens of KB compressed
    assert len(bomb) < 200_000
    with pytest.raises(ProtocolError, match="5000x5000 pixels"):
        check_image(bomb)
    with pytest.raises(ProtocolError, match="not a JPEG/PNG/BMP/WEBP image"):
        check_image(_png((8, 8), "GIF"))
    for payload in (bomb, b"GIF89a not really"):
        with _connect(worker, key) as s:
            for buf in encode_frame({"id": 9, "kind": "image", "levels": []}, payload):
                s.sendall(buf)
            assert _closed_by_peer(s)
    errors = [e["message"] for e in _events(worker)]
    assert len(errors) == 2 and "5000x5000 pixels" in errors[0] and "not a JPEG" in errors[1]
    _served(worker, results, key, 78)


# -- messages ------------------------------------------------------------------------------------------------------
def test_a_killed_worker_is_named_by_its_signal() -> None:
    setsid = "setsid: child 4242 did not exit normally: Success"
    assert exit_cause(9, None, ["loading", setsid]) == ("killed by signal 9 (SIGKILL)", "loading")
    assert exit_cause(15, None, [setsid]) == ("killed by signal 15 (SIGTERM)", "no message")
    assert exit_cause(None, "KILL", []) == ("killed by signal 9 (SIGKILL)", "no message")
    assert exit_cause(1, None, ["Traceback", "ValueError: x"]) == ("exit status 1", "ValueError: x")


def test_missing_cluster_file_is_named_before_a_missing_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.cli import main

    assert main(["--cluster", str(tmp_path / "pis.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"edgeprune-hil: error: {tmp_path / 'pis.toml'}: file not found"
    good = Path(__file__).parents[1] / "examples" / "pis.toml"
    assert main(["--cluster", str(good)]) == 2
    assert "no command given: check, profile or run" in capsys.readouterr().err


def test_sim_vs_hw_is_inside_the_folder_when_it_is_published(
    case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeprune.atomic
    import hil.cli
    from edgeprune.scenario import load_scenario
    from sim.runner import run_scenario

    sc = load_scenario(case).with_policies(["no-pruning"])
    outcome = hil.cli._Outcome(results=run_scenario(sc))
    published: list[list[str]] = []
    publish = edgeprune.atomic._publish_dir

    def spy(new: Path, out: Path, replace: bool) -> None:
        published.append(sorted(p.name for p in new.iterdir()))
        publish(new, out, replace)

    async def fake_run(*_: Any, **__: Any) -> hil.cli._Outcome:
        return outcome

    monkeypatch.setattr(edgeprune.atomic, "_publish_dir", spy)  # the one place a folder is published
    monkeypatch.setattr(hil.cli, "_run", fake_run)
    monkeypatch.setattr(hil.cli, "_load_run_scenario", lambda *_: sc)
    monkeypatch.setattr(hil.cli, "_sim_vs_hw", lambda *_: ("table", {"sim_vs_hw.json": "{}", "sim_vs_hw.txt": "t\n"}))
    cluster: Any = argparse.Namespace(name="lab", stages=[], coordinator=argparse.Namespace(transport="direct"))
    args = argparse.Namespace(out=tmp_path / "run", force=False, no_sim=False, under_profile=None)
    assert hil.cli._run_cmd(cluster, args) == 0
    assert published == [["no-pruning", "scenario.toml", "sim_vs_hw.json", "sim_vs_hw.txt", "summary.json"]]

    def broken(*_: Any) -> Any:
        raise HilError("comparison failed")

    monkeypatch.setattr(hil.cli, "_sim_vs_hw", broken)
    args.out = tmp_path / "run2"
    with pytest.raises(HilError, match="comparison failed"):
        hil.cli._run_cmd(cluster, args)
    doc = json.loads((args.out / "summary.json").read_text())  # the results are published all the same
    assert doc["sim_vs_hw_error"] == "HilError: comparison failed"


def test_control_events_are_checked() -> None:
    from hil.protocol import check_event, decode_line

    ready = {"event": "ready", "port": 5000, "n_stages": 4, "n_levels": 4, "input_shape": [1, 3, 4]}
    assert check_event(ready) == ready
    with pytest.raises(ProtocolError, match="ready event field port = 'None': wrong or missing"):
        check_event({**ready, "port": None})
    report = {
        "event": "report",
        "seq": 1,
        "level": 0,
        "queue_len": 0,
        "busy": False,
        "arrivals": 1,
        "served": 1,
        "busy_s": 0.1,
        "nominal_s": 0.1,
        "dropped": 0,
        "switches": 0,
        "dropped_ids": [],
    }
    assert check_event(report) == report
    with pytest.raises(ProtocolError, match="report event field busy"):
        check_event({**report, "busy": "yes"})
    with pytest.raises(ProtocolError, match="dropped_ids"):
        check_event({**report, "dropped_ids": ["x"]})
    with pytest.raises(ProtocolError, match="not a control line") as info:
        decode_line("Traceback (most recent call last):\n")
    assert isinstance(info.value, HilError)  # one line for the user, no traceback
