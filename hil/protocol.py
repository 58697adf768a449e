"""Wire formats of the hardware-in-the-loop pipeline (torch-free; no pickle anywhere), and what they trust.

Data plane (stage to stage, coordinator to the first stage, last stage to the coordinator): every TCP
connection starts with an HMAC challenge (below); after it, length-prefixed frames ``!II`` (header length,
payload length) + UTF-8 JSON header + raw payload bytes.  A tensor travels as its raw little-endian bytes;
the header carries ``shape`` and ``dtype``, so the receiver rebuilds it without copying
(``torch.frombuffer`` / ``numpy.frombuffer``).  Header keys (no others are accepted):

``id``       request id (int, 0 .. 2**53)
``run``      the coordinator's run index (int, or null)
``kind``     ``"tensor"`` (payload = tensor bytes) | ``"image"`` (payload = an encoded image file)
``shape``, ``dtype``   for tensors only: at most ``MAX_DIMS`` positive sizes; ``dtype`` from ``DTYPE_BYTES``;
             the payload is exactly ``prod(shape) * itemsize`` bytes
``levels``   the level each stage served the request at, appended stage by stage (at most ``MAX_LEVELS``)

Every frame is checked before its payload is read (:func:`check_header`): a frame over ``MAX_HEADER_BYTES``
/ ``MAX_PAYLOAD_BYTES``, a header that is not a JSON object of the keys above, or a payload that disagrees
with the header raises :class:`ProtocolError` (a :class:`~edgeprune.errors.HilError`); a frame that has
started must complete within ``FRAME_TIMEOUT_S``.  A connection that ends inside a frame raises
``ConnectionResetError`` (a lost link, most often a peer that died, not a malformed frame).

Authentication (:func:`server_handshake_sock` / ``_async``, :func:`client_handshake_sock` / ``_async``): the
accepting side sends ``AUTH_MAGIC`` + a fresh 32-byte nonce; the connecting side answers with
HMAC-SHA256(secret, ``AUTH_CONTEXT`` + nonce); the accepting side compares in constant time and answers one
byte ``AUTH_OK`` (or closes).  The secret is drawn per run by the coordinator (:func:`new_secret`) and
handed to each worker as the first line on its SSH stdin, so it never appears on a command line or the wire.

Control plane (coordinator ↔ worker, over the worker's SSH stdin/stdout): one JSON object per line.
Commands (coordinator → worker): ``{"cmd": "auth", "secret"}`` (first line, ``serve`` only),
``{"cmd": "connect", "host", "port"}``, ``{"cmd": "level", "level"}``, ``{"cmd": "report", "seq"}``,
``{"cmd": "reset"}``; stdin EOF means shut down.  Events (worker → coordinator): ``{"event": "ready",
"port", "pid", "pgid", ...}``, ``{"event": "connected"}``, ``{"event": "report", "seq", ...counters}``,
``{"event": "refused", "peer", "reason"}`` (an unauthenticated connection, logged; the run goes on),
``{"event": "error", "message"}`` (ends the run).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import socket
import struct
from collections.abc import Mapping
from typing import Any

from edgeprune.errors import ProtocolError
from hil.readings import READING_FIELDS

__all__ = [
    "AUTH_TIMEOUT_S",
    "DTYPE_BYTES",
    "FRAME_HEAD",
    "FRAME_TIMEOUT_S",
    "MAX_HEADER_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_PAYLOAD_BYTES",
    "ProtocolError",
    "check_event",
    "check_header",
    "client_handshake_async",
    "client_handshake_sock",
    "decode_line",
    "encode_frame",
    "encode_line",
    "new_secret",
    "read_frame_async",
    "read_frame_sock",
    "server_handshake_async",
    "server_handshake_sock",
]

FRAME_HEAD = struct.Struct("!II")
MAX_HEADER_BYTES = 16 << 10  # a header is ~100 B; 16 KiB leaves room for long level lists
MAX_PAYLOAD_BYTES = 64 << 20  # a ViT-B/16 activation is 605 KB, a camera image a few MB
MAX_DIMS = 8
MAX_LEVELS = 64  # stages a request may pass
MAX_LEVEL = 255
MAX_ID = 1 << 53
MAX_IMAGE_PIXELS = 4096 * 4096  # decoded size limit of an image request (decompression bombs)
DTYPE_BYTES = {"float32": 4}  # what the stages carry; anything else is refused
FRAME_TIMEOUT_S = 30.0  # a frame whose first bytes arrived must be complete within this
AUTH_TIMEOUT_S = 5.0  # a connecting peer must answer the challenge within this
AUTH_MAGIC = b"EPHIL\x00\x01\x00"
AUTH_CONTEXT = b"edgeprune-hil-auth/1\x00"
AUTH_OK = b"\x01"
NONCE_BYTES = 32
MAC_BYTES = 32
_KEYS = frozenset({"id", "run", "kind", "shape", "dtype", "levels"})


def encode_frame(header: Mapping[str, Any], payload: bytes | bytearray | memoryview = b"") -> list[bytes | memoryview]:
    """The frame as buffers for ``sendmsg`` / ``writelines`` (the payload is not copied)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return [FRAME_HEAD.pack(len(head), len(payload)) + head, memoryview(payload)]


