"""TLS as a user of an https gateway relies on it (docs/tls.md): the certificate SNI picks (checked with Python's
ssl client and `openssl s_client`), TLS 1.2+ only, ALPN, certificates replaced on disk served to new connections
while open ones carry on, a bad file refused, the expiry metric, client certificates (mTLS), X-Forwarded-Proto,
the redirect to https, https targets, and the configuration errors of all of it. Certificates are made here with
trustme."""
from __future__ import annotations

import asyncio
import http.server
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path

import h11
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.config.load import ConfigError, from_dict, to_dict
from gateway.config.model import Config
from tests.support import BrokenResponse, HttpClient, config, free_port, gateway, route
from tests.support.processes import LOOPBACK
from tests.support.waiting import eventually

OPENSSL_TIMEOUT = 10.0
REFUSED = (ssl.SSLError, ConnectionError, BrokenResponse)     # how a refused handshake shows (TLS 1.2 or 1.3)


# -- certificates ----------------------------------------------------------------------------------------------

class Pki:
    """A CA, certificates it issued written as PEM files, and clients that trust it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA()
        self.ca_file = self.write_ca(self.ca, "ca.pem")

    def write_ca(self, ca: trustme.CA, name: str) -> str:
        path = self.directory / name
        ca.cert_pem.write_to_path(str(path))
        return str(path)

    def issue(self, name: str, *names: str, ca: trustme.CA | None = None) -> dict:
        """{cert: FILE, key: FILE} of a new certificate for `names` (the chain in the cert file)."""
        return self.write(f"{name}", (ca or self.ca).issue_cert(*names))

    def write(self, name: str, issued: trustme.LeafCert) -> dict:
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        key.write_bytes(issued.private_key_pem.bytes())
        return {"cert": str(cert), "key": str(key)}

    def client_context(self, **settings) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = False           # the tests look at which certificate came, not at its names
        context.set_alpn_protocols(["http/1.1"])
        for name, value in settings.items():
            setattr(context, name, value)
        return context


def leaf_der(files: dict) -> bytes:
    return x509.load_pem_x509_certificates(Path(files["cert"]).read_bytes())[0].public_bytes(Encoding.DER)


class TlsClient(HttpClient):
    """The tests' HTTP/1.1 client over TLS, sending `server_name` as SNI (None: no SNI)."""

    def __init__(self, port: int, context: ssl.SSLContext, server_name: str | None = None) -> None:
        super().__init__(port)
        self.context = context
        self.server_name = server_name

    def connect(self) -> None:
        self.close()
        raw = socket.create_connection(self.address, timeout=self.timeout)
        try:
            self.sock = self.context.wrap_socket(raw, server_hostname=self.server_name)
        except BaseException:
            raw.close()
            raise
        self.conn = h11.Connection(h11.CLIENT)
        self.connections_opened += 1

    def certificate(self) -> bytes:
        """The DER of the certificate the gateway served on this connection (connecting if needed)."""
        if self.sock is None:
            self.connect()
        return self.sock.getpeercert(binary_form=True)


def served(port: int, context: ssl.SSLContext, server_name: str | None) -> bytes:
    with TlsClient(port, context, server_name) as client:
        return client.certificate()


def s_client_certificate(port: int, server_name: str | None, *options: str) -> tuple[int, bytes | None, str]:
    """(exit status, DER of the certificate served, output) of `openssl s_client`."""
    args = ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", *options]
    if server_name is not None:
        args += ["-servername", server_name]
    with open(os.devnull, "rb") as nothing:
        done = subprocess.run(args, stdin=nothing, capture_output=True, timeout=OPENSSL_TIMEOUT)
    text = done.stdout.decode("latin-1") + done.stderr.decode("latin-1")
    begin = text.find("-----BEGIN CERTIFICATE-----")
    if begin < 0:
        return done.returncode, None, text
    end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    certificate = x509.load_pem_x509_certificate(text[begin:end].encode())
    return done.returncode, certificate.public_bytes(Encoding.DER), text


