"""Framework overhead of the HIL pipeline per request and hop, against the stage compute it carries.

For a ViT-B/16 activation ([1, 197, 768] fp32, 605 KB) this measures, on this machine:

* serialisation: ``encode_frame`` (JSON header + zero-copy payload view) and the receiver's decode
  (``torch.frombuffer`` + reshape, no copy) — per hop;
* transport: one frame over an authenticated loopback TCP connection (send → fully received and its header
  checked by ``read_frame_sock``), the way workers send; of which header validation (``check_header``);
* authentication: one HMAC challenge at connect (once per connection and run, so not per request);
* control: one ``level`` command and one period ``report`` (JSON lines encoded + decoded), per period,
  amortised over the requests of a period at the given rate;
* stage compute: a middle stage of a random-init ViT-B/16 cut into 4 stages (3 blocks), level 0, 1 thread;

and prints the overhead per request and hop as a share of the stage compute (target: < 5 %).

    python bench/bench_hil.py [--repeats 200] [--threads 1] [--rate-hz 10 --period-s 1]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np

from hil.protocol import (
    check_header,
    client_handshake_sock,
    decode_line,
    encode_frame,
    encode_line,
    new_secret,
    read_frame_sock,
    server_handshake_sock,
)

SHAPE = (1, 197, 768)


def _median_s(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def serialisation_s(repeats: int) -> float:
    """Encode a frame and decode it back into a tensor view."""
    import torch

    payload = bytearray(np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32).tobytes())
    header = {"id": 1, "kind": "tensor", "shape": list(SHAPE), "dtype": "float32", "levels": [0, 1], "run": 0}

    def once() -> None:
        bufs = encode_frame(header, payload)
        _ = bytes(bufs[0])
        torch.frombuffer(payload, dtype=torch.float32).reshape(SHAPE)

    return _median_s(once, repeats)


def validation_s(repeats: int) -> float:
    """Checking one activation frame's header (part of every ``read_frame_sock``)."""
    header = {"id": 1, "kind": "tensor", "shape": list(SHAPE), "dtype": "float32", "levels": [0, 1], "run": 0}
    size = int(np.prod(SHAPE)) * 4
    return _median_s(lambda: check_header(header, size), repeats)


def handshake_s(repeats: int) -> float:
    """Connect and pass the HMAC challenge over loopback TCP (once per connection)."""
    key = new_secret()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def acceptor() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                server_handshake_sock(conn, key)

    threading.Thread(target=acceptor, daemon=True).start()

    def once() -> None:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_handshake_sock(c, key)

    try:
        return _median_s(once, repeats)
    finally:
        server.close()


def transport_s(repeats: int) -> float:
    """One frame over authenticated loopback TCP: from the first send to the last byte read by the receiver."""
    payload = np.zeros(SHAPE, dtype=np.float32).tobytes()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    done = threading.Semaphore(0)
    key = new_secret()

    def receiver() -> None:
        conn, _ = server.accept()
        with conn:
            server_handshake_sock(conn, key)
            while read_frame_sock(conn) is not None:
                done.release()

    threading.Thread(target=receiver, daemon=True).start()
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_handshake_sock(client, key)
    header = {"id": 1, "kind": "tensor", "shape": list(SHAPE), "dtype": "float32", "levels": [0]}

    def once() -> None:
        for buf in encode_frame(header, payload):
            client.sendall(buf)
        done.acquire()

    try:
        return _median_s(once, repeats)
    finally:
        client.close()
        server.close()


def control_s(repeats: int) -> float:
    """One level command and one period report, encoded and decoded (both directions)."""
    report = {
        "event": "report",
        "seq": 12,
        "level": 2,
        "queue_len": 3,
        "busy": True,
        "arrivals": 10,
        "served": 9,
        "busy_s": 0.91,
        "nominal_s": 0.88,
        "dropped": 0,
        "switches": 1,
        "dropped_ids": [],
    }

    def once() -> None:
        decode_line(encode_line({"cmd": "level", "level": 2}))
        decode_line(encode_line({"cmd": "report", "seq": 12}))
        decode_line(encode_line(report))

    return _median_s(once, repeats)


def stage_compute_s(repeats: int, threads: int) -> float:
    """A middle stage (3 blocks) of a random-init ViT-B/16 in 4 stages, level 0."""
    import torch

    from models import build_nested, load_model

    torch.set_num_threads(threads)
    m = load_model("ViT-B-16", random_init=True)
    pipe = build_nested(m.visual, [(0, 3), (3, 6), (6, 9), (9, 12)], [0.0, 0.5], order="keep")
    stage = pipe.stage_list[1]
    x = torch.randn(SHAPE)
    with torch.inference_mode():
        return _median_s(lambda: stage(x), repeats, warmup=2)


def main() -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--compute-repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rate-hz", type=float, default=10.0, help="request rate, to amortise the control messages")
    p.add_argument("--period-s", type=float, default=1.0, help="control period")
    args = p.parse_args()
    ser = serialisation_s(args.repeats)
    net = transport_s(args.repeats)
    check = validation_s(args.repeats)
    auth = handshake_s(min(args.repeats, 100))
    ctl_period = control_s(args.repeats)
    ctl = ctl_period / max(args.rate_hz * args.period_s, 1.0)
    compute = stage_compute_s(args.compute_repeats, args.threads)
    total = ser + net + ctl
    print(f"ViT-B/16 activation {SHAPE} fp32 = {int(np.prod(SHAPE)) * 4} B, loopback TCP, {args.threads} thread(s)")
    rows = [
        ("serialisation (encode + decode)", ser),
        ("transport (one hop, loopback, header checked)", net),
        ("  of which header validation", check),
        (f"control (per period / {args.rate_hz * args.period_s:g} requests)", ctl),
        ("overhead per request and hop", total),
        ("stage compute (3 blocks, level 0)", compute),
    ]
    for name, v in rows:
        print(f"  {name:<44} {v * 1e3:9.3f} ms")
    print(f"  overhead / stage compute                     {total / compute * 100:9.2f} %  (target < 5 %)")
    print(f"  authentication at connect (once per run)     {auth * 1e3:9.3f} ms")


if __name__ == "__main__":
    main()