# -- header validation -------------------------------------------------------------------------------------------
def _int_in(header: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = header.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(f"header {key} = {str(v)[:40]!r}: not an integer in {lo}..{hi}")
    return v


def _check_tensor(header: Mapping[str, Any], payload_len: int) -> None:
    dtype = header.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise ProtocolError(f"header dtype = {str(dtype)[:40]!r}: not one of {sorted(DTYPE_BYTES)}")
    shape = header.get("shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS:
        raise ProtocolError(f"header shape = {str(shape)[:60]!r}: not a list of 1..{MAX_DIMS} sizes")
    if any(type(d) is not int or not 1 <= d <= MAX_PAYLOAD_BYTES for d in shape):
        raise ProtocolError(f"header shape = {str(shape)[:60]}: sizes must be integers in 1..{MAX_PAYLOAD_BYTES}")
    need = math.prod(shape) * DTYPE_BYTES[dtype]
    if need != payload_len:
        raise ProtocolError(f"header shape {shape} {dtype} needs {need} B, the frame carries {payload_len} B")


def check_header(header: Any, payload_len: int) -> dict[str, Any]:
    """``header`` if it is a valid frame header for a payload of ``payload_len`` bytes (module docstring)."""
    if not isinstance(header, dict):
        raise ProtocolError(f"frame header is a JSON {type(header).__name__}, not an object")
    unknown = sorted(str(k)[:20] for k in header.keys() - _KEYS)
    if unknown:
        raise ProtocolError(f"frame header has unknown keys {unknown[:5]}")
    _int_in(header, "id", 0, MAX_ID)
    if header.get("run") is not None:
        _int_in(header, "run", 0, MAX_ID)
    levels = header.get("levels", [])
    if not isinstance(levels, list) or len(levels) > MAX_LEVELS:
        raise ProtocolError(f"header levels = {str(levels)[:60]}: not a list of at most {MAX_LEVELS} levels")
    if any(type(v) is not int or not 0 <= v <= MAX_LEVEL for v in levels):
        raise ProtocolError(f"header levels = {str(levels)[:60]}: levels must be integers in 0..{MAX_LEVEL}")
    kind = header.get("kind")
    if kind == "tensor":
        _check_tensor(header, payload_len)
    elif kind == "image":
        if "shape" in header or "dtype" in header:
            raise ProtocolError("image frame header carries shape/dtype")
        if payload_len == 0:
            raise ProtocolError("image frame without image bytes")
    else:
        raise ProtocolError(f"header kind = {str(kind)[:40]!r}: not 'tensor' or 'image'")
    return header


def _parse_header(payload_len: int, raw: bytes | bytearray) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame header is not UTF-8 JSON ({type(exc).__name__})") from None
    return check_header(obj, payload_len)


def _check_sizes(head_len: int, payload_len: int) -> None:
    if not 0 < head_len <= MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {head_len} B (limit 1..{MAX_HEADER_BYTES})")
    if payload_len > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"frame payload of {payload_len} B (limit {MAX_PAYLOAD_BYTES})")


# -- blocking sockets (workers) ----------------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int, first: bool = False) -> bytearray | None:
    """``n`` bytes; ``None`` on end of stream before the first byte when ``first`` (``TimeoutError`` as the
    socket's timeout says)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0 and first:
                return None
            raise ConnectionResetError("connection closed in the middle of a frame")
        if got == 0 and first:
            sock.settimeout(FRAME_TIMEOUT_S)  # the frame has started: the rest must follow
        got += k
    return buf


def read_frame_sock(sock: socket.socket) -> tuple[dict[str, Any], bytearray] | None:
    """Read one checked frame from a blocking socket; ``None`` on a clean end of stream."""
    sock.settimeout(None)
    try:
        head = _recv_exact(sock, FRAME_HEAD.size, first=True)
        if head is None:
            return None
        head_len, payload_len = FRAME_HEAD.unpack(head)
        _check_sizes(head_len, payload_len)
        header = _parse_header(payload_len, _recv_exact(sock, head_len) or b"")
        payload = _recv_exact(sock, payload_len) if payload_len else bytearray()
    except TimeoutError:
        raise ProtocolError(f"frame incomplete after {FRAME_TIMEOUT_S:g} s") from None
    return header, payload or bytearray()


def _mac(secret: bytes, challenge: bytes) -> bytes:
    if len(challenge) != len(AUTH_MAGIC) + NONCE_BYTES or not challenge.startswith(AUTH_MAGIC):
        raise ProtocolError("the peer is not an EdgePrune HIL endpoint (bad challenge)")
    return hmac.new(secret, AUTH_CONTEXT + challenge[len(AUTH_MAGIC) :], hashlib.sha256).digest()


def new_secret() -> bytes:
    """A fresh per-run secret (32 random bytes)."""
    return secrets.token_bytes(32)


def server_handshake_sock(sock: socket.socket, secret: bytes, timeout_s: float = AUTH_TIMEOUT_S) -> None:
    """Challenge a connecting peer; raises :class:`ProtocolError` (the reason) unless it knows ``secret``."""
    challenge = AUTH_MAGIC + secrets.token_bytes(NONCE_BYTES)
    sock.settimeout(timeout_s)
    try:
        sock.sendall(challenge)
        answer = _recv_exact(sock, MAC_BYTES)
    except TimeoutError:
        raise ProtocolError(f"no answer to the challenge within {timeout_s:g} s") from None
    except OSError:
        raise ProtocolError("closed before answering the challenge") from None
    if answer is None or not hmac.compare_digest(bytes(answer), _mac(secret, challenge)):
        raise ProtocolError("wrong answer to the challenge (not this run's secret)")
    sock.sendall(AUTH_OK)
    sock.settimeout(None)


def client_handshake_sock(sock: socket.socket, secret: bytes, timeout_s: float = AUTH_TIMEOUT_S) -> None:
    """Answer the challenge of the accepting side; raises :class:`ProtocolError` when refused."""
    sock.settimeout(timeout_s)
    try:
        challenge = _recv_exact(sock, len(AUTH_MAGIC) + NONCE_BYTES)
        sock.sendall(_mac(secret, bytes(challenge or b"")))
        ok = _recv_exact(sock, len(AUTH_OK))
    except OSError as exc:
        raise ProtocolError(f"authentication refused by the peer ({type(exc).__name__}: {exc})") from None
    except ProtocolError as exc:
        raise ProtocolError(f"authentication failed ({exc})") from None
    if ok != AUTH_OK:
        raise ProtocolError("authentication refused by the peer")
    sock.settimeout(None)


# -- asyncio streams (coordinator) -------------------------------------------------------------------------------
async def _read_exact_async(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("connection closed in the middle of a frame") from None


async def read_frame_async(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes] | None:
    """Read one checked frame from an asyncio stream; ``None`` on a clean end of stream."""
    try:
        head = await reader.readexactly(FRAME_HEAD.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ConnectionResetError("connection closed in the middle of a frame") from None
    head_len, payload_len = FRAME_HEAD.unpack(head)
    _check_sizes(head_len, payload_len)
    try:
        async with asyncio.timeout(FRAME_TIMEOUT_S):
            header = _parse_header(payload_len, await _read_exact_async(reader, head_len))
            payload = await _read_exact_async(reader, payload_len) if payload_len else b""
    except TimeoutError:
        raise ProtocolError(f"frame incomplete after {FRAME_TIMEOUT_S:g} s") from None
    return header, payload


async def server_handshake_async(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, timeout_s: float = AUTH_TIMEOUT_S
) -> None:
    """:func:`server_handshake_sock` on asyncio streams."""
    challenge = AUTH_MAGIC + secrets.token_bytes(NONCE_BYTES)
    writer.write(challenge)
    try:
        async with asyncio.timeout(timeout_s):
            answer = await reader.readexactly(MAC_BYTES)
    except TimeoutError:
        raise ProtocolError(f"no answer to the challenge within {timeout_s:g} s") from None
    except (asyncio.IncompleteReadError, OSError):
        raise ProtocolError("closed before answering the challenge") from None
    if not hmac.compare_digest(answer, _mac(secret, challenge)):
        raise ProtocolError("wrong answer to the challenge (not this run's secret)")
    writer.write(AUTH_OK)


async def client_handshake_async(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, timeout_s: float = AUTH_TIMEOUT_S
) -> None:
    """:func:`client_handshake_sock` on asyncio streams."""
    try:
        async with asyncio.timeout(timeout_s):
            challenge = await reader.readexactly(len(AUTH_MAGIC) + NONCE_BYTES)
            writer.write(_mac(secret, challenge))
            ok = await reader.readexactly(len(AUTH_OK))
    except (TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
        raise ProtocolError(f"authentication refused by the peer ({type(exc).__name__})") from None
    if ok != AUTH_OK:
        raise ProtocolError("authentication refused by the peer")


# -- control lines -----------------------------------------------------------------------------------------------
_EVENT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "ready": {"port": (int,), "n_stages": (int,), "n_levels": (int,), "input_shape": (list,)},
    "report": {
        "level": (int,),
        "queue_len": (int,),
        "busy": (bool,),
        "arrivals": (int,),
        "served": (int,),
        "busy_s": (int, float),
        "nominal_s": (int, float),
        "dropped": (int,),
        "switches": (int,),
        "dropped_ids": (list,),
    },
}


def check_event(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` if the fields the coordinator uses are there with their types (``ready``, ``report``)."""
    fields = _EVENT_FIELDS.get(str(event.get("event")), {})
    for key, types in fields.items():
        v = event.get(key)
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ProtocolError(f"{event.get('event')} event field {key} = {str(v)[:40]!r}: wrong or missing")
    if "dropped_ids" in fields and not all(type(v) is int for v in event["dropped_ids"]):
        raise ProtocolError("report event field dropped_ids: not a list of request ids")
    if event.get("event") == "report":
        _check_readings(event)
    return event


def _check_readings(event: dict[str, Any]) -> None:
    """A report's node readings (``hil.readings.READING_FIELDS``): absent or ``None`` (unknown), a bool for
    ``throttled``, else a finite number."""
    for key in READING_FIELDS:
        v = event.get(key)
        if v is None:
            continue
        ok = isinstance(v, bool) if key == "throttled" else type(v) in (int, float) and math.isfinite(v)
        if not ok:
            raise ProtocolError(f"report event field {key} = {str(v)[:40]!r}: wrong type")


def encode_line(obj: Mapping[str, Any]) -> str:
    """One control line (JSON + newline)."""
    return json.dumps(obj, separators=(",", ":")) + "\n"


def decode_line(line: str) -> dict[str, Any]:
    """Parse one control line."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError(f"not a control line: {line.strip()[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"not a control object: {line.strip()[:80]!r}")
    return obj
