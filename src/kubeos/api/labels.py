"""Names shared by every component: API group, kinds, labels and annotations.

They are part of the compatibility contract with the reference system, so they live in one
place and are never spelled out elsewhere.
"""

from typing import Final

GROUP: Final = "upgrade.openeuler.org"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

OS_KIND: Final = "OS"
OS_PLURAL: Final = "os"
OSINSTANCE_KIND: Final = "OSInstance"
OSINSTANCE_PLURAL: Final = "osinstances"

# Node labels (reference-compatible).
LABEL_NODE_SELECTOR: Final = f"{GROUP}/node-selector"
LABEL_UPGRADING: Final = f"{GROUP}/upgrading"
LABEL_CONFIGURING: Final = f"{GROUP}/configuring"
LABEL_SERIAL: Final = f"{GROUP}/serial"
LABEL_CONTROL_PLANE: Final = "node-role.kubernetes.io/control-plane"

# OSInstance label naming its node (reference-compatible).
LABEL_OSINSTANCE_NODE: Final = f"{GROUP}/osinstance-node"

# Annotation recording that our proxy cordoned the node, so we never uncordon a node that an
# administrator cordoned for another reason.
ANNOTATION_CORDONED_BY_US: Final = f"{GROUP}/cordoned-by-kubeos"

# Finalizer the operator puts on an OS so that deleting it cleans up what it started.
FINALIZER_OS_CLEANUP: Final = f"{GROUP}/cleanup"

# Pod annotation of static (mirror) pods, skipped by drain.
ANNOTATION_MIRROR_POD: Final = "kubernetes.io/config.mirror"

# Values of OS.spec.nodeselector with a special meaning (reference-compatible).
SELECTOR_ALL: Final = "all-label"
SELECTOR_NONE: Final = "no-label"

# Default namespace for OSInstances (the reference hard-codes it).
DEFAULT_OSINSTANCE_NAMESPACE: Final = "default"
