"""A small client of Vamp's API for scripts, above all workflow scripts: read metrics and health, read a
gateway and set its route weights, post and read events, scale a service, suspend the workflow itself. The
standard library only, so any Python that can import Vamp runs it. See docs/workflows.md, "The client library".

    from control.client import Vamp

    vamp = Vamp()           # the API and token from VAMP_API_URL and VAMP_TOKEN, as the workflow runner sets them
    health = vamp.health("sava/sava/webport", route="sava/sava/sava:1.1.0/webport", window="60s")
    if health is not None and health >= 0.99:
        vamp.set_weights("sava/sava/webport", {"sava/sava/sava:1.0.0/webport": 50,
                                               "sava/sava/sava:1.1.0/webport": 50})
    vamp.event(["canary:step"], {"health": health})     # also tagged workflows:NAME inside a workflow

A failed request raises `VampError` with the status, the API's message and the field at fault. Names keep their
`/` in paths, as the API reads them (`/api/v1/gateways/sava/9050`).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
API = "/api/v1"
URL_VARIABLES = ("VAMP_API_URL", "VAMP_API")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))    # the token goes to the URL given only


class VampError(Exception):
    def __init__(self, status: int | None, message: str, field: str | None = None) -> None:
        super().__init__(f"{status or 'no answer'}: {message}" + (f" ({field})" if field else ""))
        self.status = status
        self.message = message
        self.field = field


class Vamp:
    """The API at `url` (default $VAMP_API_URL, then $VAMP_API, then http://127.0.0.1:8080) with `token` (default
    $VAMP_TOKEN; empty: none). `workflow` is the workflow this script runs for ($VAMP_WORKFLOW_NAME), if any."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        found = next((os.environ[name] for name in URL_VARIABLES if os.environ.get(name)), None)
        self.url = (url or found or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("VAMP_TOKEN") or None
        self.timeout = timeout
        self.workflow = os.environ.get("VAMP_WORKFLOW_NAME") or None

    # -- requests ------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """One request to `API + path`: the decoded JSON answer (None for an empty one), or VampError."""
        target = self.url + API + path
        if query:
            target += "?" + urllib.parse.urlencode({key: value for key, value in query.items() if value is not None},
                                                   doseq=True)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(target, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except OSError as exc:
            raise VampError(None, f"cannot reach {self.url}: {getattr(exc, 'reason', None) or exc}") from None
        return json.loads(payload) if payload else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, **query)

    # -- metrics and health --------------------------------------------------------------------------------
    def metric(self, gateway: str, metric: str, *, route: str | None = None, window: str = "60s") -> float | None:
        """`metric` (rate, requests, error_rate, p99, …) of a gateway, or of one of its routes, over `window`;
        None when there is no value (no requests in the window)."""
        return _value(self.get(_metrics_path("metrics", gateway, route) + f"/{_segment(metric)}", window=window))

    def health(self, gateway: str, *, route: str | None = None, window: str = "60s") -> float | None:
        """The share of non-5xx responses, 0–1, of a gateway or one of its routes over `window`; None without
        requests."""
        return _value(self.get(_metrics_path("health", gateway, route), window=window))

    # -- gateways and services -----------------------------------------------------------------------------
    def gateway(self, name: str) -> dict[str, Any]:
        return self.get(f"/gateways/{_name(name)}")

    def weights(self, gateway: str) -> dict[str, float | None]:
        """Each route's weight in per cent (None: a route that shares what the weighted ones leave)."""
        routes = self.gateway(gateway).get("routes") or {}
        return {route: _percent(body.get("weight")) if isinstance(body, dict) else None
                for route, body in routes.items()}

    def set_weights(self, gateway: str, weights: Mapping[str, float | int | str]) -> dict[str, Any]:
        """Set route weights (per cent, as numbers or "12.5%") in one change of the gateway; routes not named keep
        theirs. The gateway refuses weights that do not add up."""
        routes = {route: {"weight": weight if isinstance(weight, str) else f"{weight:g}%"}
                  for route, weight in weights.items()}
        return self.request("PATCH", f"/gateways/{_name(gateway)}", {"routes": routes})

    def instances(self, deployment: str, cluster: str, service: str) -> int:
        return int(self.get(_scale_path(deployment, cluster, service))["instances"])

    def set_instances(self, deployment: str, cluster: str, service: str, instances: int) -> dict[str, Any]:
        """Scale a service (instances that go are drained first)."""
        path = _scale_path(deployment, cluster, service)
        scale = {key: value for key, value in self.get(path).items() if key not in ("kind", "name")}
        return self.request("PUT", path, {**scale, "instances": instances})

    # -- events ---------------------------------------------------------------------------------------------
    def event(self, tags: Iterable[str], value: Any = None, type: str = "event") -> dict[str, Any]:
        """Post an event; inside a workflow it is also tagged `workflows:NAME`."""
        tags = list(tags) + ([f"workflows:{self.workflow}"] if self.workflow else [])
        return self.request("POST", "/events", {"tags": tags, "value": value, "type": type})

    def events(self, tags: Iterable[str] = (), *, per_page: int = 30) -> list[dict[str, Any]]:
        """The newest events carrying every tag in `tags`, newest first."""
        return self.get("/events", tag=list(tags), per_page=per_page)

    @staticmethod
    def triggering_event() -> dict[str, Any] | None:
        """The event this run of an event-scheduled workflow is for ($VAMP_EVENT), else None."""
        text = os.environ.get("VAMP_EVENT")
        return json.loads(text) if text else None

    # -- the workflow itself ----------------------------------------------------------------------------------
    def suspend(self, workflow: str | None = None) -> dict[str, Any]:
        """Suspend a workflow (this one by default): it stops, and stays stopped until resumed."""
        name = workflow or self.workflow
        if not name:
            raise VampError(None, "no workflow to suspend: name one (VAMP_WORKFLOW_NAME is not set)")
        return self.request("PUT", f"/workflows/{_segment(name)}/status", "suspended")


def _error(status: int, raw: bytes) -> VampError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return VampError(status, str(body["error"]), body.get("field"))
    return VampError(status, raw.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}")


def _value(answer: Any) -> float | None:
    """A metric's value: the answer itself, or its `value`."""
    if isinstance(answer, dict):
        answer = answer.get("value")
    return float(answer) if isinstance(answer, (int, float)) and not isinstance(answer, bool) else None


def _percent(weight: Any) -> float | None:
    if isinstance(weight, str) and weight.strip().endswith("%"):
        return float(weight.strip()[:-1])
    return float(weight) if isinstance(weight, (int, float)) and not isinstance(weight, bool) else None


def _name(name: str) -> str:
    """A gateway or route name as a path: its `/` kept."""
    return urllib.parse.quote(name, safe="/:")


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe=":")


def _metrics_path(kind: str, gateway: str, route: str | None) -> str:
    path = f"/{kind}/gateways/{_name(gateway)}"
    return path + f"/routes/{_name(route)}" if route is not None else path


def _scale_path(deployment: str, cluster: str, service: str) -> str:
    return (f"/deployments/{_segment(deployment)}/clusters/{_segment(cluster)}/services/{_segment(service)}"
            "/scale")
