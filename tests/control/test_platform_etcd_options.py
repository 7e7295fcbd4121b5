"""`vamp run`'s etcd options: a bad store URL, a lease too short or not whole seconds, an --api-url that is not a
URL, or the replica options without --store are refused with exit code 2, naming the option, before anything
starts (not even the state directory's lock)."""
from __future__ import annotations

import pytest

from control.cli import main


@pytest.mark.parametrize("arguments, says", [
    (["--leader-ttl", "3s"], "go with --store"),
    (["--api-url", "http://a:1"], "go with --store"),
    (["--etcd-user", "vamp"], "go with --store"),
    (["--store", "http://127.0.0.1:2379/vamp"], "etcd://HOST:PORT"),
    (["--store", "etcd://user:pw@127.0.0.1:2379/vamp"], "credentials do not go in the store URL"),
    (["--store", "etcd://127.0.0.1:2379/vamp", "--api-url", "vamp-a:8080"], "--api-url expects"),
    (["--store", "etcd://127.0.0.1:2379/vamp", "--etcd-user", "vamp", "--etcd-password-file", "/nonexistent"],
     "cannot read the password file"),
])
def test_bad_replica_options_exit_2_naming_what_is_wrong(arguments, says, tmp_path, capsys):
    state = tmp_path / "state"
    assert main(["run", "--state-dir", str(state), *arguments]) == 2
    assert says in capsys.readouterr().err
    assert not state.exists()


@pytest.mark.parametrize("ttl", ["1s", "2.5s", "soon"])
def test_the_leaders_lease_is_whole_seconds_of_at_least_two(ttl, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--state-dir", str(tmp_path), "--store", "etcd://127.0.0.1:2379/vamp", "--leader-ttl", ttl])
    assert exited.value.code == 2 and "--leader-ttl" in capsys.readouterr().err


@pytest.mark.parametrize("ports", ["40000", "41000-40000", "0-10", "40000-70000", "a-b"])
def test_internal_ports_are_a_range_of_ports(ports, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--state-dir", str(tmp_path / "state"), "--internal-ports", ports])
    assert exited.value.code == 2 and "--internal-ports" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
