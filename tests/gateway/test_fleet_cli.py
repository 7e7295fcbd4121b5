"""`vamp gateway --config-store`'s command line: options that cannot work are refused with one line and exit 2
before anything starts; an etcd that asks for a password gets it from a file or $VAMP_ETCD_PASSWORD, and the
password never reaches the log, the URL or the process list."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import FleetGatewayProcess, config, free_port, gateway, route, run_cli
from tests.support.etcd import ETCD, EtcdCluster, etcdctl, needs_etcd
from tests.support.load import admin_call
from tests.support.processes import REPO_ROOT

PASSWORD = "s3cret-Pa55word-9f2"


@pytest.mark.parametrize("args, says", [
    (["--config-store", "http://127.0.0.1:2379/vamp"], "etcd://HOST:PORT"),
    (["--config-store", "etcd://root:pw@127.0.0.1:2379/vamp"], "credentials do not go in the store URL"),
    (["--config-store", "etcd://127.0.0.1:99999/vamp"], "out of range"),
    (["--config-store", "etcd://127.0.0.1:2379/vamp", "--etcd-cert", "pyproject.toml"],
     "both --etcd-cert and --etcd-key"),
    (["--config-store", "etcd://127.0.0.1:2379/vamp", "--etcd-ca", "no/such/ca.pem"], "--etcd-ca: cannot read"),
    (["--config-store", "etcd://127.0.0.1:2379/vamp", "--etcd-user", "vamp", "--etcd-password-file", "no/such"],
     "cannot read the password file"),
    (["--config-store", "etcd://127.0.0.1:2379/vamp", "--bind", "not-an-address"], "--bind expects an IP address"),
    (["--bind", "127.0.0.2"], "go with --config-store"),
    (["--config", "examples/gateways.yaml", "--etcd-user", "vamp"], "go with --config-store"),
])
def test_options_that_cannot_work_exit_2_with_one_line(args, says):
    completed = run_cli(["gateway", "--admin", f"127.0.0.1:{free_port()}", *args], timeout=30)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith("vamp: ") and completed.stderr.count("\n") == 1, completed.stderr
    assert says in completed.stderr


@pytest.fixture
def etcd_with_auth(tmp_path):
    if ETCD is None:
        pytest.skip("etcd is not installed")
    (tmp_path / "etcd").mkdir()
    cluster = EtcdCluster(tmp_path / "etcd", size=1).start()
    etcdctl(cluster, "user", "add", f"root:{PASSWORD}")
    etcdctl(cluster, "auth", "enable")
    yield cluster
    cluster.stop()


@needs_etcd
def test_etcd_credentials_come_from_a_file_or_the_environment_and_are_never_logged(tmp_path, etcd_with_auth,
                                                                                   monkeypatch):
    password_file = tmp_path / "etcd-password"
    password_file.write_text(PASSWORD + "\n")
    url = etcd_with_auth.url("/auth")
    port = free_port()
    seed = config({"shop": gateway(port, {"v1": route("127.0.0.1:1")})})
    replica = FleetGatewayProcess(url, "127.0.0.2", tmp_path / "replica", seed=seed,
                                  extra_args=("--etcd-user", "root", "--etcd-password-file", str(password_file),
                                              "--log-level", "debug"))
    with replica:           # started: ready
        assert replica.store_status()["up"]
        status, written = admin_call(replica, "PATCH", "/api/v1/gateways/shop", {"sticky": "route"})
        assert status == 200 and written["sticky"] == "route", written
        assert PASSWORD not in " ".join(replica.process.args)
    assert PASSWORD not in replica.stderr_text()

    monkeypatch.setenv("VAMP_ETCD_PASSWORD", "wrong-" + PASSWORD)
    refused = FleetGatewayProcess(url, "127.0.0.3", tmp_path / "refused", extra_args=("--etcd-user", "root"))
    refused.spawn()         # nothing to serve yet: it waits for the store, saying why
    try:
        refused.wait_until(lambda: "authentication failed" in refused.stderr_text(), 20, "refused by etcd")
        assert refused.admin_status("/ready") is None
    finally:
        refused.stop()
    assert PASSWORD not in refused.stderr_text()


def test_a_standalone_gateway_loads_neither_the_store_nor_grpc():
    code = ("import sys\n"
            "from gateway.cli import build_parser, store_address\n"
            "args = build_parser().parse_args(['gateway', '--config', 'examples/gateways.yaml'])\n"
            "assert store_address(args) is None\n"
            "import gateway.admin.api, gateway.runtime.manager, gateway.runtime.runtime, gateway.runtime.workers\n"
            "print(' '.join(sorted(m for m in sys.modules\n"
            "                      if m.split('.')[0] in ('grpc', 'aetcd') or m.startswith('gateway.store'))))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == []
