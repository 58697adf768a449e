"""Wire formats of the hardware-in-the-loop pipeline (torch-free; no pickle anywhere).

Data plane (stage to stage, coordinator to the first stage, last stage to the coordinator): length-prefixed
frames ``!II`` (header length, payload length) + UTF-8 JSON header + raw payload bytes.  A tensor travels as
its raw little-endian bytes; the header carries ``shape`` and ``dtype``, so the receiver rebuilds it without
copying (``torch.frombuffer`` / ``numpy.frombuffer``).  Header keys:

``id``       request id (int)
``kind``     ``"tensor"`` (payload = tensor bytes) | ``"image"`` (payload = an encoded image file)
``shape``, ``dtype``   for tensors
``levels``   the level each stage served the request at, appended stage by stage

Control plane (coordinator ↔ worker, over the worker's SSH stdin/stdout): one JSON object per line.
Commands (coordinator → worker): ``{"cmd": "connect", "host", "port"}``, ``{"cmd": "level", "level"}``,
``{"cmd": "report", "seq"}``, ``{"cmd": "reset"}``; stdin EOF means shut down.  Events (worker →
coordinator): ``{"event": "ready", "port", "pid", "pgid", ...}``, ``{"event": "connected"}``,
``{"event": "report", "seq", ...counters}``, ``{"event": "error", "message"}``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FRAME_HEAD",
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "ProtocolError",
    "decode_line",
    "encode_frame",
    "encode_line",
    "read_frame_async",
    "read_frame_sock",
]

FRAME_HEAD = struct.Struct("!II")
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 30


class ProtocolError(Exception):
    """A malformed frame or control line (a bug or a foreign peer, never user input)."""


def encode_frame(header: Mapping[str, Any], payload: bytes | bytearray | memoryview = b"") -> list[bytes | memoryview]:
    """The frame as buffers for ``sendmsg`` / ``writelines`` (the payload is not copied)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return [FRAME_HEAD.pack(len(head), len(payload)) + head, memoryview(payload)]


def _check_sizes(head_len: int, payload_len: int) -> None:
    if head_len > MAX_HEADER_BYTES or payload_len > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"frame too large (header {head_len} B, payload {payload_len} B)")


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0:
                return None
            raise ProtocolError("connection closed in the middle of a frame")
        got += k
    return buf


def read_frame_sock(sock: socket.socket) -> tuple[dict[str, Any], bytearray] | None:
    """Read one frame from a blocking socket; ``None`` on a clean end of stream."""
    head = _recv_exact(sock, FRAME_HEAD.size)
    if head is None:
        return None
    head_len, payload_len = FRAME_HEAD.unpack(head)
    _check_sizes(head_len, payload_len)
    header_bytes = _recv_exact(sock, head_len) if head_len else bytearray()
    payload = _recv_exact(sock, payload_len) if payload_len else bytearray()
    if header_bytes is None or payload is None:
        raise ProtocolError("connection closed in the middle of a frame")
    return json.loads(header_bytes), payload


async def read_frame_async(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes] | None:
    """Read one frame from an asyncio stream; ``None`` on a clean end of stream."""
    try:
        head = await reader.readexactly(FRAME_HEAD.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed in the middle of a frame") from None
    head_len, payload_len = FRAME_HEAD.unpack(head)
    _check_sizes(head_len, payload_len)
    try:
        header = json.loads(await reader.readexactly(head_len)) if head_len else {}
        payload = await reader.readexactly(payload_len) if payload_len else b""
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed in the middle of a frame") from None
    return header, payload


def encode_line(obj: Mapping[str, Any]) -> str:
    """One control line (JSON + newline)."""
    return json.dumps(obj, separators=(",", ":")) + "\n"


def decode_line(line: str) -> dict[str, Any]:
    """Parse one control line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not a control line: {line[:80]!r}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a control object: {line[:80]!r}")
    return obj
