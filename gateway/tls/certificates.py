"""Certificates as the gateway reads them: a PEM chain and its private key, checked to belong together.

`load_pair(cert, key)` reads both files (a chain is allowed: the first certificate is the leaf), checks that the
key is the leaf's, and returns a `LoadedCertificate` with the names the leaf serves (its DNS subject alternative
names, or its common name when it has no SAN extension; lower case; wildcards kept as `*.example.com`), its
expiry, and a server SSLContext already holding it. `load_client_ca(path)` reads a PEM file of the CAs that sign
client certificates (mTLS) into a `ClientCa`, its text checked by OpenSSL. Anything wrong raises
`CertificateError` with a one-line reason naming the file at fault.
"""
from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.tls.contexts import server_context


class CertificateError(ValueError):
    """A certificate or key file that cannot be served; `path` is the file at fault."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What changes when a file is replaced or rewritten (polled to notice a new certificate)."""
    mtime_ns: int
    size: int
    inode: int


def stamp(path: str) -> FileStamp | None:
    """The file's stamp now; None when it cannot be stat'ed (missing for a moment while it is replaced)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    cert_path: str
    key_path: str
    names: tuple[str, ...]        # DNS names (SANs, else the CN), lower case; may be empty (served as default)
    not_after: float              # expiry, seconds since the epoch
    context: ssl.SSLContext       # a server context serving this certificate (gateway.tls.contexts)
    stamps: tuple[FileStamp | None, FileStamp | None]   # (cert, key) when they were read

    @property
    def label(self) -> str:
        """How metrics name it: its first name, else the certificate file's path."""
        return self.names[0] if self.names else self.cert_path


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CertificateError(path, f"cannot read: {(exc.strerror or str(exc)).lower()}") from None


def read_leaf(cert_path: str) -> x509.Certificate:
    """The first certificate of a PEM file (the leaf of a chain)."""
    data = _read(cert_path)
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(cert_path, "not a PEM certificate") from None
    return chain[0]


def names_of(leaf: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate serves: its SANs, or its CN when it has no SAN extension."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        common = [attribute.value for attribute in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return tuple(str(name).lower().rstrip(".") for name in common[:1])
    names: list[str] = []
    for name in san.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class ClientCa:
    """The CA certificates that sign client certificates, as read from `path` (its stamp then)."""
    path: str
    pem: str
    stamp: FileStamp | None


def load_client_ca(path: str) -> ClientCa:
    """Read and check a PEM file of CA certificates (text outside the certificates is ignored, as by OpenSSL)."""
    file_stamp = stamp(path)
    data = _read(path)
    try:
        pem = data.decode("ascii")
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=pem)
    except (UnicodeDecodeError, ValueError, ssl.SSLError):
        raise CertificateError(path, "not a PEM file of CA certificates") from None
    return ClientCa(path, pem, file_stamp)


def load_pair(cert_path: str, key_path: str,
              make_context: Callable[[], ssl.SSLContext] = server_context) -> LoadedCertificate:
    """Read, check and load a certificate (chain) and its key into a context of `make_context`; CertificateError
    naming the file at fault."""
    stamps = (stamp(cert_path), stamp(key_path))
    leaf = read_leaf(cert_path)
    key_data = _read(key_path)
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        reason = "an encrypted key (a key without passphrase is needed)" if isinstance(exc, TypeError) \
            else "not a PEM private key"
        raise CertificateError(key_path, reason) from None
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    leaf_public = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    if public != leaf_public:
        raise CertificateError(key_path, f"the key does not match the certificate in {cert_path}")
    context = make_context()
    try:
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(cert_path, f"OpenSSL refuses it: {exc}") from None
    return LoadedCertificate(cert_path, key_path, names_of(leaf), leaf.not_valid_after_utc.timestamp(), context,
                             stamps)
