"""`vamp run` as a real process for the end-to-end tests, the `vamp` CLI against it, and what psutil tells
about the instances it runs.

    platform = PlatformProcess(tmp_path / "state", tmp_path).start()    # ready: GET /api/v1/deployments is 200
    platform.vamp("deploy", "sava-1.0.yaml", "--name", "sava", "--api", platform.api_url)
    status, document = platform.api("GET", "/api/v1/deployments/sava")
    platform.kill()                                                     # SIGKILL, as a crash would

Every wait polls with a deadline; `stop()` is SIGTERM (the platform stops its instances), then SIGKILL.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from .processes import LOOPBACK, POLL_INTERVAL, ManagedProcess, free_port, run_cli
from .waiting import eventually

VAMP = [sys.executable, "-m", "control"]
DEMO_MODULE = "control.demo.sava"


class PlatformProcess(ManagedProcess):
    """`python -m control run --state-dir DIR --api 127.0.0.1:PORT`, its output in files of `workdir`."""

    label = "vamp run"

    def __init__(self, state_dir: Path, workdir: Path, *, api_port: int | None = None,
                 ready_timeout: float = 20.0, log_name: str = "platform", extra_args: tuple[str, ...] = (),
                 token: str | None = None) -> None:
        self.state_dir = state_dir
        self.api_port = api_port or free_port()
        self.ready_timeout = ready_timeout
        self.token = token          # what `api()` sends; how the process gets it is up to `extra_args`
        super().__init__([*VAMP, "run", "--state-dir", str(state_dir), "--api", f"{LOOPBACK}:{self.api_port}",
                          *extra_args], workdir, log_name=log_name)

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    def start(self) -> "PlatformProcess":
        self.spawn()
        self.wait_until(lambda: self.api("GET", "/api/v1/deployments")[0] == 200, self.ready_timeout,
                        "answering GET /api/v1/deployments")
        return self

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, and wait until it is gone."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout)

    # -- the API and the CLI ---------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, *, yaml_text: str | None = None,
            timeout: float = 10.0) -> tuple[int | None, Any]:
        """(status, decoded JSON answer or None) of one API request with `body` as JSON, or `yaml_text` as
        application/x-yaml; HTTP errors are returned, not raised; (None, None) when the API does not answer."""
        if yaml_text is not None:
            data, content_type = yaml_text.encode(), "application/x-yaml"
        else:
            data, content_type = (None if body is None else json.dumps(body).encode()), "application/json"
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.api_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        except OSError:
            return None, None
        return status, json.loads(payload) if payload else None

    def vamp(self, *args: str, timeout: float = 30.0) -> str:
        """Runs `python -m control ARGS` (the `vamp` command) to completion; its stdout, or AssertionError with
        its exit code and stderr when it fails."""
        result: subprocess.CompletedProcess = run_cli(list(args), timeout=timeout, executable=VAMP)
        assert result.returncode == 0, f"vamp {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        return result.stdout

    def vamp_json(self, *args: str, timeout: float = 30.0) -> Any:
        """`vamp ARGS -o json`, decoded."""
        return json.loads(self.vamp(*args, "-o", "json", timeout=timeout))

    # -- its instances -----------------------------------------------------------------------------------
    def demo_processes(self, version: str | None = None) -> list[psutil.Process]:
        """The running `control.demo.sava` processes started by this platform (of `version`, if given)."""
        found = []
        for child in psutil.Process(self.pid).children(recursive=True):
            try:
                cmdline = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if DEMO_MODULE in cmdline and (version is None or version in cmdline):
                found.append(child)
        return found

    def listening_process(self, port: int) -> psutil.Process:
        """The process started by this platform that listens on 127.0.0.1:`port`."""
        for child in psutil.Process(self.pid).children(recursive=True):
            try:
                connections = child.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
                return child
        raise AssertionError(f"no process of the platform listens on port {port}")


def alive(process: psutil.Process) -> bool:
    """True while `process` (the same one: psutil checks its start time) runs and is not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(condition, timeout: float, what: str) -> None:
    """Polls `condition()` until it is true; AssertionError naming `what` after `timeout` seconds."""
    eventually(condition, timeout, what, interval=POLL_INTERVAL)
