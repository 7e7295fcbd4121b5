"""Real processes on loopback for the integration tests: the gateway under test and the test backends.

Every wait here polls with a deadline (never a fixed sleep), and every process is stopped with SIGTERM, then
killed if it does not exit in time.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .waiting import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.02      # seconds between two checks of a condition that is polled with a deadline
STOP_TIMEOUT = 10.0       # seconds a process gets to exit after SIGTERM before it is killed


_HANDED_OUT: set[int] = set()     # ports free_port gave this test run: never given twice


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that no earlier call of this test run
    returned: the kernel may offer a port again as soon as its probe socket closes, so two calls for the same
    process (a gateway's port and its admin port) could otherwise get the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ProcessError(RuntimeError):
    """A managed process failed to start or exited early; the message carries its stderr."""


class ManagedProcess:
    """A child process with stdout/stderr in files, started and stopped by the harness."""

    label = "process"

    def __init__(self, args: list[str], workdir: Path, *, log_name: str) -> None:
        self.args = args
        self.workdir = workdir
        self.stdout_path = workdir / f"{log_name}.stdout"
        self.stderr_path = workdir / f"{log_name}.stderr"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def spawn(self, *, append: bool = False) -> None:
        """Start the process; `append` keeps what an earlier run wrote to its stdout and stderr files."""
        mode = "ab" if append else "wb"
        with open(self.stdout_path, mode) as out, open(self.stderr_path, mode) as err:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            cwd=REPO_ROOT)

    def wait_until(self, condition, timeout: float, what: str) -> None:
        """Polls `condition()` until true; fails early, with stderr, if the process exits meanwhile."""
        def alive_and_met() -> bool:
            if self.process.poll() is not None:
                raise ProcessError(f"{self.label} exited with {self.process.returncode} before {what}:\n"
                                   f"{self.stderr_text()}")
            return condition()
        try:
            eventually(alive_and_met, timeout, what, interval=POLL_INTERVAL)
        except AssertionError:
            raise ProcessError(f"{self.label} not {what} after {timeout} s:\n{self.stderr_text()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL after the deadline; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is not None:
            sys.stderr.write(f"--- stderr of {self.label} (pid {self.pid}) ---\n{self.stderr_text()}\n")

    def start(self):
        raise NotImplementedError


class BackendProcess(ManagedProcess):
    """`python -m tests.backends KIND` with one listener per name, each on its own free port."""

    def __init__(self, kind: str, names: tuple[str, ...], workdir: Path, *, extra_args: tuple[str, ...] = (),
                 start_timeout: float = 15.0) -> None:
        self.kind = kind
        self.names = names or (kind,)
        self.ports = {name: free_port() for name in self.names}
        self.record_path = workdir / f"record-{'-'.join(self.names)}.jsonl" if kind == "record" else None
        args = [sys.executable, "-m", "tests.backends", kind]
        for name, port in self.ports.items():
            args += ["--port", str(port), "--name", name]
        if self.record_path is not None:
            self.record_path.touch()
            args += ["--record", str(self.record_path)]
        super().__init__(args + list(extra_args), workdir, log_name=f"backend-{kind}-{'-'.join(self.names)}")
        self.label = f"backend {kind} ({', '.join(self.names)})"
        self.start_timeout = start_timeout

    def start(self) -> "BackendProcess":
        self.spawn()
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        for port in self.ports.values():
            self.wait_until(lambda port=port: port_accepts(port), self.start_timeout, f"accepting on port {port}")

    def port(self, name: str | None = None) -> int:
        return self.ports[name or self.names[0]]

    def address(self, name: str | None = None) -> str:
        """`127.0.0.1:PORT`, the form gateway targets take."""
        return f"{LOOPBACK}:{self.port(name)}"

    # record backends
    def records(self) -> list[dict]:
        """Every request the record backend received so far, oldest first."""
        text = self.record_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class Metrics:
    """A scrape of /metrics, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def find(self, name: str, **labels: str) -> list:
        """Samples with that exact sample name whose labels include `labels`."""
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the single sample matching, None when there is none (several: an error)."""
        found = self.find(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{len(found)} samples of {name} match {labels}: {found}")
        return found[0].value if found else None


class GatewayProcess(ManagedProcess):
    """`python -m gateway gateway --config FILE --admin 127.0.0.1:PORT --state-dir DIR` with a config dict.

    Ready when `GET /ready` on the admin address answers 200. `token` is what the harness's own admin
    requests (`admin_get`, `admin_status`, `metrics`) send as bearer token; how the process gets its token
    (`--token`, `--token-file`, ...) is up to `extra_args`.
    """

    label = "gateway"

    def __init__(self, config: dict, workdir: Path, *, ready_timeout: float = 20.0,
                 extra_args: tuple[str, ...] = (), token: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.config = config
        self.config_path = workdir / "gateways.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.state_dir = workdir / "state"
        self.admin_port = free_port()
        self.ready_timeout = ready_timeout
        args = [sys.executable, "-m", "gateway", "gateway", "--config", str(self.config_path),
                "--admin", self.admin, "--state-dir", str(self.state_dir), *extra_args]
        super().__init__(args, workdir, log_name="gateway")

    @property
    def admin(self) -> str:
        return f"{LOOPBACK}:{self.admin_port}"

    def admin_url(self, path: str) -> str:
        return f"http://{self.admin}{path}"

    @staticmethod
    def url(port: int, path: str = "/") -> str:
        """URL of a gateway of this process, by the port it listens on."""
        return f"http://{LOOPBACK}:{port}{path}"

    def start(self) -> "GatewayProcess":
        self.spawn()
        self.wait_until(lambda: self.admin_status("/ready") == 200, self.ready_timeout, "ready")
        return self

    def admin_status(self, path: str) -> int | None:
        """Status of GET on the admin API, None when it does not answer."""
        try:
            with urllib.request.urlopen(self._admin_request(path), timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def admin_get(self, path: str) -> bytes:
        with urllib.request.urlopen(self._admin_request(path), timeout=5) as response:
            return response.read()

    def _admin_request(self, path: str) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return urllib.request.Request(self.admin_url(path), headers=headers)

    def metrics(self) -> Metrics:
        return Metrics(self.admin_get("/metrics").decode())

    def rss(self) -> int:
        """Resident memory in bytes of the gateway and its worker processes, if any."""
        proc = psutil.Process(self.pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total


class FleetGatewayProcess(GatewayProcess):
    """`python -m gateway gateway --config-store URL --bind ADDRESS --admin 127.0.0.1:PORT --state-dir DIR`: one
    replica of a fleet (docs/fleet.md), its gateways on `bind` (127.0.0.2, 127.0.0.3, … side by side), `seed`
    (a config dict) given as --config. Ready when `GET /ready` answers 200."""

    label = "fleet gateway"

    def __init__(self, store_url: str, bind: str, workdir: Path, *, seed: dict | None = None,
                 ready_timeout: float = 20.0, extra_args: tuple[str, ...] = (), token: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.config = seed
        self.store_url = store_url
        self.bind = bind
        self.state_dir = workdir / "state"
        self.admin_port = free_port()
        self.ready_timeout = ready_timeout
        args = [sys.executable, "-m", "gateway", "gateway", "--config-store", store_url, "--bind", bind,
                "--admin", self.admin, "--state-dir", str(self.state_dir)]
        if seed is not None:
            self.config_path = workdir / "gateways.yaml"
            self.config_path.write_text(yaml.safe_dump(seed, sort_keys=False))
            args += ["--config", str(self.config_path)]
        ManagedProcess.__init__(self, args + list(extra_args), workdir, log_name="gateway")
        self.label = f"fleet gateway on {bind}"

    def restart(self) -> "FleetGatewayProcess":
        """Stop (SIGTERM) and start again with the same state directory; its logs go on in the same files."""
        self.stop()
        self.spawn(append=True)
        self.wait_until(lambda: self.admin_status("/ready") == 200, self.ready_timeout, "ready again")
        return self

    def store_status(self) -> dict:
        """`config_store` of its `GET /api/v1/status`."""
        return json.loads(self.admin_get("/api/v1/status"))["config_store"]


class PeakRss:
    """Samples a gateway's RSS in a background thread while a `with` block runs: `.baseline` on entry,
    `.peak` the maximum seen, `.growth` the difference."""

    def __init__(self, gateway: GatewayProcess, interval: float = 0.005, max_seconds: float = 120.0) -> None:
        self.gateway = gateway
        self.interval = interval
        self.max_seconds = max_seconds
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.peak = max(self.peak, self.gateway.rss())
            except psutil.NoSuchProcess:
                return
            self.samples += 1
            self._stop.wait(self.interval)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> "PeakRss":
        self.baseline = self.peak = self.gateway.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.gateway.rss())


def run_cli(args: list[str], timeout: float = 30.0, executable: list[str] | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the CLI to completion (`python -m gateway ARGS` unless `executable` is given), with `env`
    added to this process's environment."""
    command = (executable or [sys.executable, "-m", "gateway"]) + args
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
