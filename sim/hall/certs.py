"""A self-signed TLS certificate, so tests and the simulator can serve the hall over HTTPS."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = localhost
[ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_self_signed_cert(directory: str | os.PathLike[str]) -> tuple[str, str]:
    """Make a self-signed certificate for ``localhost`` and ``127.0.0.1``.

    Uses the ``openssl`` command if present, else the ``cryptography``
    package. The certificate is its own CA, so clients verify with
    ``verify=cert``.

    Returns:
        ``(certfile, keyfile)`` paths inside ``directory``.

    Raises:
        RuntimeError: neither tool is available, or openssl failed.
    """
    cert = os.path.join(directory, "hall-cert.pem")
    key = os.path.join(directory, "hall-key.pem")
    openssl = shutil.which("openssl")
    if openssl:
        config = os.path.join(directory, "hall-openssl.cnf")
        with open(config, "w", encoding="ascii") as f:
            f.write(_OPENSSL_CONFIG)
        result = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-keyout", key, "-out", cert, "-config", config],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"openssl could not make a certificate: {result.stderr.strip()}")
        os.chmod(key, 0o600)
        return cert, key
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise RuntimeError(
            "making a test certificate needs the openssl command or the cryptography package"
        ) from None
    import ipaddress

    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .sign(private_key, hashes.SHA256())
    )
    with open(key, "wb") as f:
        f.write(private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    os.chmod(key, 0o600)
    with open(cert, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key
