"""The TLS side of one https port: the SSLContext its listener was opened with, and the certificates served now.

The listener gets ONE context for its whole life. Its SNI callback, called in every handshake (with None when
the client sends no name), points the connection at the context of the certificate chosen from the CURRENT
`CertificateSet` (gateway.tls.sni). A reload builds a new set and swaps one reference: the listener is never
restarted, connections already open keep their session, new handshakes get the new certificate.

Certificate files are read again on every configuration apply (SIGHUP, an admin API write) and whenever
`poll()` (the runtime calls it every POLL_INTERVAL seconds, in every serving process) sees a file's mtime, size
or inode change. A pair that does not load (unreadable, malformed, half written, key not matching) is refused
with one warning naming the file and why, and the certificate loaded before stays in service; the next change
of either file is tried again. At the first load (a port not served yet) there is nothing to keep, so the error
is raised (the configuration is not applied).
"""
from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config.model import CertificateFiles, Tls
from gateway.tls.certificates import CertificateError, FileStamp, LoadedCertificate, load_pair, stamp
from gateway.tls.contexts import server_context
from gateway.tls.sni import CertificateSet

log = logging.getLogger("vamp.tls")

POLL_INTERVAL = 2.0     # seconds between two looks at the certificate files


@dataclass(slots=True)
class _Entry:
    gateway: str
    files: CertificateFiles
    loaded: LoadedCertificate
    refused: tuple[FileStamp | None, FileStamp | None] | None = None   # the stamps of files that did not load


class TlsListener:
    """The TLS state of one https port (its gateways' `tls` blocks, in configuration order)."""

    def __init__(self, port: int, tls: Tls) -> None:
        self.port = port
        self.client_ca = tls.client_ca
        self.client_certificate = tls.client_certificate
        self.context = server_context(tls.client_ca, tls.client_certificate)
        self.context.sni_callback = self._choose
        self.entries: list[_Entry] = []
        self.certificates: CertificateSet | None = None
        self.reload_errors: dict[str, int] = {}     # by gateway

    @property
    def verification(self) -> tuple[str | None, str]:
        """What the listener's own context fixes: a change needs a new listener (gateway.runtime.runtime)."""
        return self.client_ca, self.client_certificate

    def _choose(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        certificates = self.certificates
        if certificates is not None:
            ssl_object.context = certificates.select(server_name)

    def _load(self, files: CertificateFiles) -> LoadedCertificate:
        return load_pair(files.cert, files.key, lambda: server_context(self.client_ca, self.client_certificate))

    def configure(self, gateways: Sequence[tuple[str, Tls]]) -> None:
        """Serve the certificates of `gateways` (name, tls), every file read now. A file that does not load
        keeps the certificate loaded before from the same files, if any; else CertificateError."""
        previous = {(e.gateway, e.files): e.loaded for e in self.entries}
        entries: list[_Entry] = []
        for name, tls in gateways:
            for index, files in enumerate(tls.certificates):
                try:
                    entries.append(_Entry(name, files, self._load(files)))
                except CertificateError as exc:
                    old = previous.get((name, files))
                    if old is None:
                        raise CertificateError(exc.path, f"gateway {name!r}, tls.certificates[{index}]: "
                                                         f"{exc.reason}") from None
                    self._refused(name, exc)
                    entries.append(_Entry(name, files, old, (stamp(files.cert), stamp(files.key))))
        self.entries = entries
        self.certificates = CertificateSet([entry.loaded for entry in entries])

    def poll(self) -> None:
        """Reload the certificates whose files changed since they were read (or last refused)."""
        changed = False
        for entry in self.entries:
            stamps = (stamp(entry.files.cert), stamp(entry.files.key))
            if stamps == entry.loaded.stamps or stamps == entry.refused:
                continue
            try:
                entry.loaded = self._load(entry.files)
                entry.refused = None
                changed = True
                log.info("gateway %s: reloaded the certificate %s (%s)", entry.gateway, entry.files.cert,
                         ", ".join(entry.loaded.names) or "no names")
            except CertificateError as exc:
                entry.refused = stamps
                self._refused(entry.gateway, exc)
        if changed:
            self.certificates = CertificateSet([entry.loaded for entry in self.entries])

    def _refused(self, gateway: str, exc: CertificateError) -> None:
        self.reload_errors[gateway] = self.reload_errors.get(gateway, 0) + 1
        log.warning("gateway %s: certificate not reloaded, still serving the previous one: %s", gateway, exc)

    def expiry(self) -> dict[str, dict[str, float]]:
        """{gateway: {certificate (its first name): expiry in seconds since the epoch}}."""
        by_gateway: dict[str, dict[str, float]] = {}
        for entry in self.entries:
            certificates = by_gateway.setdefault(entry.gateway, {})
            label = entry.loaded.label
            certificates[label] = min(certificates.get(label, entry.loaded.not_after), entry.loaded.not_after)
        return by_gateway
