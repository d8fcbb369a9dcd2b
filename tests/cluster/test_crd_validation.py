"""Our generated CRDs as the real API server enforces them: every sample is accepted and every
invalid object is rejected with the offending field named (the same cases the offline schema
tests in tests/api use, so the two can never drift apart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, Client, codecs
from lightkube.core.resource import NamespacedResource

from .resources import OS, OSInstance

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "config" / "samples").glob("*.yaml"))
KINDS = {"OS": OS, "OSInstance": OSInstance}

try:
    from tests.api.invalid_cases import INVALID_CASES
except ImportError:  # the shared list is not there yet: nothing to check
    INVALID_CASES = []


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [d for d in yaml.safe_load_all(stream) if isinstance(d, dict)]


def test_there_are_samples() -> None:
    assert SAMPLES, "config/samples has no YAML files"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_is_accepted(sync_client: Client, namespace: str, sample: Path) -> None:
    """Every object in every sample, ours or built-in, passes the real API server (dry run).

    Namespaced objects go to the test's namespace, whatever the sample names, so samples
    aimed at ``default`` are checked without touching it.
    """
    documents = _documents(sample)
    assert documents, f"{sample.name} is empty"
    for document in documents:
        obj = codecs.from_dict(document)
        if isinstance(obj, NamespacedResource):
            assert obj.metadata is not None
            obj.metadata.namespace = namespace
            sync_client.create(obj, namespace=namespace, dry_run=True)
        else:
            sync_client.create(obj, dry_run=True)


@pytest.mark.parametrize(
    ("obj", "field"),
    [pytest.param(obj, field, id=description) for description, obj, field in INVALID_CASES],
)
def test_invalid_object_is_rejected_naming_the_field(
    sync_client: Client, namespace: str, obj: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiError) as rejected:
        sync_client.create(KINDS[obj["kind"]].from_dict(obj), namespace=namespace, dry_run=True)
    assert rejected.value.status.code == 422, rejected.value.status.message
    assert field in (rejected.value.status.message or "")