# -- an https backend (upstream TLS) ---------------------------------------------------------------------------

class _SecureHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:                                  # noqa: N802 - the base class's name
        body = b"secure backend"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Version", "secure")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_backend(pki):
    """An https server on loopback whose certificate (for 127.0.0.1) the test CA signed; its port."""
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _SecureHandler)
    issued = pki.issue("backend", LOOPBACK)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued["cert"], issued["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1")


@pytest.fixture(scope="module")
def site(module_procs, pki, echo, https_backend):
    ws = module_procs.backend("ws")
    """One gateway process serving every gateway the read-only tests use, each on its own port."""
    certificates = {
        "a": pki.issue("a", "a.example"),
        "b": pki.issue("b", "b.example"),
        "wild": pki.issue("wild", "*.w.example"),
        "client": pki.issue("client", "client.example"),
    }
    ports = {name: free_port() for name in ("sni", "mtls", "mtls_optional", "redirect", "redirect_port", "upstream",
                                            "unverified", "ws", "checked", "checked_unverified")}
    upstream = f"https://{LOOPBACK}:{https_backend}"
    document = config({
        "sni": gateway(f"{ports['sni']}/https", {"r": route(echo.address("v1"))},
                       tls={"certificates": [certificates["a"], certificates["b"], certificates["wild"]]}),
        "mtls": gateway(f"{ports['mtls']}/https", {"r": route(echo.address("v1"))},
                        tls={"certificates": [certificates["a"]], "client_ca": pki.ca_file}),
        "mtls_optional": gateway(f"{ports['mtls_optional']}/https", {"r": route(echo.address("v1"))},
                                 tls={"certificates": [certificates["a"]], "client_ca": pki.ca_file,
                                      "client_certificate": "optional"}),
        "redirect": gateway(ports["redirect"], {}, redirect_https=True),
        "redirect_port": gateway(ports["redirect_port"], {}, redirect_https={"port": 8443}),
        "upstream": gateway(ports["upstream"], {"r": route(upstream)}, upstream_tls={"ca": pki.ca_file}),
        "unverified": gateway(ports["unverified"], {"r": route(upstream)}),
        "ws": gateway(f"{ports['ws']}/https", {"r": route(ws.address())}, tls={"certificates": [certificates["a"]]}),
        "checked": gateway(ports["checked"], {"r": route(upstream)}, upstream_tls={"ca": pki.ca_file},
                           health_check=HEALTH_CHECK),
        "checked_unverified": gateway(ports["checked_unverified"], {"r": route(upstream)}, health_check=HEALTH_CHECK),
    })
    process = module_procs.gateway(document)
    return {"process": process, "ports": ports, "certificates": certificates}


# -- SNI, protocol versions, ALPN ------------------------------------------------------------------------------

def test_sni_picks_the_certificate_by_exact_name_then_wildcard_else_the_default(site, pki):
    port, certificates = site["ports"]["sni"], site["certificates"]
    context = pki.client_context()
    expected = {"a.example": "a", "b.example": "b", "x.w.example": "wild", "B.Example": "b",
                "nobody.example": "a", "a.b.w.example": "a"}
    for name, certificate in expected.items():
        assert served(port, context, name) == leaf_der(certificates[certificate]), name
    assert served(port, context, None) == leaf_der(certificates["a"]), "no SNI gets the default (the first)"


