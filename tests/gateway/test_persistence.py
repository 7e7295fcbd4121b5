"""Applied changes persist in `--state-dir`: they survive `kill -9` and a restart (the `--config` file only
seeds an empty state directory), the state file is never torn by a crash in the middle of rapid writes, an
invalid write leaves it untouched, and a gateway with neither state nor `--config` refuses to start."""
from __future__ import annotations

import json
import random
import threading

import pytest
import yaml

from tests.support import GatewayProcess, HttpClient, free_port, gateway, route, run_cli, shop_config
from tests.support.admin import YAML, AdminApi

TOKEN = "s3cret"
SWAPPED = {"routes": {"stable": {"weight": "0%"}, "canary": {"weight": "100%"}}}


@pytest.fixture(scope="module")
def echo(module_procs):
    return module_procs.backend("echo", "v1", "v2")



def restart(procs, gw: GatewayProcess, extra_args: tuple[str, ...] = (), *, config_file: bool = True,
            with_config: dict | None = None) -> GatewayProcess:
    """The same `vamp gateway` command again after `gw` stopped: same --state-dir and --config file (written
    anew from `with_config`, by default the one `gw` started with); `config_file=False` leaves --config out."""
    again = GatewayProcess(with_config or gw.config, gw.workdir, extra_args=extra_args)
    assert again.state_dir == gw.state_dir and again.config_path == gw.config_path
    if not config_file:
        at = again.args.index("--config")
        del again.args[at:at + 2]
    procs.started.append(again)
    return again.start()


def kill_9(gw: GatewayProcess) -> None:
    gw.process.kill()
    gw.process.wait(10)


def versions(port: int, count: int) -> list[str]:
    with HttpClient(port) as client:
        return [client.request("GET", "/").version for _ in range(count)]


def weights(document: dict) -> dict[str, str]:
    return {name: spec["weight"] for name, spec in document["routes"].items()}


def state_file(gw: GatewayProcess):
    return gw.state_dir / "gateways.json"


# -- a change survives kill -9 ---------------------------------------------------------------------------
def test_a_change_survives_kill_9_and_the_config_file_does_not_override_it(procs, echo):
    port = free_port()
    gw = procs.gateway(shop_config(port, echo))
    patched = AdminApi(gw.admin_url("")).patch("shop", SWAPPED)
    assert patched.status == 200, patched.body
    kill_9(gw)                                          # at once: no chance to save anything on the way out

    again = restart(procs, gw)                          # the same --config, which still says 100% stable
    document = AdminApi(again.admin_url("")).document("shop")
    assert weights(document) == {"stable": "0%", "canary": "100%"}
    assert versions(port, 10) == ["v2"] * 10


def test_state_is_served_without_a_config_file(procs, echo):
    port = free_port()
    gw = procs.gateway(shop_config(port, echo))
    assert AdminApi(gw.admin_url("")).patch("shop", SWAPPED).status == 200
    assert gw.stop() == 0

    again = restart(procs, gw, config_file=False)
    assert weights(AdminApi(again.admin_url("")).document("shop")) == {"stable": "0%", "canary": "100%"}
    assert versions(port, 4) == ["v2"] * 4


# -- never torn --------------------------------------------------------------------------------------
class PatchWriter(threading.Thread):
    """Sends up to `count` weight changes one after the other until one fails (the gateway was killed),
    remembering each weight pair sent and how many were acknowledged."""

    def __init__(self, api: AdminApi, rng: random.Random, count: int) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.sent = [self._pair(rng) for _ in range(count)]
        self.acknowledged = 0
        self.progress = threading.Semaphore(0)

    @staticmethod
    def _pair(rng: random.Random) -> dict[str, str]:
        stable = rng.randrange(0, 10001)             # basis points: weights with up to two decimals
        return {"stable": f"{stable / 100:g}%", "canary": f"{(10000 - stable) / 100:g}%"}

    def run(self) -> None:
        for pair in self.sent:
            patch = {"routes": {name: {"weight": weight} for name, weight in pair.items()}}
            try:
                response = self.api.patch("shop", patch)
            except OSError:
                return
            if response.status != 200:
                return
            self.acknowledged += 1
            self.progress.release()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_during_rapid_writes_never_tears_the_state(procs, echo, seed):
    rng = random.Random(seed)
    port = free_port()
    gw = procs.gateway(shop_config(port, echo))
    writer = PatchWriter(AdminApi(gw.admin_url(""), timeout=5), rng, count=30)
    kill_after = rng.randrange(1, 30)
    writer.start()
    for _ in range(kill_after):                         # the kill lands while the next write is on its way
        assert writer.progress.acquire(timeout=10), "a write did not come back"
    kill_9(gw)
    writer.join(10)
    assert not writer.is_alive()

    stored = json.loads(state_file(gw).read_text())     # valid JSON, in the documented shape
    assert set(stored) == {"gateways", "geo"}
    again = restart(procs, gw)
    served = weights(AdminApi(again.admin_url("")).document("shop"))
    # every acknowledged write was persisted; the one in flight at the kill may or may not have been
    last_acknowledged = writer.sent[writer.acknowledged - 1]
    in_flight = writer.sent[writer.acknowledged:writer.acknowledged + 1]
    assert served in [last_acknowledged, *in_flight], (served, writer.acknowledged)
    assert weights(stored["gateways"]["shop"]) == served


