"""TLS certificates for serving the stand-in hall over HTTPS in tests and the simulator.

A hall on a government network is usually served with a certificate from a
private CA, which the device trusts through ``upload.ca_bundle``:
:func:`make_private_ca` makes such a CA and a server certificate it signed
for ``localhost`` and ``127.0.0.1``. :func:`make_self_signed_cert` makes a
certificate that is its own CA. Both use the ``cryptography`` package (which
the RFC 9421 library already needs).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# cryptography is imported when a certificate is made, not with the hall: the simulator starts faster.


def _names() -> list[Any]:
    """Names every server certificate made here is valid for."""

    return [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def _name(common_name: str) -> x509.Name:

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: str, key: ec.EllipticCurvePrivateKey) -> None:

    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _write_cert(path: str, *certs: x509.Certificate) -> None:

    with open(path, "wb") as f:
        for cert in certs:
            f.write(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, days: int) -> x509.CertificateBuilder:

    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_self_signed_cert(directory: str | os.PathLike[str]) -> tuple[str, str]:
    """Make a self-signed certificate for ``localhost`` and ``127.0.0.1``.

    The certificate is its own CA, so clients verify with ``verify=cert``.

    Returns:
        ``(certfile, keyfile)`` paths inside ``directory``.
    """

    cert_path = os.path.join(directory, "hall-cert.pem")
    key_path = os.path.join(directory, "hall-key.pem")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder("localhost", "localhost", key, 2)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_names()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def make_private_ca(directory: str | os.PathLike[str], name: str = "Hall Test Root CA") -> tuple[str, str, str]:
    """Make a private CA and a server certificate it signed for ``localhost`` and ``127.0.0.1``.

    The device trusts the hall through the CA alone (``upload.ca_bundle``);
    the server certificate is not a CA and not self-signed.

    Returns:
        ``(ca_cert, server_cert, server_key)`` paths inside ``directory``.
    """

    ca_path = os.path.join(directory, "ca-cert.pem")
    cert_path = os.path.join(directory, "server-cert.pem")
    key_path = os.path.join(directory, "server-key.pem")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (_builder(name, name, ca_key, 3)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder("localhost", name, key, 2)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_names()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_cert(ca_path, ca)
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return ca_path, cert_path, key_path
