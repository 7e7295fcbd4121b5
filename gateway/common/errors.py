"""What a request asked for that cannot be done, as types: `Invalid` input (with the field at fault), a thing
that is `NotFound`, a `Conflict` with what exists, a store that is `Unavailable`. The HTTP APIs answer them
400, 404, 409 and 503
(gateway.common.httpapi); the code that raises them says what went wrong, never which status that is."""
from __future__ import annotations


class RequestError(Exception):
    """`message` says what is wrong; `field` is the JSON pointer of the field at fault, or None."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(RequestError, ValueError):
    """The input is wrong: nothing changed."""


class NotFound(RequestError, LookupError):
    """What the request names does not exist."""


class Conflict(RequestError):
    """The request clashes with what exists (it exists already, a port is taken, a worker refused the change):
    nothing changed."""


class Unavailable(RequestError):
    """What the request needs cannot be reached now (the configuration store, the leader): nothing changed, and
    the same request may succeed later."""
