"""The API server's errors as a client sees them: a `Status` object (kind Status, apiVersion v1, status Failure)
with the message, reason, details and code a real kube-apiserver gives (k8s.io/apimachinery's api/errors),
carried by `ApiError` from wherever the request fails to the HTTP handler that answers it."""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request that fails: `status` is the whole Status body, `code` its HTTP status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": message, "reason": reason}
        if details is not None:
            self.status["details"] = details
        self.status["code"] = code


def _details(resource: str, group: str, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return details


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(resource, group)} "{name}" not found',
                    _details(resource, group, name))


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{_qualified(resource, group)} "{name}" already exists',
                    _details(resource, group, name))


def conflict(resource: str, group: str, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": '
                    "the object has been modified; please apply your changes to the latest version and try again",
                    _details(resource, group, name))


def precondition_failed(resource: str, group: str, name: str, what: str, expected: str, actual: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": '
                    f"Precondition failed: {what} in precondition: {expected}, {what} in object meta: {actual}",
                    _details(resource, group, name))


def forbidden(verb: str, resource: str, group: str, name: str | None, namespace: str | None, user: str) -> ApiError:
    """What an RBAC denial says; `resource` may name a subresource ("deployments/scale")."""
    plural = resource.split("/", 1)[0]
    subject = f'{_qualified(plural, group)} "{name}"' if name else _qualified(plural, group)
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return ApiError(403, "Forbidden", f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                    f'in API group "{group}"{where}', _details(plural, group, name))


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """A validation failure; each cause is (field, reason such as FieldValueRequired, message)."""
    messages = [f"{field}: {message}" for field, _, message in causes]
    text = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    qualified = f"{kind}.{group}" if group else kind
    details = _details(kind, group, name)
    details["causes"] = [{"reason": reason, "message": message, "field": field} for field, reason, message in causes]
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)


def patch_not_applied() -> ApiError:
    """A JSON patch (RFC 6902) that does not apply, a failed `test` among them: the server's generic 422."""
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request", {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted '
                    f'media types include: {", ".join(accepted)}')


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
