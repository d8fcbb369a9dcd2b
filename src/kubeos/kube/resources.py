"""lightkube resource classes for our custom resources.

Generic resources (plain dicts underneath) rather than generated classes: the schema lives in
``kubeos.api.models`` and callers validate into those pydantic models where they need types,
so there is one source of truth for field names. ``.Status`` is the status subresource.
"""

from __future__ import annotations

from typing import Any

from lightkube.generic_resource import create_namespaced_resource

from kubeos.api import labels

OSResource: Any = create_namespaced_resource(
    labels.GROUP, labels.VERSION, labels.OS_KIND, labels.OS_PLURAL
)
OSInstanceResource: Any = create_namespaced_resource(
    labels.GROUP, labels.VERSION, labels.OSINSTANCE_KIND, labels.OSINSTANCE_PLURAL
)
