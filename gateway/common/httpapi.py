"""The conventions Vamp's HTTP APIs share (the gateway's admin API and the control plane's API): JSON by
default and YAML both ways (`Accept` / `Content-Type: application/x-yaml`), errors as
`{"error": "...", "field": ... | null}`, `?validate_only=true`, bodies nested at most 64 levels deep, and the
bearer token that every request but `/health`, `/ready` and the web UI's files (`/ui/…`: they hold no data) needs
when one is set (`/metrics` too, unless it is made public)."""
from __future__ import annotations

import hmac
import json
from typing import Any
from collections.abc import Awaitable, Callable

import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.common.errors import Conflict, Invalid, NotFound, RequestError, Unavailable
from gateway.common.yamltext import MAX_DEPTH, TOO_DEEP, YamlTextError, documents, single_document

YAML_TYPES = ("application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json", "application/merge-patch+json", "")
OPEN_PATHS = frozenset({"/health", "/ready"})     # probes: never need the token
UI_PATHS = ("/ui", "/ui/")                         # the web UI's page and files (gateway.ui): the page asks for it
METRICS_PATH = "/metrics"
TOKEN_REQUIRED = "a valid 'Authorization: Bearer <token>' header is required"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS: dict[type[RequestError], int] = {Invalid: 400, NotFound: 404, Conflict: 409, Unavailable: 503}


def status_of(error: RequestError) -> int:
    """The HTTP status that answers `error`: its type's (the nearest in its classes)."""
    return next(STATUS[kind] for kind in type(error).__mro__ if kind in STATUS)


class ApiError(Exception):
    """An error of the HTTP exchange itself (the token, the body's type or syntax, a query parameter): the
    domain's errors are gateway.common.errors'."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def wants_yaml(request: web.Request) -> bool:
    return any(kind in request.headers.get("Accept", "") for kind in YAML_TYPES)


def respond(request: web.Request, data: Any, status: int = 200, headers: dict[str, str] | None = None
            ) -> web.Response:
    if wants_yaml(request):
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return web.Response(text=text, status=status, content_type="application/x-yaml", headers=headers)
    return web.json_response(data, status=status, headers=headers,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def read_body(request: web.Request, *, all_documents: bool = False) -> Any:
    """The body as data. With `all_documents`, a YAML body is read as a list of its (non-empty) documents;
    a JSON body is returned as it is."""
    kind = request.content_type if request.headers.get("Content-Type") else ""
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 text (byte {exc.start})") from exc
    if kind in YAML_TYPES:
        try:
            if all_documents:
                return [data for _, data in documents(text, "body") if data is not None]
            return single_document(text, "body")[1]
        except YamlTextError as exc:
            where = f" at line {exc.line}" if exc.line is not None else ""
            raise ApiError(400, f"the body is not valid YAML{where}: {exc.message}") from exc
    if kind not in JSON_TYPES:
        raise ApiError(415, f"unsupported Content-Type {kind!r}: send application/json or application/x-yaml")
    try:
        data = json.loads(text)
    except RecursionError:
        raise ApiError(400, f"the body is {TOO_DEEP}") from None
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc
    if _deeper_than(data, MAX_DEPTH):
        raise ApiError(400, f"the body is {TOO_DEEP}")
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether lists and objects in `data` nest more than `limit` levels."""
    pending = [(data, 1)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, (dict, list)):
            if level > limit:
                return True
            pending.extend((item, level + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def query_flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter: `true`, `1` or present without a value; `false`, `0` or absent."""
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise ApiError(400, f"{name} must be true or false", name)
    return value in ("true", "1", "")


def validate_only_requested(request: web.Request) -> bool:
    return query_flag(request, "validate_only")


def token_ok(request: web.Request, token: str) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _ui_file(path: str) -> bool:
    return path == UI_PATHS[0] or path.startswith(UI_PATHS[1])


def api_middleware(token: str | None, *, public_metrics: bool = False) -> Middleware:
    """With a token, every request but the probes (and `/metrics` when `public_metrics`) needs it, reads
    included: the gateways name their targets and addresses. ApiErrors, the domain's RequestErrors
    (gateway.common.errors) and aiohttp's own 4xx/5xx become error documents."""
    open_paths = OPEN_PATHS | ({METRICS_PATH} if public_metrics else frozenset())

    @web.middleware
    async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if token and request.path not in open_paths and not _ui_file(request.path) \
                    and not token_ok(request, token):
                raise ApiError(401, TOKEN_REQUIRED)
            return await handler(request)
        except ApiError as exc:
            challenge = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return respond(request, {"error": exc.message, "field": exc.field}, exc.status, challenge)
        except RequestError as exc:
            return respond(request, {"error": exc.message, "field": exc.field}, status_of(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return respond(request, {"error": exc.reason, "field": None}, exc.status)
    return errors_and_auth
