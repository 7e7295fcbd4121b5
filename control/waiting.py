"""Waiting, on the command line, until the services of a deployment are `deployed`.

`vamp deploy` and `vamp scale` return once the API says so: every service (or the one scaled) has as many
ready instances as its scale asks for, and the gateway routes to them. Meanwhile one progress line goes to
stderr (rewritten in place on a terminal, a new line per change otherwise). A service that `failed` ends
the wait at once, as does the deadline; both are a CommandError with exit code 1 naming the service.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from urllib.parse import quote

from gateway import AdminClient
from gateway.common.cli import CommandError

DEFAULT_TIMEOUT = 120.0       # seconds
POLL = 0.2                    # seconds between two looks at the deployment


def add_options(parser: argparse.ArgumentParser) -> None:
    """`--timeout SECONDS` and `--no-wait` of the commands that wait."""
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT,
                        help="seconds to wait until the instances are ready and the gateway routes to them; "
                             "exit 1 if they are not by then (default %(default)g)")
    parser.add_argument("--no-wait", action="store_true",
                        help="return as soon as the API accepted the change")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def until_deployed(client: AdminClient, deployment: str, timeout: float, service: str | None = None
                   ) -> dict[str, Any]:
    """Poll GET /api/v1/deployments/DEPLOYMENT until every service (or only `service`, "cluster/breed") is
    deployed; return the deployment's last document."""
    deadline = time.monotonic() + timeout
    progress = _Progress()
    try:
        while True:
            document = client.request("GET", f"/api/v1/deployments/{quote(deployment, safe='')}").data or {}
            states = _states(document, deployment, service)
            failed = [(name, reason) for name, state, reason in states if state == "failed"]
            if failed:
                name, reason = failed[0]
                raise CommandError(f"{name} failed: {reason}", 1)
            waiting = [(name, state, reason) for name, state, reason in states if state != "deployed"]
            if not waiting:
                return document
            if time.monotonic() >= deadline:
                raise CommandError(f"not ready after {timeout:g}s: " + "; ".join(
                    f"{name} is {state}" + (f" ({reason})" if reason else "") for name, state, reason in waiting), 1)
            progress.show("waiting for " + "; ".join(
                f"{name}: {reason or state}" for name, state, reason in waiting))
            time.sleep(max(0.0, min(POLL, deadline - time.monotonic())))
    finally:
        progress.end()


def _states(document: dict[str, Any], deployment: str, only: str | None) -> list[tuple[str, str, str | None]]:
    """(deployment/cluster/breed, state, reason) of the services in a deployment document."""
    states = []
    for cluster, body in (document.get("clusters") or {}).items():
        for service in body.get("services") or []:
            name = f"{cluster}/{(service.get('breed') or {}).get('name')}"
            if only is None or name == only:
                states.append((f"{deployment}/{name}", service.get("state", "deploying"), service.get("reason")))
    if only is not None and not states:
        raise CommandError(f"no service {only!r} in deployment {deployment!r} any more", 1)
    return states


class _Progress:
    """One line on stderr: rewritten in place on a terminal, printed again when it changes otherwise."""

    def __init__(self) -> None:
        self.shown: str | None = None
        self.terminal = sys.stderr.isatty()

    def show(self, line: str) -> None:
        if line == self.shown:
            return
        self.shown = line
        if self.terminal:
            sys.stderr.write(f"\r\033[K{line}")
        else:
            sys.stderr.write(f"{line}\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.terminal and self.shown is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
