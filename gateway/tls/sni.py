"""The choice of a certificate for a TLS handshake, by the name the client sent (SNI).

A `CertificateSet` is built once from the certificates of every gateway on a port, in configuration order, and
never changed (a reload builds a new one). `select(name)`: a certificate naming `name` exactly, else one whose
wildcard `*.example.com` covers it (a wildcard stands for exactly one label: `a.example.com`, not
`example.com` nor `a.b.example.com`), else the default, the first certificate of the first gateway on the port.
A name served by several certificates goes to the first of them. A client that sends no name gets the default.
"""
from __future__ import annotations

import ssl
from collections.abc import Sequence

from gateway.tls.certificates import LoadedCertificate


class CertificateSet:
    __slots__ = ("certificates", "default", "_exact", "_wildcard")

    def __init__(self, certificates: Sequence[LoadedCertificate]) -> None:
        assert certificates, "an https port has at least one certificate (checked at load time)"
        self.certificates = tuple(certificates)
        self.default = certificates[0].context
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}     # "*.example.com" stored as "example.com"
        for certificate in certificates:
            for name in certificate.names:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], certificate.context)
                else:
                    self._exact.setdefault(name, certificate.context)

    def select(self, name: str | None) -> ssl.SSLContext:
        """The context of the certificate for a server name (as the client sent it; None: none sent)."""
        if name is None:
            return self.default
        name = name.lower().rstrip(".")
        context = self._exact.get(name)
        if context is not None:
            return context
        dot = name.find(".")
        if dot > 0:
            context = self._wildcard.get(name[dot + 1:])
            if context is not None:
                return context
        return self.default
