"""The TLS side of one https port: the SSLContext its listener was opened with, and the certificates served now.

The listener gets ONE context for its whole life. Its SNI callback, called in every handshake (with None when
the client sends no name), points the connection at the context of the certificate chosen from the CURRENT
`CertificateSet` (gateway.tls.sni). A reload builds a new set and swaps one reference: the listener is never
restarted, connections already open keep their session, new handshakes get the new certificate.

Certificate files, and the client CA file (mTLS), are read again on every configuration apply (SIGHUP, an admin
API write) and whenever `poll()` (the runtime calls it every POLL_INTERVAL seconds, in every serving process) sees
a file's mtime, size or inode change. A file that does not load (unreadable, malformed, half written, key not
matching) is refused with one warning naming the file and why, and what was loaded before stays in service; the
next change of the file is tried again. At the first load (a port not served yet) there is nothing to keep, so
the error is raised (the configuration is not applied).

Client verification takes its CAs from the context a handshake ends up with, the chosen certificate's: a new
client CA is loaded into a new context for every certificate (from its files, read again), swapped in as one
`CertificateSet`. A certificate whose files do not load at that moment keeps its context, and so the previous
CAs, until they do.
"""
from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config.model import CertificateFiles, Tls
from gateway.tls.certificates import (CertificateError, ClientCa, FileStamp, LoadedCertificate, load_client_ca,
                                      load_pair, stamp)
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
        """CertificateError when the client CA file (if any) does not load."""
        self.port = port
        self.client_certificate = tls.client_certificate
        self.ca: ClientCa | None = load_client_ca(tls.client_ca) if tls.client_ca is not None else None
        self.ca_refused: FileStamp | None = None      # the client CA file's stamp when it last did not load
        self.context = self._context()
        self.context.sni_callback = self._choose
        self.entries: list[_Entry] = []
        self.certificates: CertificateSet | None = None
        self.reload_errors: dict[str, int] = {}     # by gateway

    @property
    def verification(self) -> tuple[str | None, str]:
        """What the listener's own context fixes: a change needs a new listener (gateway.runtime.runtime)."""
        return (self.ca.path if self.ca is not None else None), self.client_certificate

    def _choose(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        certificates = self.certificates
        if certificates is not None:
            ssl_object.context = certificates.select(server_name)

    def _context(self) -> ssl.SSLContext:
        return server_context(self.ca.pem if self.ca is not None else None, self.client_certificate)

    def _load(self, files: CertificateFiles) -> LoadedCertificate:
        return load_pair(files.cert, files.key, self._context)

    def _reload_ca(self, gateways: Sequence[str]) -> bool:
        """Read the client CA file again (if any): True when it loaded with other CAs than those in use (and says
        so). One that does not load is refused (a warning for each of `gateways`, the port's), and the CAs in use
        stay."""
        if self.ca is None:
            return False
        try:
            ca = load_client_ca(self.ca.path)
        except CertificateError as exc:
            self.ca_refused = stamp(self.ca.path)
            for gateway in gateways:
                self._refused(gateway, exc, "client CA")
            return False
        self.ca_refused = None
        changed, self.ca = ca.pem != self.ca.pem, ca
        if changed:
            log.info("port %d: reloaded the client CA %s", self.port, ca.path)
        return changed

    def configure(self, gateways: Sequence[tuple[str, Tls]]) -> None:
        """Serve the certificates of `gateways` (name, tls), every file read now. A file that does not load
        keeps what was loaded before from it, if anything; else CertificateError."""
        self._reload_ca([name for name, _ in gateways])
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
        """Reload the certificates whose files changed since they were read (or last refused), all of them when
        the client CA file changed."""
        new_ca = False
        if self.ca is not None:
            ca_stamp = stamp(self.ca.path)
            if ca_stamp != self.ca.stamp and ca_stamp != self.ca_refused:
                new_ca = self._reload_ca(list(dict.fromkeys(entry.gateway for entry in self.entries)))
        changed = False
        for entry in self.entries:
            stamps = (stamp(entry.files.cert), stamp(entry.files.key))
            if not new_ca and (stamps == entry.loaded.stamps or stamps == entry.refused):
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

    def _refused(self, gateway: str, exc: CertificateError, what: str = "certificate") -> None:
        self.reload_errors[gateway] = self.reload_errors.get(gateway, 0) + 1
        log.warning("gateway %s: %s not reloaded, still serving the previous one: %s", gateway, what, exc)

    def expiry(self) -> dict[str, dict[str, float]]:
        """{gateway: {certificate (its first name): expiry in seconds since the epoch}}."""
        by_gateway: dict[str, dict[str, float]] = {}
        for entry in self.entries:
            certificates = by_gateway.setdefault(entry.gateway, {})
            label = entry.loaded.label
            certificates[label] = min(certificates.get(label, entry.loaded.not_after), entry.loaded.not_after)
        return by_gateway
