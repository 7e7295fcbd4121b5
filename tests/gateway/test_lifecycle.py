"""The gateway process's lifecycle under signals: SIGTERM stops it gracefully (requests in flight finish, each
keep-alive connection is told `Connection: close`, no new connections, exit 0, bounded by `--grace`); SIGHUP
re-reads the `--config` file and applies it, or, when the file is broken, logs that it did not and changes
nothing."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest
import yaml

from tests.support import BrokenResponse, HttpClient, free_port, gateway, route, shop_config
from tests.support.admin import AdminApi
from tests.support.waiting import eventually
from tests.support.processes import LOOPBACK

SLOW_SECONDS = 3.0       # long enough to be surely in flight when the signal comes, even on a busy machine
SLOW = [("X-Echo-Delay", str(SLOW_SECONDS))]


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1", "v2")



def in_flight(api: AdminApi) -> int:
    """Requests in flight across every target of `shop`, as the admin API reports them."""
    routes = api.document("shop")["status"]["routes"]
    return sum(target["in_flight"] for r in routes.values() for target in r["targets"].values())


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
    except OSError:
        return True
    return False


def versions(port: int, count: int) -> list[str]:
    with HttpClient(port) as client:
        return [client.request("GET", "/").version for _ in range(count)]


# -- SIGTERM -------------------------------------------------------------------------------------------
class SlowClient(threading.Thread):
    """One keep-alive connection: a quick request, then a slow one (in flight when the signal comes)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = HttpClient(port, timeout=15)
        self.responses = []
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        try:
            with self.client:
                self.responses.append(self.client.request("GET", "/"))
                self.responses.append(self.client.request("GET", "/", SLOW))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        self.finished_at = time.monotonic()


def test_sigterm_finishes_requests_in_flight_then_exits_zero(procs, echo):
    port = free_port()
    gw = procs.gateway(shop_config(port, echo))
    api = AdminApi(gw.admin_url(""))
    clients = [SlowClient(port) for _ in range(4)]
    for client in clients:
        client.start()
    # Each client has its quick answer, so the requests in flight are the slow ones (a client between its two
    # requests is idle, and SIGTERM rightly closes idle connections).
    eventually(lambda: all(len(client.responses) == 1 for client in clients) and in_flight(api) == len(clients),
               10, "every slow request in flight")

    gw.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    eventually(lambda: refuses_connections(port), 1.0, "refusing new connections after SIGTERM")
    assert all(client.finished_at is None for client in clients), "the requests in flight were cut short"

    for client in clients:
        client.join(15)
        assert client.error is None, repr(client.error)
        first, last = client.responses
        assert first.status == 200 and (first.header("connection") or "").lower() != "close"
        assert last.status == 200
        assert (last.header("connection") or "").lower() == "close"
        assert client.client.connections_opened == 1       # both requests on one keep-alive connection
    assert gw.process.wait(10) == 0
    assert time.monotonic() - signalled < SLOW_SECONDS + 3.0   # the default grace (30 s) was not needed


def test_grace_bounds_how_long_sigterm_waits(procs, echo):
    port = free_port()
    gw = procs.gateway(shop_config(port, echo), extra_args=("--grace", "1"))
    api = AdminApi(gw.admin_url(""))
    outcome: dict = {}

    def very_slow() -> None:
        try:
            with HttpClient(port, timeout=15) as client:
                outcome["status"] = client.request("GET", "/", [("X-Echo-Delay", "5")]).status
        except (BrokenResponse, OSError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=very_slow, daemon=True)
    thread.start()
    eventually(lambda: in_flight(api) == 1, 10, "the slow request in flight")
    gw.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert gw.process.wait(10) == 0
    assert time.monotonic() - signalled < 3.0
    thread.join(15)
    assert "status" not in outcome, "a 5 s request completed within a 1 s grace"


# -- SIGHUP --------------------------------------------------------------------------------------------
def _with_unknown_field(port: int, echo) -> str:
    document = shop_config(port, echo, "0%", "100%")
    document["gateways"]["shop"]["stikcy"] = "route"
    return yaml.safe_dump(document, sort_keys=False)


BROKEN_FILES = {        # what is wrong -> the file's text, for the gateway on `port`
    "YAML syntax error": lambda port, echo: "gateways:\n  shop: [port\n",
    "weights summing to 120%": lambda port, echo: yaml.safe_dump(shop_config(port, echo, "100%", "20%")),
    "unknown field": _with_unknown_field,
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_sighup_with_a_broken_file_changes_nothing_and_says_so(procs, echo, case):
    port = free_port()
    gw = procs.gateway(shop_config(port, echo))
    api = AdminApi(gw.admin_url(""))
    before = (api.list().body, (gw.state_dir / "gateways.json").read_bytes())
    gw.config_path.write_text(BROKEN_FILES[case](port, echo))

    gw.process.send_signal(signal.SIGHUP)
    line = eventually(lambda: next((line for line in gw.stderr_text().splitlines() if "not applied" in line),
                                   None), 5, "a log line saying the file was not applied")
    assert str(gw.config_path) in line
    assert gw.process.poll() is None
    assert (api.list().body, (gw.state_dir / "gateways.json").read_bytes()) == before
    assert versions(port, 10) == ["v1"] * 10


def test_sighup_with_a_good_changed_file_applies_it(procs, echo):
    port = free_port()
    gw = procs.gateway(shop_config(port, echo))
    api = AdminApi(gw.admin_url(""))
    changed = shop_config(port, echo, "0%", "100%")
    extra_port = free_port()
    changed["gateways"]["extra"] = gateway(extra_port, {"r": route(echo.address("v2"))})
    gw.config_path.write_text(yaml.safe_dump(changed, sort_keys=False))

    gw.process.send_signal(signal.SIGHUP)
    eventually(lambda: api.get("extra").status == 200, 5, "the file's new gateway served")
    routes = api.document("shop")["routes"]
    assert {name: spec["weight"] for name, spec in routes.items()} == {"stable": "0%", "canary": "100%"}
    assert versions(port, 20) == ["v2"] * 20
    assert versions(extra_port, 2) == ["v2"] * 2
    stored = json.loads((gw.state_dir / "gateways.json").read_text())
    assert set(stored["gateways"]) == {"shop", "extra"}
    assert gw.process.poll() is None
