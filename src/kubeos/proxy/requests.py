"""Agent requests built from the OS and OSInstance specs (pure).

The wire format is the reference's (see :mod:`kubeos.agent.messages`); this module only maps
our CRD fields onto it, in one place, so the proxy and its tests agree on the mapping.
"""

from __future__ import annotations

from kubeos.agent.client import (
    Certs,
    ConfigureRequest,
    KeyInfo,
    Sysconfig,
    UpgradeRequest,
)
from kubeos.api.models import OSSpec, SysConfigs
from kubeos.proxy.snapshot import agent_version


def upgrade_request(spec: OSSpec) -> UpgradeRequest:
    """``prepare_upgrade`` parameters from the OS spec (missing certificates are ``""``).

    ``version`` is the agent's form of ``osversion`` (without the "KubeOS " prefix), which the
    agent checks against the os-release inside the image.
    """
    return UpgradeRequest(
        version=agent_version(spec.osversion),
        image_type=spec.imagetype,
        image_url=spec.imageurl,
        check_sum=spec.checksum,
        container_image=spec.containerimage,
        flag_safe=spec.flagSafe,
        mtls=spec.mtls,
        certs=Certs(ca_cert=spec.cacert, client_cert=spec.clientcert, client_key=spec.clientkey),
    )


def configure_request(configs: SysConfigs | None) -> ConfigureRequest | None:
    """``configure`` parameters, or None when no model has contents (nothing to send).

    Models without contents are left out, as the reference does. Contents keep their order;
    a key given twice keeps its last value (the wire format is a map).
    """
    if configs is None:
        return None
    items = [
        Sysconfig(
            model=config.model,
            config_path=config.configpath,
            contents={
                c.key: KeyInfo(value=c.value, operation=c.operation) for c in config.contents
            },
        )
        for config in configs.configs
        if config.contents
    ]
    return ConfigureRequest(configs=items) if items else None