def test_openssl_s_client_gets_the_certificate_of_the_name_it_sends(site, pki):
    port, certificates = site["ports"]["sni"], site["certificates"]
    for name, certificate in (("a.example", "a"), ("b.example", "b"), ("y.w.example", "wild")):
        status, der, output = s_client_certificate(port, name, "-CAfile", pki.ca_file)
        assert der == leaf_der(certificates[certificate]), output
        assert "Verify return code: 0 (ok)" in output


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_2_and_1_3_are_served_and_older_versions_refused(site, pki):
    port = site["ports"]["sni"]
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with TlsClient(port, pki.client_context(minimum_version=version, maximum_version=version),
                       "a.example") as client:
            assert client.request("GET", "/").status == 200
            assert client.sock.version() == version.name.replace("v1_", "v1.")
    old = pki.client_context()
    old.set_ciphers("DEFAULT:@SECLEVEL=0")       # let the client offer what OpenSSL 3 no longer offers by default
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as refused:
        served(port, old, "a.example")
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value), "the client could not even offer TLS 1.1"
    status, der, output = s_client_certificate(port, "a.example", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert status != 0 and der is None, output


def test_alpn_negotiates_http_1_1_and_keep_alive_and_pipelining_work_over_tls(site, pki):
    with TlsClient(site["ports"]["sni"], pki.client_context(), "a.example") as client:
        assert client.certificate()
        assert client.sock.selected_alpn_protocol() == "http/1.1"
        for _ in range(3):
            assert client.request("GET", "/").status == 200
        assert client.connections_opened == 1
        client.send_raw(b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.example\r\n\r\n")
        assert [client.read_response_to_raw().json()["path"] for _ in range(2)] == ["/1", "/2"]


def test_a_websocket_upgrade_works_over_tls(site, pki):
    payload = b"through TLS"
    mask = b"\x01\x02\x03\x04"
    frame = struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with TlsClient(site["ports"]["ws"], pki.client_context(), "a.example") as client:
        client.send_raw(upgrade)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = client.sock.recv(65536)
            assert chunk, f"connection closed; received {received!r}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 101")
        client.sock.sendall(frame)
        received = received.partition(b"\r\n\r\n")[2]
        while payload not in received:
            chunk = client.sock.recv(65536)
            assert chunk, f"connection closed; received {received!r}"
            received += chunk
    assert received == b"\x81" + bytes([len(payload)]) + payload            # the server's unmasked echo


def test_the_backend_is_told_the_request_came_over_https(site, pki):
    with TlsClient(site["ports"]["sni"], pki.client_context(), "a.example") as client:
        headers = dict((k.lower(), v) for k, v in client.request("GET", "/").json()["headers"])
    assert headers["x-forwarded-proto"] == "https"
    plain = HttpClient(site["ports"]["upstream"])          # an http gateway says http (to its https backend)
    with plain:
        assert plain.request("GET", "/").status == 200


def test_the_expiry_metric_has_each_certificate_by_its_first_name(site):
    metrics = site["process"].metrics()
    for name, certificate in (("a.example", "a"), ("b.example", "b"), ("*.w.example", "wild")):
        leaf = x509.load_pem_x509_certificates(Path(site["certificates"][certificate]["cert"]).read_bytes())[0]
        assert metrics.value("vamp_tls_certificate_expiry_timestamp_seconds", gateway="sni",
                             certificate=name) == leaf.not_valid_after_utc.timestamp()
    assert metrics.value("vamp_tls_certificate_reload_errors_total", gateway="sni") == 0


# -- client certificates ---------------------------------------------------------------------------------------

def test_mtls_refuses_a_client_without_a_certificate_and_serves_one_with_a_good_one(site, pki):
    port = site["ports"]["mtls"]
    with pytest.raises(REFUSED), TlsClient(port, pki.client_context(), "a.example") as client:
        client.request("GET", "/")     # TLS 1.3: the refusal arrives after the client's side of the handshake
    stranger = trustme.CA().issue_cert("client.example")
    strange = pki.write("stranger", stranger)
    for files, accepted in ((site["certificates"]["client"], True), (strange, False)):
        context = pki.client_context()
        context.load_cert_chain(files["cert"], files["key"])
        if accepted:
            with TlsClient(port, context, "a.example") as client:
                assert client.request("GET", "/").status == 200
        else:
            with pytest.raises(REFUSED), TlsClient(port, context, "a.example") as client:
                client.request("GET", "/")


def test_optional_client_certificates_let_a_client_without_one_in_but_not_one_with_a_bad_one(site, pki):
    port = site["ports"]["mtls_optional"]
    with TlsClient(port, pki.client_context(), "a.example") as client:
        assert client.request("GET", "/").status == 200
    context = pki.client_context()
    stranger = pki.write("stranger-optional", trustme.CA().issue_cert("client.example"))
    context.load_cert_chain(stranger["cert"], stranger["key"])
    with pytest.raises(REFUSED), TlsClient(port, context, "a.example") as client:
        client.request("GET", "/")


# -- redirect ------------------------------------------------------------------------------------------------

def test_redirect_https_answers_308_to_the_same_url_on_https(site):
    with HttpClient(site["ports"]["redirect"]) as client:
        response = client.request("GET", "/shop/cart?item=1&n=2", host="shop.example:8080")
        assert response.status == 308
        assert response.header("location") == "https://shop.example/shop/cart?item=1&n=2"
        again = client.request("POST", "/form", body=b"x=1", host="shop.example")
        assert again.status == 308 and again.header("location") == "https://shop.example/form"
        assert client.connections_opened == 1
    with HttpClient(site["ports"]["redirect_port"]) as client:
        response = client.request("GET", "/?q=a%20b", host="shop.example")
    assert response.status == 308
    assert response.header("location") == "https://shop.example:8443/?q=a%20b"


# -- upstream TLS ----------------------------------------------------------------------------------------------

def test_an_https_target_is_verified_with_the_configured_ca_and_refused_without(site):
    with HttpClient(site["ports"]["upstream"]) as client:
        response = client.request("GET", "/")
    assert response.status == 200 and response.version == "secure"
    with HttpClient(site["ports"]["unverified"]) as client:
        assert client.request("GET", "/").status == 502      # the system CAs do not know the test CA


HEALTH_CHECK = {"path": "/", "interval": "200ms", "timeout": "200ms", "healthy": 1, "unhealthy": 1}


def test_an_https_target_is_health_checked_over_tls_with_the_same_verification(site, https_backend):
    """The probe of an https target speaks TLS and verifies the backend as requests do: healthy with the CA,
    unhealthy (a failed handshake) without it."""
    address = f"{LOOPBACK}:{https_backend}"

    def healthy(gateway: str) -> list[float]:
        return [sample.value for sample in site["process"].metrics().find("vamp_target_healthy", gateway=gateway)
                if sample.labels["target"].endswith(address)]

    eventually(lambda: healthy("checked") == [1] and healthy("checked_unverified") == [0], 10.0,
               "the https target healthy with the CA and unhealthy without",
               context=lambda: (healthy("checked"), healthy("checked_unverified")))


# -- reload ----------------------------------------------------------------------------------------------------

def replace_files(files: dict, issued: trustme.LeafCert) -> None:
    """Replace a certificate's files as deployment tools do: each written aside and renamed over the old one."""
    for field, blob in (("key", issued.private_key_pem.bytes()),
                        ("cert", b"".join(b.bytes() for b in issued.cert_chain_pems))):
        aside = files[field] + ".new"
        Path(aside).write_bytes(blob)
        os.replace(aside, files[field])


def test_a_certificate_replaced_on_disk_is_served_to_new_connections_and_open_ones_carry_on(procs, pki, echo,
                                                                                           tmp_path):
    files = pki.issue("reload", "reload.example")
    first = leaf_der(files)
    port = free_port()
    process = procs.gateway(config({"secure": gateway(f"{port}/https", {"r": route(echo.address("v1"))},
                                                      tls={"certificates": [files]})}))
    context = pki.client_context()
    with TlsClient(port, context, "reload.example") as kept:
        assert kept.request("GET", "/").status == 200 and kept.certificate() == first

        replace_files(files, pki.ca.issue_cert("reload.example"))
        second = leaf_der(files)
        eventually(lambda: served(port, context, "reload.example") == second, 15, "the new certificate served")
        assert kept.request("GET", "/").status == 200, "an open keep-alive connection keeps working"
        assert kept.certificate() == first and kept.connections_opened == 1

        def reload_errors() -> float:
            return process.metrics().value("vamp_tls_certificate_reload_errors_total", gateway="secure") or 0

        errors = reload_errors()
        Path(files["cert"]).write_text("-----BEGIN CERTIFICATE-----\nnot really\n")     # malformed
        eventually(lambda: reload_errors() > errors, 15, "the malformed certificate refused")
        assert served(port, context, "reload.example") == second, "the previous certificate stays"
        assert "certificate not reloaded" in process.stderr_text() and files["cert"] in process.stderr_text()

        replace_files(files, pki.ca.issue_cert("reload.example"))
        third = leaf_der(files)
        eventually(lambda: served(port, context, "reload.example") == third, 15, "a later good one served")
        assert kept.request("GET", "/").status == 200


def test_a_client_ca_replaced_on_disk_verifies_new_connections_and_a_malformed_one_is_refused(procs, pki, echo,
                                                                                             tmp_path):
    """mTLS: the CA file is watched as the certificates are. New handshakes verify against the new CAs, an open
    connection carries on, and a malformed file is refused with the CAs in use kept."""
    ca_file = tmp_path / "clients-ca.pem"
    ca_file.write_bytes(Path(pki.ca_file).read_bytes())
    other_ca = trustme.CA()
    clients = {"old": pki.write("client-old", pki.ca.issue_cert("old.client")),
               "new": pki.write("client-new", other_ca.issue_cert("new.client"))}
    port = free_port()
    process = procs.gateway(config({"secure": gateway(
        f"{port}/https", {"r": route(echo.address("v1"))},
        tls={"certificates": [pki.issue("mtls-reload", "mtls.example")], "client_ca": str(ca_file)})}))

    def accepted(client: str) -> bool:
        context = pki.client_context()
        context.load_cert_chain(clients[client]["cert"], clients[client]["key"])
        try:
            with TlsClient(port, context, "mtls.example") as connection:
                return connection.request("GET", "/").status == 200
        except REFUSED:
            return False

    def reload_errors() -> float:
        return process.metrics().value("vamp_tls_certificate_reload_errors_total", gateway="secure") or 0

    assert accepted("old") and not accepted("new")
    kept = pki.client_context()
    kept.load_cert_chain(clients["old"]["cert"], clients["old"]["key"])
    with TlsClient(port, kept, "mtls.example") as open_connection:
        assert open_connection.request("GET", "/").status == 200
        aside = tmp_path / "clients-ca.pem.new"
        other_ca.cert_pem.write_to_path(str(aside))
        os.replace(aside, ca_file)
        eventually(lambda: accepted("new"), 15, "a client of the new CA accepted")
        assert not accepted("old"), "the old CA no longer verifies new connections"
        assert open_connection.request("GET", "/").status == 200, "an open connection carries on"

    errors = reload_errors()
    ca_file.write_text("-----BEGIN CERTIFICATE-----\nnot really\n")
    eventually(lambda: reload_errors() > errors, 15, "the malformed CA file refused")
    assert accepted("new") and not accepted("old"), "the CAs in use stay"
    assert "client CA not reloaded" in process.stderr_text() and str(ca_file) in process.stderr_text()

    both = pki.ca.cert_pem.bytes() + other_ca.cert_pem.bytes()
    aside.write_bytes(both)
    os.replace(aside, ca_file)
    eventually(lambda: accepted("old"), 15, "a later good CA file loaded")
    assert accepted("new")


async def test_every_apply_reads_the_certificate_files_again(pki, monkeypatch):
    """SIGHUP and admin API writes apply the configuration: the files are read then, even unchanged."""
    from gateway.runtime import runtime as runtime_module
    monkeypatch.setattr(runtime_module, "POLL_INTERVAL", 3600.0)     # only the apply can reload here
    files = pki.issue("apply", "apply.example")
    port = free_port()
    document = from_dict(config({"secure": gateway(f"{port}/https", {}, tls={"certificates": [files]})}))
    runtime = runtime_module.Runtime(asyncio.get_running_loop())
    await runtime.apply(document)
    context = pki.client_context()

    async def certificate() -> bytes:
        _, writer = await asyncio.open_connection(LOOPBACK, port, ssl=context, server_hostname="apply.example")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der

    try:
        assert await certificate() == leaf_der(files)
        listener = runtime.listeners[(LOOPBACK, port)]
        replace_files(files, pki.ca.issue_cert("apply.example"))
        await runtime.apply(document)
        assert await certificate() == leaf_der(files)
        assert runtime.listeners[(LOOPBACK, port)] is listener, "the listener was not restarted"
    finally:
        await runtime.close()


def test_sighup_reads_the_certificate_files_again_in_every_worker(procs, pki, echo):
    files = pki.issue("hup", "hup.example")
    port = free_port()
    process = procs.gateway(config({"secure": gateway(f"{port}/https", {"r": route(echo.address("v1"))},
                                                      tls={"certificates": [files]})}), extra_args=("--workers", "2"))
    context = pki.client_context()
    assert served(port, context, "hup.example") == leaf_der(files)
    replace_files(files, pki.ca.issue_cert("hup.example"))
    os.kill(process.pid, signal.SIGHUP)
    eventually(lambda: "SIGHUP: applied" in process.stderr_text(), 10, "SIGHUP applied")
    new = leaf_der(files)
    assert all(served(port, context, "hup.example") == new for _ in range(8)), "every worker serves the new one"
    metrics = process.metrics()          # summed over the workers
    expiry = x509.load_der_x509_certificate(new).not_valid_after_utc.timestamp()
    assert metrics.value("vamp_tls_certificate_expiry_timestamp_seconds", gateway="secure",
                         certificate="hup.example") == expiry


# -- configuration ---------------------------------------------------------------------------------------------

def error_of(document: dict) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        from_dict(document)
    return caught.value


def test_tls_configuration_errors_name_the_field(pki):
    good = pki.issue("good", "good.example")
    other = pki.issue("other", "other.example")
    missing = {"cert": str(pki.directory / "missing.crt"), "key": good["key"]}
    mismatch = {"cert": good["cert"], "key": other["key"]}
    garbage = pki.directory / "garbage.pem"
    garbage.write_text("not a pem file\n")

    def https(**tls) -> dict:
        return config({"g": gateway("8443/https", {}, tls=tls)})

    cases = [
        (https(certificates=[good, missing]), ("gateways", "g", "tls", "certificates", 1, "cert"), "no such file"),
        (https(certificates=[mismatch]), ("gateways", "g", "tls", "certificates", 0, "key"), "does not match"),
        (https(certificates=[{"cert": str(garbage), "key": good["key"]}]),
         ("gateways", "g", "tls", "certificates", 0, "cert"), "not a PEM certificate"),
        (https(certificates=[{"cert": good["cert"], "key": str(garbage)}]),
         ("gateways", "g", "tls", "certificates", 0, "key"), "not a PEM private key"),
        (https(certificates=[]), ("gateways", "g", "tls", "certificates"), "at least one certificate"),
        (https(certificates=[good], client_certificate="optional"), ("gateways", "g", "tls", "client_certificate"),
         "needs client_ca"),
        (https(certificates=[good], client_ca=str(garbage)), ("gateways", "g", "tls", "client_ca"),
         "not a PEM file of CA certificates"),
        (config({"g": gateway("8443/https", {})}), ("gateways", "g", "tls"), "an https gateway needs tls"),
        (config({"g": gateway(8080, {}, tls={"certificates": [good]})}), ("gateways", "g", "tls"),
         "for https gateways only"),
        (config({"g": gateway("8443/https", {}, tls={"certificates": [good]}, redirect_https=True)}),
         ("gateways", "g", "redirect_https"), "plain http gateways only"),
        (config({"g": gateway(8080, {}, redirect_https={"port": 0})}), ("gateways", "g", "redirect_https", "port"),
         "expected a port"),
        (config({"g": gateway(8080, {}, upstream_tls={"verify": "no"})}), ("gateways", "g", "upstream_tls", "verify"),
         "expected true or false"),
        (config({"g": gateway("9000/tcp", {"r": route("https://127.0.0.1:1")})}),
         ("gateways", "g", "routes", "r", "targets", 0), "cannot be https"),
        (config({"plain": gateway(8443, {}, virtual_hosts=["a.example"]),
                 "secure": gateway("8443/https", {}, virtual_hosts=["b.example"], tls={"certificates": [good]})}),
         ("gateways", "secure", "port"), "all http or all https"),
        (config({"one": gateway("8443/https", {}, virtual_hosts=["a.example"], tls={"certificates": [good]}),
                 "two": gateway("8443/https", {}, virtual_hosts=["b.example"],
                                tls={"certificates": [other], "client_ca": pki.ca_file})}),
         ("gateways", "two", "tls"), "same client_ca"),
        (https(certificates=[good], handshake_timeout="0s"), ("gateways", "g", "tls", "handshake_timeout"),
         "greater than zero"),
        (https(certificates=[good], handshake_timeout="soon"), ("gateways", "g", "tls", "handshake_timeout"),
         "expected a duration"),
    ]
    for document, location, complaint in cases:
        error = error_of(document)
        assert (error.location, complaint in error.message) == (location, True), str(error)


def test_tls_fields_round_trip_and_documents_without_them_stay_as_they_were(pki):
    good = pki.issue("round", "round.example")
    document = config({
        "secure": gateway("8443/https", {"r": route("https://backend.example:443", {"address": "10.0.0.1:80"})},
                          tls={"certificates": [good], "client_ca": pki.ca_file, "client_certificate": "optional",
                               "handshake_timeout": "2.5s"},
                          upstream_tls={"ca": pki.ca_file, "server_name": "backend.example"}),
        "redirect": gateway(8080, {}, redirect_https=True),
        "plain": gateway(8081, {"r": route({"address": "https://10.0.0.2:443", "weight": 5})}),
    })
    loaded = from_dict(document)
    assert from_dict(to_dict(loaded)) == loaded
    secure = loaded.gateway("secure")
    assert secure.protocol == "https" and secure.tls.client_certificate == "optional"
    assert secure.tls.handshake_timeout == 2.5
    default = config({"g": gateway("8443/https", {}, tls={"certificates": [good]})})
    assert from_dict(default).gateway("g").tls.handshake_timeout == 10.0
    assert to_dict(from_dict(default))["gateways"]["g"]["tls"] == {"certificates": [good]}
    assert [t.tls for t in secure.routes[0].targets] == [True, False]
    assert loaded.gateway("redirect").redirect_https == 443
    assert loaded.gateway("plain").routes[0].targets[0].tls
    plain = to_dict(from_dict(config({"plain": gateway(8081, {"r": route("10.0.0.2:80")})})))["gateways"]["plain"]
    assert not {"tls", "redirect_https", "upstream_tls"} & set(plain)


async def test_a_port_turning_from_http_to_https_and_back_gets_a_listener_of_each_kind(pki):
    """A listener serves one kind (http, https with its client verification, tcp): a change replaces it."""
    from gateway.runtime.runtime import Runtime
    files = pki.issue("switch", "switch.example")
    port = free_port()
    plain = from_dict(config({"g": gateway(port, {})}))
    secure = from_dict(config({"g": gateway(f"{port}/https", {}, tls={"certificates": [files]})}))
    runtime = Runtime(asyncio.get_running_loop())

    async def first_line(tls: bool) -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=pki.client_context() if tls else None,
                                                       server_hostname="switch.example" if tls else None)
        writer.write(b"GET / HTTP/1.1\r\nHost: switch.example\r\n\r\n")
        line = await reader.readline()
        writer.close()
        return line

    try:
        await runtime.apply(plain)
        assert (await first_line(False)).startswith(b"HTTP/1.1 503")
        await runtime.apply(secure)
        assert (await first_line(True)).startswith(b"HTTP/1.1 503")
        await runtime.apply(plain)
        assert (await first_line(False)).startswith(b"HTTP/1.1 503")
    finally:
        await runtime.close()


