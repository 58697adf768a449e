"""Model loading never touches the network: the hub client is offline, hub ids come from the local cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytestmark = pytest.mark.torch

PROBE = """
import json, socket
calls = []
def refuse(*args, **kwargs):
    calls.append(repr(args[1:] if len(args) > 1 else args)[:80])
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.getaddrinfo = refuse
from edgeprune.errors import ModelError
from models import load_model
import huggingface_hub
try:
    load_model("hf-hub:edgeprune-test/not-cached")
    err = None
except ModelError as exc:
    err = str(exc)
print(json.dumps({"err": err, "calls": calls, "offline": huggingface_hub.is_offline_mode()}))
"""


def test_a_hub_model_missing_from_the_cache_fails_at_once_without_any_connection(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["calls"] == []  # no DNS lookup, no TCP connection (the old reachability probe made one)
    assert doc["offline"] is True
    assert doc["err"].startswith("--model = hf-hub:edgeprune-test/not-cached: weights not in the local Hugging")
    assert "huggingface-cli download edgeprune-test/not-cached" in doc["err"]
