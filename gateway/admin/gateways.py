"""The gateway API's handlers, written once for every source of configuration (gateway.config.source): the
standalone gateway's admin API serves them over its `ConfigManager`, the platform's API over its `Engine`.

    GET    {prefix}                 every gateway
    POST   {prefix}                 create (body with `name`)
    GET    {prefix}/{name}          one gateway
    PUT    {prefix}/{name}          create or replace
    PATCH  {prefix}/{name}          JSON merge patch (RFC 7396)
    DELETE {prefix}/{name}          drain, then remove

Names may contain `/`. The handlers read the request (body, `?validate_only=true`) and answer; the source
checks and applies. A write answers 200 with `validate_only`; otherwise the standalone gateway answers
201 (created), 200 (replaced, patched) and 202 (deleted: it drains), the platform 202 to every write
(`accepted`), as Vamp does.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from aiohttp import web

from gateway.common.errors import Invalid
from gateway.common.httpapi import read_body, respond, validate_only_requested
from gateway.config.source import ConfigSource

ListAnswer = Callable[[web.Request, list[Any]], web.Response]


# A gateway name in a path: slashes included, and any other character, so that a name the rule refuses (a line
# break, say) is answered by the name check (400), not by a route that does not match (404).
_NAME = r"/{name:[\s\S]+}"

class GatewayApi:
    def __init__(self, source: ConfigSource, *, accepted: bool = False, answer_list: ListAnswer = respond) -> None:
        """`accepted`: answer every write 202; `answer_list`: how a list is answered (e.g. in pages)."""
        self.source = source
        self.accepted = accepted
        self.answer_list = answer_list

    def add_routes(self, router: web.UrlDispatcher, prefix: str = "/api/v1/gateways") -> None:
        router.add_get(prefix, self.list_gateways)
        router.add_post(prefix, self.create_gateway)
        router.add_get(prefix + _NAME, self.get_gateway)
        router.add_put(prefix + _NAME, self.put_gateway)
        router.add_patch(prefix + _NAME, self.patch_gateway)
        router.add_delete(prefix + _NAME, self.delete_gateway)

    async def list_gateways(self, request: web.Request) -> web.Response:
        return self.answer_list(request, await self.source.list_gateways())

    async def get_gateway(self, request: web.Request) -> web.Response:
        return respond(request, await self.source.get_gateway(request.match_info["name"]))

    async def create_gateway(self, request: web.Request) -> web.Response:
        validate_only = validate_only_requested(request)
        body = await read_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            raise Invalid("the body must be a gateway object with a 'name'", "/name")
        document = await self.source.create_gateway(body["name"], body, validate_only=validate_only)
        return self._written(request, document, validate_only, 201)

    async def put_gateway(self, request: web.Request) -> web.Response:
        validate_only = validate_only_requested(request)
        body = await read_body(request)
        if not isinstance(body, dict):
            raise Invalid("the body must be a gateway object")
        document, created = await self.source.put_gateway(request.match_info["name"], body,
                                                          validate_only=validate_only)
        return self._written(request, document, validate_only, 201 if created else 200)

    async def patch_gateway(self, request: web.Request) -> web.Response:
        validate_only = validate_only_requested(request)
        patch = await read_body(request)
        if not isinstance(patch, dict):
            raise Invalid("a merge patch must be a JSON object")
        document = await self.source.patch_gateway(request.match_info["name"], patch, validate_only=validate_only)
        return self._written(request, document, validate_only, 200)

    async def delete_gateway(self, request: web.Request) -> web.Response:
        validate_only = validate_only_requested(request)
        document = await self.source.delete_gateway(request.match_info["name"], validate_only=validate_only)
        return self._written(request, document, validate_only, 202)

    def _written(self, request: web.Request, document: Any, validate_only: bool, status: int) -> web.Response:
        if validate_only:
            return respond(request, document)
        return respond(request, document, 202 if self.accepted else status)
