"""lightkube classes for our custom resources, for tests that talk to the real API server."""

from __future__ import annotations

from lightkube.generic_resource import create_namespaced_resource

GROUP = "upgrade.openeuler.org"
VERSION = "v1alpha1"

OS = create_namespaced_resource(GROUP, VERSION, "OS", "os")
OSInstance = create_namespaced_resource(GROUP, VERSION, "OSInstance", "osinstances")
