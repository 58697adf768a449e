"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from simfixtures import write_case


@pytest.fixture
def case(tmp_path: Path) -> Path:
    """A valid scenario with its synthetic profile, in a temporary folder."""
    return write_case(tmp_path / "case")