async def test_a_handshake_not_finished_in_time_is_closed_and_a_change_of_the_timeout_applies(pki):
    """A client that connects and sends nothing, or half a ClientHello, holds a connection (and its TLS state)
    only for `handshake_timeout`; a finished handshake is not limited by it, and a changed timeout applies to
    the connections accepted after the change."""
    from gateway.runtime.runtime import Runtime
    files = pki.issue("slow", "slow.example")
    port = free_port()

    def document(timeout: str) -> Config:
        return from_dict(config({"g": gateway(f"{port}/https", {}, tls={"certificates": [files],
                                                                         "handshake_timeout": timeout})}))

    async def closed_within(seconds: float, first_bytes: bytes) -> bool:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(first_bytes)
        try:
            return await asyncio.wait_for(reader.read(), seconds) == b""
        except TimeoutError:
            return False
        finally:
            writer.close()

    async def served() -> bytes:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=pki.client_context(),
                                                       server_hostname="slow.example")
        await asyncio.sleep(0.5)                 # longer than the handshake timeout, after the handshake
        writer.write(b"GET / HTTP/1.1\r\nHost: slow.example\r\n\r\n")
        line = await reader.readline()
        writer.close()
        return line

    runtime = Runtime(asyncio.get_running_loop())
    try:
        await runtime.apply(document("200ms"))
        assert await closed_within(5.0, b"")                                  # silent
        assert await closed_within(5.0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # half a ClientHello
        assert (await served()).startswith(b"HTTP/1.1 503")
        await runtime.apply(document("30s"))
        assert not await closed_within(1.0, b"")
        await runtime.apply(document("200ms"))
        assert await closed_within(5.0, b"")
    finally:
        await runtime.close()


def test_https_targets_share_one_client_context_kept_across_changes_until_the_ca_file_changes(pki, tmp_path):
    """Loading CAs takes milliseconds: a configuration change does not pay for it again."""
    from gateway.routing.table import RouteTable
    ca_file = tmp_path / "upstream-ca.pem"
    ca_file.write_bytes(Path(pki.ca_file).read_bytes())

    def table(weight: str, previous=None) -> RouteTable:
        return RouteTable(from_dict(config({"g": gateway(8080, {
            "a": route("https://10.0.0.1:443", weight=weight), "b": route("https://b.example:443")},
            upstream_tls={"ca": str(ca_file)})})), previous)

    def contexts(built: RouteTable) -> list:
        return [target.ssl_context for _, _, target in built.targets()]

    first = table("50%")
    assert [t.server_hostname for _, _, t in first.targets()] == ["10.0.0.1", "b.example"]
    [context, same] = contexts(first)
    assert context is same and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    second = table("40%", first)
    assert contexts(second) == [context, context]
    ca_file.write_bytes(Path(pki.ca_file).read_bytes() + Path(pki.ca_file).read_bytes())
    assert contexts(table("30%", second))[0] is not context
