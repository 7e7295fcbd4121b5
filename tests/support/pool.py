"""`Processes`: what the pytest fixtures hand to tests to start backends and gateways, stopped together."""
from __future__ import annotations

from pathlib import Path

from .processes import BackendProcess, FleetGatewayProcess, GatewayProcess, ManagedProcess


class Processes:
    """Starts processes in one work directory and stops them all at the end (newest first)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[ManagedProcess] = []

    def backend(self, kind: str, *names: str, extra_args: tuple[str, ...] = ()) -> BackendProcess:
        """A backend process of `kind` with one listener per name (see tests/backends.py)."""
        process = BackendProcess(kind, names, self.workdir, extra_args=extra_args)
        self.started.append(process)
        return process.start()

    def gateway(self, config: dict, *, extra_args: tuple[str, ...] = (), token: str | None = None
                ) -> GatewayProcess:
        """A gateway process serving `config` (a dict in the YAML shape), ready when this returns; `token` is
        the one the harness sends (see GatewayProcess)."""
        gateways = sum(isinstance(p, GatewayProcess) for p in self.started)
        process = GatewayProcess(config, self.workdir / f"gateway-{gateways + 1}", extra_args=extra_args,
                                 token=token)
        self.started.append(process)
        return process.start()

    def fleet_gateway(self, store_url: str, bind: str, *, seed: dict | None = None,
                      extra_args: tuple[str, ...] = ()) -> FleetGatewayProcess:
        """A replica of the fleet at `store_url` with its gateways on `bind`, ready when this returns."""
        gateways = sum(isinstance(p, GatewayProcess) for p in self.started)
        process = FleetGatewayProcess(store_url, bind, self.workdir / f"gateway-{gateways + 1}", seed=seed,
                                      extra_args=extra_args)
        self.started.append(process)
        return process.start()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()

    def logs(self) -> list[tuple[str, str]]:
        """(title, stderr) of every process started, for the report of a failed test."""
        return [(f"stderr of {p.label} (pid {p.pid})", p.stderr_text())
                for p in self.started if p.process is not None]