# -- invalid writes touch nothing ----------------------------------------------------------------------
INVALID_WRITES = {
    "bad YAML": dict(body="routes: {stable: [weight\n", content_type=YAML),
    "unknown field": dict(body={"routes": {"stable": {"wieght": "1%"}}}),
    "weights not summing to 100%": dict(body={"routes": {"canary": {"weight": "10%"}}}),
    "condition that does not parse": dict(body={"routes": {"canary": {"condition": "browser = Chrome and"}}}),
    "bad token": dict(body=SWAPPED, token="wrong"),
    "no token": dict(body=SWAPPED, token=None),
}


@pytest.mark.parametrize("case", list(INVALID_WRITES))
def test_an_invalid_write_leaves_state_and_get_byte_for_byte(procs, echo, case):
    port = free_port()
    gw = procs.gateway(shop_config(port, echo), extra_args=("--admin-token", TOKEN))
    api = AdminApi(gw.admin_url(""), token=TOKEN)
    assert api.patch("shop", {"routes": {"stable": {"weight": "60%"}, "canary": {"weight": "40%"}}}).status == 200

    def observed() -> tuple:
        return (state_file(gw).read_bytes(), state_file(gw).stat().st_mtime_ns, sorted(gw.state_dir.iterdir()),
                api.list().body, api.get("shop").body, api.get("shop", accept=YAML).body)

    before = observed()
    options = dict(INVALID_WRITES[case])
    response = api.patch("shop", options.pop("body"), **options)
    assert response.status in (400, 401), response.body
    assert observed() == before


# -- where the configuration comes from at start ---------------------------------------------------------
def test_the_config_file_seeds_a_new_state_dir(procs, echo):
    port = free_port()
    seed = shop_config(port, echo)
    gw = procs.gateway(seed)
    stored = json.loads(state_file(gw).read_text())
    document = AdminApi(gw.admin_url("")).document("shop")
    assert stored["gateways"]["shop"] == {key: value for key, value in document.items()
                                          if key not in ("name", "status")}
    assert versions(port, 4) == ["v1"] * 4
    assert gw.stop() == 0

    # later starts serve the state, whatever the config file says now
    changed = yaml.safe_load(yaml.safe_dump(seed))
    changed["gateways"]["shop"]["routes"]["stable"]["weight"] = "50%"
    changed["gateways"]["shop"]["routes"]["canary"]["weight"] = "50%"
    changed["gateways"]["other"] = gateway(free_port(), {"r": route(echo.address("v2"))})
    again = restart(procs, gw, with_config=changed)
    assert yaml.safe_load(again.config_path.read_text()) == changed
    api = AdminApi(again.admin_url(""))
    assert [entry["name"] for entry in api.list().json()] == ["shop"]
    assert weights(api.document("shop")) == {"stable": "100%", "canary": "0%"}
    assert versions(port, 4) == ["v1"] * 4


def test_an_existing_empty_state_dir_is_seeded_too(procs, echo, tmp_path):
    port = free_port()
    gw = GatewayProcess(shop_config(port, echo), tmp_path / "empty-state")
    gw.state_dir.mkdir()
    procs.started.append(gw)
    gw.start()
    assert json.loads(state_file(gw).read_text())["gateways"]["shop"]["routes"]["stable"]["weight"] == "100%"
    assert versions(port, 2) == ["v1", "v1"]


def test_no_state_and_no_config_exits_2_with_one_line(tmp_path):
    state_dir = tmp_path / "state"
    result = run_cli(["gateway", "--state-dir", str(state_dir), "--admin", f"127.0.0.1:{free_port()}"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--config" in lines[0]

    state_dir.mkdir()
    again = run_cli(["gateway", "--state-dir", str(state_dir), "--admin", f"127.0.0.1:{free_port()}"])
    assert again.returncode == 2
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
