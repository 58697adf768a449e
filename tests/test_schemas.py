"""The published JSON Schemas: up to date with the dataclasses, and every shipped file validates against them.

The schemas are derived from the same declarations the loaders validate with, so a file the schema refuses
the loader refuses too (checked on a few mutations of shipped files), with the one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomli_w

from edgeprune.cli.schemas import FILE_KINDS, SCHEMA_DIR, render, schema_of
from edgeprune.config import Ctx, build, schema_model, spec_field
from edgeprune.errors import ConfigError, ProfileError
from edgeprune.profile import profile_from_dict
from edgeprune.scenario import load_scenario
from hil.cluster import load_cluster

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted(p for p in (ROOT / "scenarios").rglob("*.toml") if "sweep" in p.name)
SCENARIOS = sorted(p for p in (ROOT / "scenarios").rglob("*.toml") if p not in SWEEPS)
PROFILES = sorted((ROOT / "models" / "profiles").glob("*.json"))
CLUSTERS = [ROOT / "examples" / "pis.toml"]


def _read(path: Path) -> Any:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("kind", list(FILE_KINDS))
def test_published_schema_is_up_to_date(kind: str) -> None:
    published = SCHEMA_DIR / f"{kind}.schema.json"
    assert published.is_file(), "run: python -m edgeprune.cli.schemas"
    assert published.read_text(encoding="utf-8") == render(kind), "stale: run python -m edgeprune.cli.schemas"


def test_every_kind_of_shipped_file_is_found() -> None:
    assert SCENARIOS and SWEEPS and PROFILES and CLUSTERS


@pytest.mark.parametrize(
    ("kind", "path"),
    [("scenario", p) for p in SCENARIOS]
    + [("sweep", p) for p in SWEEPS]
    + [("profile", p) for p in PROFILES]
    + [("cluster", p) for p in CLUSTERS],
    ids=lambda v: v if isinstance(v, str) else str(v.relative_to(ROOT)),
)
def test_shipped_file_validates_against_its_schema(kind: str, path: Path) -> None:
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _validator(kind).iter_errors(_read(path))]
    assert errors == []


BURSTY = ROOT / "scenarios" / "bursty.toml"


def _rename(table: dict[str, Any], old: str, new: str) -> None:
    table[new] = table.pop(old)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: _rename(d, "slo_s", "slo_ms"), r"slo_ms = 2.0: unknown key \(did you mean 'slo_s'\?\)"),
        (
            lambda d: d["arrivals"].update(rate_hz=2.0),
            r"arrivals.rate_hz = 2.0: unknown key \(did you mean 'rates_hz'\?\)",
        ),
        (lambda d: d.update(slo_s=-2.0), r"slo_s = -2.0: must be > 0"),
        (lambda d: d.update(seed="7"), r"seed = '7': expected an integer"),
        (lambda d: d["policy"][0].update(kind="statc"), r"policy\[0\].kind = 'statc': unknown policy kind"),
        (lambda d: d["device"][0].update(speed=True), r"device\[0\].speed = true: expected a number"),
        (lambda d: d["queue"].update(drop="tial"), r"queue.drop = 'tial': not one of the valid choices"),
    ],
)
def test_schema_and_loader_refuse_the_same_scenario(tmp_path: Path, mutate: Any, message: str) -> None:
    doc = _read(BURSTY)
    doc["profile"] = str((BURSTY.parent / doc["profile"]).resolve())
    doc.setdefault("queue", {})
    assert _validator("scenario").is_valid(doc)
    mutate(doc)
    assert not _validator("scenario").is_valid(doc)
    path = tmp_path / "bursty.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_schema_and_loader_refuse_a_profile_missing_a_per_stage_field() -> None:
    path = next(p for p in PROFILES if "accuracy" in _read(p))
    doc = _read(path)
    del doc["accuracy"]["per_stage"][0]["accuracy"]
    assert not _validator("profile").is_valid(doc)
    with pytest.raises(ProfileError, match=r"x.json: accuracy.per_stage\[0\].accuracy: required key is missing"):
        profile_from_dict(doc, source="x.json")


def test_schema_and_loader_refuse_a_cluster_typo(tmp_path: Path) -> None:
    doc = _read(CLUSTERS[0])
    doc["host"][0]["adress"] = doc["host"][0].pop("address")
    assert not _validator("cluster").is_valid(doc)
    path = tmp_path / "pis.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"host\[0\].adress = .*unknown key \(did you mean 'address'\?\)"):
        load_cluster(path)


def test_schema_documents_nested_tables_and_kinds() -> None:
    scenario = schema_of("scenario")
    assert scenario["additionalProperties"] is False
    kinds = {d["properties"]["kind"]["const"] for n, d in scenario["$defs"].items() if n.endswith("ArrivalsTable")}
    assert kinds == {"poisson", "mmpp", "camera-trap", "schedule", "replay"}
    assert (
        scenario["$defs"]["EnvironmentEvent"]["properties"]["slowdowns"]["anyOf"][0]["items"]["exclusiveMinimum"] == 0
    )


@dataclasses.dataclass(frozen=True)
class _Thermal:
    """A nested table declared the way a new module would (no registration, no extra code)."""

    ambient_c: float = spec_field(default=25.0, ge=-40, le=85, doc="ambient temperature")
    limits_c: tuple[float, ...] = spec_field(default=(80.0,), gt=0, doc="throttle points")

    def check(self) -> list[tuple[str, object, str]]:
        if any(t <= self.ambient_c for t in self.limits_c):
            return [("limits_c", list(self.limits_c), f"must be above ambient_c ({self.ambient_c})")]
        return []


@dataclasses.dataclass(frozen=True)
class _Node:
    name: str = spec_field(doc="node name")
    thermal: _Thermal | None = spec_field(default=None, doc="optional physics table")
    tenant: tuple[_Thermal, ...] = spec_field(default=(), doc="a list of tables")


def test_a_new_nested_dataclass_is_validated_and_in_the_schema_with_no_extra_code() -> None:
    node = build(_Node, {"name": "pi1", "thermal": {"ambient_c": 30}}, Ctx("s.toml", "device[0]"))
    assert node.thermal == _Thermal(ambient_c=30.0) and isinstance(node.thermal.ambient_c, float)
    cases = [
        (
            {"name": "a", "thermal": {"ambient": 30}},
            r"device\[0\].thermal.ambient = 30: unknown key \(did you mean 'ambient_c'\?\)",
        ),
        ({"name": "a", "thermal": {"ambient_c": 90}}, r"device\[0\].thermal.ambient_c = 90.0: must be <= 85"),
        (
            {"name": "a", "tenant": [{}, {"limits_c": [-1.0]}]},
            r"device\[0\].tenant\[1\].limits_c\[0\] = -1.0: must be > 0",
        ),
        ({"name": "a", "tenant": [{"limits_c": [20]}]}, r"device\[0\].tenant\[0\].limits_c = \[20.0\]: must be above"),
        ({"name": "a", "thermal": 3}, r"device\[0\].thermal = 3: expected a table"),
    ]
    for table, message in cases:
        with pytest.raises(ConfigError, match=message):
            build(_Node, table, Ctx("s.toml", "device[0]"))
    schema = schema_model(_Node).model_json_schema()
    thermal = schema["$defs"]["_Thermal"]
    assert thermal["additionalProperties"] is False
    assert thermal["properties"]["ambient_c"] == {
        "default": 25.0,
        "description": "ambient temperature",
        "maximum": 85,
        "minimum": -40,
        "title": "Ambient C",
        "type": "number",
    }
    assert thermal["properties"]["limits_c"]["items"] == {"exclusiveMinimum": 0, "type": "number"}
