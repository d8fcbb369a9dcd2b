"""Models read the reference's JSON and write it back unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeos.api.models import OS, OSInstance, OSSpec

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "config" / "samples").glob("*.yaml"))


def _os_docs() -> list[dict[str, Any]]:
    docs = []
    for path in SAMPLES:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "OS"]
    return docs


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _subset(v, big[k]) for k, v in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(small) == len(big)
            and all(_subset(a, b) for a, b in zip(small, big, strict=True))
        )
    return bool(small == big)


@pytest.mark.parametrize("doc", _os_docs(), ids=lambda d: d["metadata"]["name"])
def test_os_round_trip_keeps_every_field(doc: dict[str, Any]) -> None:
    model = OS.model_validate(doc)
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert _subset(doc, dumped), "a field of the sample was lost or changed"
    assert OS.model_validate(dumped) == model


def test_flagsafe_keeps_its_camel_case_name() -> None:
    spec = OSSpec.model_validate(
        {"osversion": "KubeOS 2", "opstype": "upgrade", "maxunavailable": 1, "flagSafe": True}
    )
    assert spec.flagSafe is True
    assert "flagSafe" in spec.model_dump(by_alias=True)


def test_defaults_match_the_reference() -> None:
    spec = OSSpec.model_validate({"osversion": "v", "opstype": "config", "maxunavailable": 1})
    assert spec.nodeselector == "no-label"
    assert spec.executionmode == "parallel"
    assert spec.timeinterval == 15
    assert spec.imagetype == ""


def test_osinstance_round_trip_with_status() -> None:
    doc = {
        "apiVersion": "upgrade.openeuler.org/v1alpha1",
        "kind": "OSInstance",
        "metadata": {
            "name": "node-1",
            "namespace": "default",
            "labels": {"upgrade.openeuler.org/osinstance-node": "node-1"},
        },
        "spec": {
            "nodestatus": "upgrade",
            "namespacedname": {"name": "os-sample", "namespace": "default"},
            "sysconfigs": {
                "version": "v2",
                "configs": [{"model": "grub.cmdline.next", "contents": [{"key": "quiet"}]}],
            },
        },
        "status": {
            "sysconfigs": {"version": "v1", "configs": []},
            "phase": "Rebooting",
            "currentVersion": "KubeOS 1.0.1",
            "bootSlot": "A",
            "lastError": "",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Booted",
                    "lastTransitionTime": "2026-11-26T10:00:00Z",
                }
            ],
        },
    }
    model = OSInstance.model_validate(doc)
    assert model.spec.namespacedname is not None
    assert model.spec.namespacedname.name == "os-sample"
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["status"]["conditions"][0]["lastTransitionTime"].startswith("2026-11-26T10:00")
    assert OSInstance.model_validate(dumped) == model


def test_setting_values_keep_their_json_type() -> None:
    spec = OSSpec.model_validate(
        {
            "osversion": "v",
            "opstype": "config",
            "maxunavailable": 1,
            "sysconfigs": {
                "version": "1",
                "configs": [
                    {
                        "model": "kubernetes.kubelet",
                        "contents": [
                            {"key": "a", "value": "0"},
                            {"key": "b", "value": 0},
                            {"key": "c", "value": [1, 2]},
                            {"key": "d", "value": None},
                            {"key": "e", "value": 2.5},
                            {"key": "f", "value": True},
                        ],
                    }
                ],
            },
        }
    )
    assert spec.sysconfigs is not None
    values = [c.value for c in spec.sysconfigs.configs[0].contents]
    assert values == ["0", 0, [1, 2], None, 2.5, True]
    assert type(values[1]) is int
