"""Generate the CustomResourceDefinitions of `OS` and `OSInstance` from the models.

`python -m kubeos.api.crd write config/crd/bases` writes them; `... check config/crd/bases`
exits non-zero when the committed YAML differs from what the models produce (the test suite
runs the same comparison, so a stale CRD fails CI).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubeos.api import labels
from kubeos.api.models import OS, OSInstance
from kubeos.api.schema import JsonDict, structural_schema


class _NoAliasDumper(yaml.SafeDumper):
    """Write repeated sub-schemas in full: CRD readers (and people) do not expect YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_HEADER = "# Generated from kubeos.api.models by `make crds`. Do not edit by hand.\n"


def _column(name: str, path: str, kind: str = "string", priority: int = 0) -> JsonDict:
    col: JsonDict = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


_OS_COLUMNS = [
    # The reference's columns, same names.
    _column("OS VERSION", ".spec.osversion"),
    _column("SYSCONFIG VERSION", ".spec.sysconfigs.version"),
    _column("UPGRADECONFIG VERSION", ".spec.upgradeconfigs.version"),
    # Progress from status.
    _column("OPSTYPE", ".spec.opstype"),
    _column("NODES", ".status.nodes", "integer"),
    _column("UPDATED", ".status.updated", "integer"),
    _column("IN PROGRESS", ".status.inProgress", "integer"),
    _column("FAILED", ".status.failed", "integer"),
    _column("PAUSED", ".spec.paused", "boolean", priority=1),
    _column("AGE", ".metadata.creationTimestamp", "date"),
]

_OSI_COLUMNS = [
    # The reference's columns, same names.
    _column("NODESTATUS", ".spec.nodestatus"),
    _column("SYSCONFIG-VERSION-CURRENT", ".status.sysconfigs.version"),
    _column("SYSCONFIG-VERSION-DESIRED", ".spec.sysconfigs.version"),
    _column("UPGRADECONFIG-VERSION-CURRENT", ".status.upgradeconfigs.version"),
    _column("UPGRADECONFIG-VERSION-DESIRED", ".spec.upgradeconfigs.version"),
    # Node state from status.
    _column("PHASE", ".status.phase"),
    _column("VERSION", ".status.currentVersion"),
    _column("SLOT", ".status.bootSlot"),
    _column("ERROR", ".status.lastError", priority=1),
]


def _resource_schema(model: type[BaseModel]) -> JsonDict:
    """Schema of a whole object: apiVersion/kind/metadata are the API server's business."""
    schema = structural_schema(model)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    schema["required"] = [r for r in schema.get("required", []) if r in {"spec"}]
    return schema


def _crd(
    model: type[BaseModel], kind: str, plural: str, singular: str, columns: list[JsonDict]
) -> JsonDict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{labels.GROUP}"},
        "spec": {
            "group": labels.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": labels.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _resource_schema(model)},
                }
            ],
        },
    }


def os_crd() -> JsonDict:
    """The CRD of the cluster-intent resource `OS`."""
    return _crd(OS, labels.OS_KIND, labels.OS_PLURAL, "os", _OS_COLUMNS)


def osinstance_crd() -> JsonDict:
    """The CRD of the per-node resource `OSInstance`."""
    return _crd(
        OSInstance, labels.OSINSTANCE_KIND, labels.OSINSTANCE_PLURAL, "osinstance", _OSI_COLUMNS
    )


def rendered() -> dict[str, str]:
    """File name -> YAML text of every CRD, exactly as committed."""
    out = {}
    for crd in (os_crd(), osinstance_crd()):
        name = f"{labels.GROUP}_{crd['spec']['names']['plural']}.yaml"
        out[name] = _HEADER + yaml.dump(crd, Dumper=_NoAliasDumper, sort_keys=False, width=100)
    return out


def stale_files(directory: Path) -> list[str]:
    """Names of CRD files in `directory` that are missing or differ from the models."""
    stale = []
    for name, text in rendered().items():
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in {"write", "check"}:
        print("usage: python -m kubeos.api.crd write|check DIR", file=sys.stderr)
        return 2
    directory = Path(args[1])
    if args[0] == "write":
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in rendered().items():
            (directory / name).write_text(text)
            print(f"wrote {directory / name}")
        return 0
    stale = stale_files(directory)
    for name in stale:
        print(f"stale: {directory / name} (run `make crds`)", file=sys.stderr)
    return 1 if stale else 0


def _main() -> Any:
    raise SystemExit(main())


if __name__ == "__main__":
    _main()
