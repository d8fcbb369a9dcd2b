"""Every sample is accepted and every invalid object is rejected naming its field (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.api import offline
from tests.api.invalid_cases import INVALID_CASES, VALID_UPGRADE

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "config" / "samples").glob("*.yaml"))
OS_SAMPLES = [
    (path, doc)
    for path in SAMPLES
    for doc in yaml.safe_load_all(path.read_text())
    if doc and doc.get("kind") == "OS"
]


def test_there_are_samples_for_every_reference_operation() -> None:
    ops = {(doc["spec"]["opstype"], doc["spec"].get("imagetype", "")) for _, doc in OS_SAMPLES}
    assert {
        ("upgrade", "disk"),
        ("upgrade", "docker"),
        ("upgrade", "containerd"),
        ("config", ""),
        ("rollback", ""),
    } <= ops


@pytest.mark.parametrize(("path", "doc"), OS_SAMPLES, ids=[p.name for p, _ in OS_SAMPLES])
def test_sample_is_accepted(path: Path, doc: dict[str, object]) -> None:
    assert offline.validate(doc) == []


def test_valid_base_case_is_accepted() -> None:
    assert offline.validate(VALID_UPGRADE) == []


@pytest.mark.parametrize(
    ("description", "obj", "field"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_object_is_rejected_naming_the_field(
    description: str, obj: dict[str, object], field: str
) -> None:
    errors = offline.validate(obj)
    assert errors, f"{description}: accepted but should be rejected"
    assert offline.names_field(errors, field), f"{description}: {errors} do not name {field}"


def test_imagetype_may_be_empty_for_config_and_rollback() -> None:
    base = {k: v for k, v in VALID_UPGRADE.items() if k != "spec"}
    rollback = {
        **base,
        "spec": {
            "opstype": "rollback",
            "osversion": "KubeOS 1",
            "imagetype": "",
            "maxunavailable": 1,
        },
    }
    config = {
        **base,
        "spec": {
            "opstype": "config",
            "osversion": "KubeOS 1",
            "imagetype": "",
            "maxunavailable": "50%",
            "sysconfigs": {"version": "v1"},
        },
    }
    assert offline.validate(rollback) == []
    assert offline.validate(config) == []


def test_http_is_accepted_with_flagsafe() -> None:
    obj = {
        **VALID_UPGRADE,
        "spec": {
            **VALID_UPGRADE["spec"],
            "flagSafe": True,
            "imageurl": "http://10.0.0.1/kubeos.tar",
        },
    }
    assert offline.validate(obj) == []
