"""A follower's API: what it answers itself, and what it forwards to the leader.

Answered by every replica (from the shared store, so they work while there is no leader): GET of
`/api/v1/status`, `/info`, `/health`, `/openapi.json`, of the stored artifacts but workflows (breeds, blueprints,
slas, scales, escalations, conditions: a list, or one) and of `/api/v1/events` (a page of the kept events).

Everything else under `/api/v1` goes to the leader: every write, and the reads that need the engine's live view
(deployments with their instances and states, gateways with their status, workflows with theirs, metrics, the
event stream). The request goes as it came (method, path and query, headers with Authorization, body) and the
answer comes back as the leader gave it, streamed (the event stream too), with `X-Vamp-Leader` naming the leader
that answered. While no leader is known, or the leader cannot be reached, the answer is 503 naming the leader
(when one is known) with `Retry-After`: the lease's TTL, by when another replica leads.

A forwarded request carries `X-Vamp-Forwarded-By`: a replica that gets one while it does not lead answers 503
instead of forwarding it again, so two replicas that each believe the other leads never bounce a request.
"""
from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from control.replicas.leadership import Leadership
from control.store import STATIC_KINDS
from gateway.common.httpapi import Handler, respond

API = "/api/v1"
FORWARDED_BY = "X-Vamp-Forwarded-By"
LEADER = "X-Vamp-Leader"
CONNECT_TIMEOUT = 3.0           # seconds to reach the leader before the answer is 503
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length"})
SERVED_HERE = frozenset({f"{API}/status", f"{API}/info", f"{API}/health", f"{API}/openapi.json", f"{API}/events"})
ARTIFACT_ROUTES = frozenset({f"{API}/{{kind}}", f"{API}/{{kind}}/{{name}}"})
WORKFLOWS = "workflows"         # their documents carry the runner's status: the leader's


def served_here(request: web.Request) -> bool:
    """Whether a follower answers `request` itself (see the module docstring)."""
    if not request.path.startswith(API + "/") and request.path != API:
        return True                                   # /metrics, /health, /ready: this replica's own
    if request.method not in ("GET", "HEAD"):
        return False
    route = request.match_info.route
    canonical = route.resource.canonical if route.resource is not None else None
    if canonical in ARTIFACT_ROUTES:
        kind = request.match_info.get("kind")
        return kind in STATIC_KINDS and kind != WORKFLOWS
    return request.path in SERVED_HERE


class Forwarding:
    """The middleware: a follower's requests that need the leader go to it. Install it after the API's own
    (authentication first: a request refused here never reaches the leader); `close` on the app's cleanup."""

    __middleware_version__ = 1          # aiohttp's mark of a middleware taking (request, handler)

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        leadership = self.leadership
        if (leadership.role == "leader" and leadership.ready) or served_here(request):
            return await handler(request)
        if leadership.role == "leader":
            return _unavailable(request, leadership, leadership.leader, "this replica has just become the leader "
                                "and is resuming the deployments", retry_after=1)
        leader = leadership.leader if leadership.role == "follower" else None
        if request.headers.get(FORWARDED_BY):
            return _unavailable(request, leadership, leader, "it was forwarded here by another replica, and this "
                                "one does not lead either (the replicas disagree on the leader for a moment)")
        if leader is None or not leader.get("api_url"):
            return _unavailable(request, leadership, None, "no replica leads now")
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT))
        return await _proxy(request, self._session, leadership, leader)

    async def close(self, _: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()


async def _proxy(request: web.Request, session: aiohttp.ClientSession, leadership: Leadership,
                 leader: dict[str, Any]) -> web.StreamResponse:
    headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
    headers[FORWARDED_BY] = str(leadership.me.id)
    body = await request.read() if request.body_exists else None
    url = URL(str(leader["api_url"]).rstrip("/") + request.rel_url.raw_path_qs, encoded=True)   # as it came
    try:
        upstream = await session.request(request.method, url, headers=headers, data=body, allow_redirects=False)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return _unavailable(request, leadership, leader, f"the leader cannot be reached ({exc or type(exc).__name__})")
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        response.headers[LEADER] = str(leader.get("id", ""))
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError):
            return response         # the leader went away mid-answer: the client sees the answer end
        await response.write_eof()
        return response
    finally:
        upstream.release()


def _unavailable(request: web.Request, leadership: Leadership, leader: dict[str, Any] | None, why: str, *,
                 retry_after: int | None = None) -> web.StreamResponse:
    where = f"; the leader is {leader.get('id')} at {leader.get('api_url')}" if leader else ""
    return respond(request, {"error": f"this replica cannot serve the request now: {why}{where}",
                             "field": None, "leader": leader},
                   503, headers={"Retry-After": str(retry_after or leadership.ttl)})
