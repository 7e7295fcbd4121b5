"""The SSL contexts the gateway makes: servers (its https listeners) and clients (its https targets).

Servers speak TLS 1.2 and 1.3 only, with Mozilla's "intermediate" cipher list for TLS 1.2 (TLS 1.3's suites
are OpenSSL's, all of them modern), no TLS compression, ALPN `http/1.1`; session tickets stay on. Client
certificate verification (mTLS), when configured, is set on every context of a listener (the one the handshake
starts with and each certificate's, which SNI switches to): OpenSSL takes the verification store from the
context a connection ends up with.

Clients (`upstream_context`) verify the target's certificate against the system CAs or a CA file, check its
name unless verification is off, and offer ALPN `http/1.1`.
"""
from __future__ import annotations

import ssl

from gateway.config.model import UpstreamTls

# Mozilla's "intermediate" configuration (ssl-config.mozilla.org, version 5.7) for TLS 1.2.
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))
ALPN = ["http/1.1"]


def server_context(client_ca: str | None = None, client_certificate: str = "required") -> ssl.SSLContext:
    """A server context with the gateway's protocol settings and, with `client_ca` (PEM text of CA
    certificates, gateway.tls.certificates.ClientCa), client verification
    (`client_certificate` "required": a client without a certificate signed by it is refused; "optional": one
    without a certificate is let in, one with a bad certificate is refused). No certificate of its own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(ALPN)
    if client_ca is not None:
        context.load_verify_locations(cadata=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if client_certificate == "required" else ssl.CERT_OPTIONAL
    return context


def upstream_context(settings: UpstreamTls | None) -> ssl.SSLContext:
    """A client context for a gateway's https targets (`upstream_tls`, None: the defaults)."""
    settings = settings if settings is not None else UpstreamTls()
    context = ssl.create_default_context(cafile=settings.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
