"""`ConfigSource`: what a source of gateway configuration offers the gateway API (gateway.admin.gateways).

A source holds the desired gateways and applies changes to them; the API only reads requests and answers.
Two sources exist: the standalone gateway's `ConfigManager` (a file, changed through its admin API) and the
platform's `Engine` (the control plane, whose deployments generate gateways besides the users' own). A later
source, such as etcd, plugs in here: implement these methods and hand the source to `GatewayApi`.

Documents are plain data as the API answers them: a gateway's fields, its `name`, and a read-only `status`
(the source decides what else, e.g. the platform's `generated`). Every write takes `validate_only`: check
the write, answer what it would give, change nothing. Errors are gateway.common.errors': `Invalid` (with the
field at fault as a JSON pointer into the gateway's document), `NotFound`, `Conflict`; an error changes
nothing. Merge patches and validation are gateway.config.edit's, the same for every source.
"""
from __future__ import annotations

from typing import Any, Protocol

Document = dict[str, Any]


class ConfigSource(Protocol):
    async def list_gateways(self) -> list[Document]:
        """Every gateway, in name order."""
        ...

    async def get_gateway(self, name: str) -> Document:
        """Gateway `name`; NotFound."""
        ...

    async def create_gateway(self, name: str, body: Document, *, validate_only: bool = False) -> Document:
        """Create gateway `name` from `body`; Conflict when it exists, Invalid."""
        ...

    async def put_gateway(self, name: str, body: Document, *, validate_only: bool = False
                          ) -> tuple[Document, bool]:
        """Create or replace gateway `name`: (its document, whether it was created); Invalid, Conflict."""
        ...

    async def patch_gateway(self, name: str, patch: Document, *, validate_only: bool = False) -> Document:
        """Apply a JSON merge patch (RFC 7396, an object) to gateway `name`; NotFound, Invalid, Conflict."""
        ...

    async def delete_gateway(self, name: str, *, validate_only: bool = False) -> Document:
        """Remove gateway `name` (it drains first): the document to answer; NotFound, Conflict."""
        ...
