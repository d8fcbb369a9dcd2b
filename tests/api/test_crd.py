"""The committed CRD YAML is what the models generate, and it is a valid structural schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubeos.api import crd

CRD_DIR = Path(__file__).resolve().parents[2] / "config" / "crd" / "bases"


def test_committed_crds_are_fresh() -> None:
    stale = crd.stale_files(CRD_DIR)
    assert stale == [], f"stale CRD files {stale}: run `make crds` and commit the result"


def test_stale_file_is_detected(tmp_path: Path) -> None:
    assert crd.main(["write", str(tmp_path)]) == 0
    assert crd.main(["check", str(tmp_path)]) == 0
    target = tmp_path / "upgrade.openeuler.org_os.yaml"
    target.write_text(target.read_text().replace("maxLength: 253", "maxLength: 254", 1))
    assert crd.stale_files(tmp_path) == ["upgrade.openeuler.org_os.yaml"]
    assert crd.main(["check", str(tmp_path)]) == 1


def _walk(node: object, path: str = "") -> list[str]:
    """Paths of schema nodes that are not structural (no type and no escape hatch)."""
    bad: list[str] = []
    if isinstance(node, dict):
        if "properties" in node or "items" in node or "description" in node:
            escapes = {"x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"}
            if "type" not in node and not escapes & node.keys():
                bad.append(path)
        for key, sub in node.get("properties", {}).items():
            bad += _walk(sub, f"{path}.{key}")
        if "items" in node:
            bad += _walk(node["items"], f"{path}[]")
    return bad


def test_schemas_are_structural_and_keep_reference_names() -> None:
    for doc in (crd.os_crd(), crd.osinstance_crd()):
        version = doc["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        assert _walk(schema) == []
        assert "$ref" not in yaml.safe_dump(doc)
        assert version["subresources"] == {"status": {}}
    spec = crd.os_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    reference_fields = {
        "osversion",
        "imageurl",
        "maxunavailable",
        "checksum",
        "flagSafe",
        "mtls",
        "imagetype",
        "containerimage",
        "opstype",
        "evictpodforce",
        "cacert",
        "clientcert",
        "clientkey",
        "sysconfigs",
        "upgradeconfigs",
        "nodeselector",
        "timewindow",
        "timeinterval",
        "executionmode",
    }
    assert reference_fields <= spec["properties"].keys()
    assert spec["properties"]["nodeselector"]["default"] == "no-label"
    assert spec["properties"]["executionmode"]["default"] == "parallel"
    assert spec["properties"]["timeinterval"]["default"] == 15


def test_printer_columns_include_reference_and_progress() -> None:
    os_cols = [c["name"] for c in crd.os_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert os_cols[:3] == ["OS VERSION", "SYSCONFIG VERSION", "UPGRADECONFIG VERSION"]
    assert {"UPDATED", "IN PROGRESS", "FAILED"} <= set(os_cols)
    osi = crd.osinstance_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in osi][:5] == [
        "NODESTATUS",
        "SYSCONFIG-VERSION-CURRENT",
        "SYSCONFIG-VERSION-DESIRED",
        "UPGRADECONFIG-VERSION-CURRENT",
        "UPGRADECONFIG-VERSION-DESIRED",
    ]
