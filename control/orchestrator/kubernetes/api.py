"""Calls to the Kubernetes API as plain JSON, and what their errors mean.

The driver calls kubernetes_asyncio's generated methods without their models: `call` sends a dict and returns
the answer as a dict (field names as the API spells them), and raises `ApiException` (status, reason, body)
for an answer outside 2xx; `stream` opens a watch and hands its raw response. `describe` says what an error is
in a few words ("403 Forbidden: deployments.apps is forbidden: …"), `transient` whether trying again later
may help by itself (no connection, a timeout, 409, 429, 5xx); `gateway.common.backoff.Backoff` says how long
to wait before that.
"""
from __future__ import annotations

import asyncio
import http
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

REQUEST_TIMEOUT = 30.0        # seconds for one call that is not a watch
CONNECT_TIMEOUT = 10.0        # seconds to connect, for a watch
WATCH_READ_SLACK = 30.0       # a watch reads nothing for its timeoutSeconds plus this: the connection is dead

ApiCall = Callable[..., Awaitable[Any]]
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def error(status: int, reason: str | None, body: bytes | str | None) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = body.decode("utf-8", "replace") if isinstance(body, bytes) else body  # type: ignore[assignment]
    return exc


async def call(method: ApiCall, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a generated API method (a dict as its body) and return the answer as a dict."""
    response = await method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
    try:
        body = await response.read()
    finally:
        response.release()
    if not 200 <= response.status < 300:
        raise error(response.status, response.reason, body)
    answer = json.loads(body) if body else {}
    return answer if isinstance(answer, dict) else {}


async def stream(method: ApiCall, *args: Any, timeout_seconds: int, **kwargs: Any) -> aiohttp.ClientResponse:
    """Open a watch (`method` a list method): the response, whose lines are events. ApiException when refused."""
    timeout = aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT,
                                    sock_read=timeout_seconds + WATCH_READ_SLACK)
    response = await method(*args, watch=True, timeout_seconds=timeout_seconds, _preload_content=False,
                            _request_timeout=timeout, **kwargs)
    if not 200 <= response.status < 300:
        try:
            body = await response.read()
        finally:
            response.release()
        raise error(response.status, response.reason, body)
    return response


def status_of(exc: ApiException) -> dict[str, Any]:
    """The Status object an error carries ({} when its body is not one)."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def describe(exc: BaseException) -> str:
    """An error in a few words: "403 Forbidden: <the API's message>", "409 Conflict: …", or the transport's."""
    if isinstance(exc, ApiException):
        status = status_of(exc)
        try:
            phrase = status.get("reason") or http.HTTPStatus(exc.status).phrase
        except ValueError:
            phrase = exc.reason or "error"
        message = status.get("message") or (exc.body if isinstance(exc.body, str) and exc.body.strip() else None)
        message = message or exc.reason or ""
        return f"{exc.status} {phrase}: {message.strip()}" if message else f"{exc.status} {phrase}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def transient(exc: BaseException) -> bool:
    """Whether the error may go away by itself: the API unreachable or overloaded (or 409, another writer)."""
    if isinstance(exc, ApiException):
        return exc.status in (0, 409, 429) or exc.status >= 500
    return isinstance(exc, TRANSPORT_ERRORS)


