"""A client of the gateway's admin API for the tests (urllib): JSON or YAML bodies both ways, an optional
bearer token, and every answer — errors included — as an `AdminResponse` to assert on.

    api = AdminApi(gw.admin_url(""), token="s3cret")
    api.patch("sava/9050", {"routes": {"b": {"weight": "10%"}}}).status == 200
    api.get("sava/9050", accept=YAML).document()["routes"]
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml

JSON = "application/json"
YAML = "application/x-yaml"
GATEWAYS = "/api/v1/gateways"
USE_CLIENT_TOKEN = object()     # `token=` default of a request: the client's own token (None sends none)



@dataclass
class AdminResponse:
    status: int
    headers: dict[str, str]          # names lower case
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type, without parameters (`application/json`)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body)

    def yaml(self) -> Any:
        return yaml.safe_load(self.body)

    def document(self) -> Any:
        """The body decoded by its Content-Type (YAML or JSON)."""
        return self.yaml() if "yaml" in self.content_type else self.json()


def gateway_path(name: str) -> str:
    """`/api/v1/gateways/NAME`, with the `/` of names like `sava/9050` kept as path separators."""
    return f"{GATEWAYS}/{urllib.parse.quote(name, safe='/')}"


def encode(body: Any, content_type: str) -> bytes:
    """A body as bytes: bytes and str are sent as they are; anything else as JSON or YAML."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if "yaml" in content_type:
        return yaml.safe_dump(body, sort_keys=False).encode()
    return json.dumps(body).encode()


class AdminApi:
    """Requests to the admin API at `base_url` (e.g. `http://127.0.0.1:9090`)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = JSON,
                accept: str | None = None, token: Any = USE_CLIENT_TOKEN, validate_only: bool = False,
                headers: dict[str, str] | None = None) -> AdminResponse:
        """One request; `body` None sends no body (and no Content-Type); `token` None sends no token."""
        url = self.base_url + path + ("?validate_only=true" if validate_only else "")
        all_headers = dict(headers or {})
        data = None
        if body is not None:
            data = encode(body, content_type)
            all_headers["Content-Type"] = content_type
        if accept is not None:
            all_headers["Accept"] = accept
        token = self.token if token is USE_CLIENT_TOKEN else token
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return AdminResponse(response.status, _headers(response.headers), response.read())
        except urllib.error.HTTPError as error:
            with error:
                return AdminResponse(error.code, _headers(error.headers), error.read())

    # the rows of the API
    def list(self, **options: Any) -> AdminResponse:
        return self.request("GET", GATEWAYS, **options)

    def get(self, name: str, **options: Any) -> AdminResponse:
        return self.request("GET", gateway_path(name), **options)

    def create(self, document: Any, **options: Any) -> AdminResponse:
        return self.request("POST", GATEWAYS, document, **options)

    def put(self, name: str, document: Any, **options: Any) -> AdminResponse:
        return self.request("PUT", gateway_path(name), document, **options)

    def patch(self, name: str, patch: Any, **options: Any) -> AdminResponse:
        return self.request("PATCH", gateway_path(name), patch, **options)

    def delete(self, name: str, **options: Any) -> AdminResponse:
        return self.request("DELETE", gateway_path(name), **options)

    def document(self, name: str) -> dict:
        """GET of one gateway that must exist, as a dict."""
        response = self.get(name)
        assert response.status == 200, f"GET {name}: {response.status} {response.body!r}"
        return response.json()


def _headers(message) -> dict[str, str]:
    return {key.lower(): value for key, value in message.items()}


