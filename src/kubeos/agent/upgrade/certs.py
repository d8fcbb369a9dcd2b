"""Certificate files named by an upgrade request, resolved safely under the certs directory.

Names come from the OS custom resource, i.e. from the cluster: a name such as
``../../etc/shadow`` must never make the agent read (and send to a server) a file outside
``/etc/KubeOS/certs``. A name is a single path component; the resolved file must still be inside
the directory after symlinks are followed.
"""

from __future__ import annotations

from pathlib import Path

from kubeos.agent.errors import CertificateError


def resolve_cert(certs_dir: Path, name: str, field: str) -> Path:
    """The file ``name`` in ``certs_dir``; ``field`` names the request field in errors."""
    if not name or not name.strip():
        raise CertificateError(f"Please provide the certificate: {field} is empty")
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or name.startswith("."):
        raise CertificateError(
            f"{field} {name!r} is not a plain file name inside {certs_dir}"
        )
    path = certs_dir / name
    try:
        real = path.resolve(strict=True)
        base = certs_dir.resolve(strict=True)
    except (OSError, RuntimeError):
        raise CertificateError(f"Certificate does not exist: {name} ({field})") from None
    if not real.is_relative_to(base) or not real.is_file():
        raise CertificateError(f"{field} {name!r} does not name a file inside {certs_dir}")
    return real
