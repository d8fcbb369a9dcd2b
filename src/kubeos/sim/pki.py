"""A throwaway PKI for one local control plane: a CA, serving and client certificates, SA keys.

kube-apiserver refuses to run without TLS serving certificates and a service-account key pair,
and we want clients to authenticate with a real client certificate (as an admin would) rather
than turning authentication off, so RBAC and the authenticated user behave as in a cluster.
Everything lives for the duration of one control plane, so we pick fast key types (ECDSA P-256)
and a validity of a few days; nothing here is meant to protect anything.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)
# Clock skew between the certificate's creation and the processes checking it is zero here,
# but backdating a little keeps "not yet valid" errors away if the clock steps.
_BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class CertPair:
    """PEM files of a certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ControlPlanePki:
    """Every file the control-plane processes and the admin kubeconfig need."""

    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    service_account_key: Path
    service_account_pub: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
             ) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
    )


def _leaf(
    directory: Path,
    stem: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None = None,
) -> CertPair:
    key = _key()
    builder = (
        _builder(subject, ca_name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = CertPair(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def create_pki(directory: Path, service_ip: str = "10.0.0.1") -> ControlPlanePki:
    """Write a fresh CA, apiserver serving cert, admin client cert and SA key pair to *directory*.

    The serving certificate names loopback and the in-cluster service names (plus the first
    service IP) because clients inside the simulated cluster may address it either way.
    The admin certificate is in ``system:masters`` so it bypasses RBAC like kubeadm's admin.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("kubeos-sim-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca = CertPair(cert=directory / "ca.crt", key=directory / "ca.key")
    ca.cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, ca.key)

    san = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address(service_ip)),
        ]
    )
    apiserver = _leaf(directory, "apiserver", ca_key, ca_name, _name("kube-apiserver"),
                      ExtendedKeyUsageOID.SERVER_AUTH, san)
    admin = _leaf(directory, "admin", ca_key, ca_name, _name("kubeos-admin", "system:masters"),
                  ExtendedKeyUsageOID.CLIENT_AUTH)

    sa_key = _key()
    sa_key_path = directory / "sa.key"
    sa_pub_path = directory / "sa.pub"
    _write_key(sa_key, sa_key_path)
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ControlPlanePki(
        ca=ca, apiserver=apiserver, admin=admin,
        service_account_key=sa_key_path, service_account_pub=sa_pub_path,
    )


def node_client_cert(directory: Path, ca: CertPair, node: str) -> CertPair:
    """A kubelet's client certificate for *node* (``system:node:<node>`` in ``system:nodes``),
    signed by the control plane's CA: the identity the Node authorizer and NodeRestriction
    scope to that node, as kubeadm's kubelet client certificates are."""
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_name = x509.load_pem_x509_certificate(ca.cert.read_bytes()).subject
    directory.mkdir(parents=True, exist_ok=True)
    return _leaf(directory, f"node-{node}", ca_key, ca_name,
                 _name(f"system:node:{node}", "system:nodes"), ExtendedKeyUsageOID.CLIENT_AUTH)
