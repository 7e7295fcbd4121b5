"""The three patch types a client sends, applied as the API server applies them:
- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, null deletes, lists are replaced;
- strategic merge patch (`application/strategic-merge-patch+json`): a merge patch in which the lists that the
  Kubernetes types declare with a patch merge key are merged item by item on that key (containers, env,
  volumes by name; container ports by containerPort; service ports by port; conditions by type...), with the
  directives `$patch: replace|delete|merge`, `$retainKeys`, `$setElementOrder/F` and `$deleteFromPrimitiveList/F`;
- JSON patch (RFC 6902, `application/json-patch+json`): add, remove, replace, move, copy, test. An operation
  that does not apply (a failed `test`, a missing path) is the server's generic 422 Invalid.
"""
from __future__ import annotations

import copy
from typing import Any

from gateway.config.edit import merge_patch as json_merge_patch

from .errors import ApiError, bad_request, patch_not_applied

# Lists merged by key, by where they sit (field names from the object's root; "[]" steps into list items), as
# the Kubernetes API types declare them (patchStrategy "merge", patchMergeKey). A key of None: a list of
# scalars merged as a set (finalizers).
_POD_SPEC_LISTS = {
    ("containers",): "name", ("initContainers",): "name", ("ephemeralContainers",): "name",
    ("volumes",): "name", ("imagePullSecrets",): "name", ("hostAliases",): "ip",
    ("topologySpreadConstraints",): "topologyKey", ("resourceClaims",): "name", ("schedulingGates",): "name",
}
_CONTAINER_LISTS = {("ports",): "containerPort", ("env",): "name", ("volumeMounts",): "mountPath",
                    ("volumeDevices",): "devicePath"}
_METADATA_LISTS = {("metadata", "finalizers"): None, ("metadata", "ownerReferences"): "uid"}


def _pod_spec_lists(prefix: tuple[str, ...]) -> dict[tuple[str, ...], str | None]:
    lists: dict[tuple[str, ...], str | None] = {prefix + path: key for path, key in _POD_SPEC_LISTS.items()}
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        lists.update({prefix + (containers, "[]") + path: key for path, key in _CONTAINER_LISTS.items()})
    return lists


MERGE_KEYS: dict[str, dict[tuple[str, ...], str | None]] = {
    "Deployment": {**_METADATA_LISTS, **_pod_spec_lists(("spec", "template", "spec")),
                   ("spec", "template", "metadata", "finalizers"): None, ("status", "conditions"): "type"},
    "Pod": {**_METADATA_LISTS, **_pod_spec_lists(("spec",)), ("status", "conditions"): "type"},
    "Service": {**_METADATA_LISTS, ("spec", "ports"): "port", ("status", "conditions"): "type"},
    "EndpointSlice": dict(_METADATA_LISTS),
    "Event": dict(_METADATA_LISTS),
    "Scale": dict(_METADATA_LISTS),
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the gateway's admin API applies it, on a copy (nothing of `target` or `patch` is shared)."""
    return copy.deepcopy(json_merge_patch(target, patch))


def strategic_merge_patch(target: dict[str, Any], patch: Any, kind: str) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise bad_request("error decoding patch: a strategic merge patch must be a JSON object")
    result = _merge_map(target, patch, (), MERGE_KEYS.get(kind, {}))
    return result if isinstance(result, dict) else {}


def _merge_map(target: Any, patch: dict[str, Any], path: tuple[str, ...],
               keys: dict[tuple[str, ...], str | None]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {key: value for key, value in patch.items() if key != "$patch"}
    if directive == "replace":
        return _strip_directives(body)
    if directive not in (None, "merge"):
        raise bad_request(f"Unknown patch type: {directive}")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = body.pop("$retainKeys", None)
    orders = {key.split("/", 1)[1]: body.pop(key) for key in list(body) if key.startswith("$setElementOrder/")}
    removals = {key.split("/", 1)[1]: body.pop(key) for key in list(body)
                if key.startswith("$deleteFromPrimitiveList/")}
    for key, value in body.items():
        where = path + (key,)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _merge_map(result.get(key), value, where, keys)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and where in keys:
            result[key] = _merge_list(result.get(key), value, where, keys)
        else:
            result[key] = _strip_directives(value)
    for key, values in removals.items():
        if isinstance(result.get(key), list):
            result[key] = [item for item in result[key] if item not in values]
    for key, order in orders.items():
        if isinstance(result.get(key), list):
            result[key] = _ordered(result[key], order, keys.get(path + (key,)))
    if retain is not None:
        result = {key: value for key, value in result.items() if key in retain}
    return result


def _merge_list(target: Any, patch: list[Any], path: tuple[str, ...],
                keys: dict[tuple[str, ...], str | None]) -> list[Any]:
    merge_key = keys[path]
    current = copy.deepcopy(target) if isinstance(target, list) else []
    if merge_key is None:               # a set of scalars
        return current + [item for item in patch if item not in current]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(item) for item in patch
                if not (isinstance(item, dict) and item.get("$patch") == "replace")]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next((i for i, existing in enumerate(current)
                      if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del current[index]
            continue
        if index is None:
            current.append(_strip_directives(item))
        else:
            current[index] = _merge_map(current[index], item, path + ("[]",), keys)
    return current


def _ordered(items: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    def identity(item: Any) -> Any:
        return item.get(merge_key) if merge_key is not None and isinstance(item, dict) else item
    wanted = [identity(entry) if isinstance(entry, dict) else entry for entry in order]
    ranked = [item for key in wanted for item in items if identity(item) == key]
    return ranked + [item for item in items if identity(item) not in wanted]


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip_directives(item) for key, item in value.items() if not key.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value


# RFC 6902

def json_patch(document: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    result = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise bad_request("json patch operation is missing its 'op'")
        result = _apply(result, operation)
    return result


def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise patch_not_applied()
    return [part.replace("~1", "/").replace("~0", "~") for part in text.split("/")[1:]] if text else []


def _parent(document: Any, parts: list[str]) -> Any:
    node = document
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise patch_not_applied()
    return node


def _get(document: Any, parts: list[str]) -> Any:
    if not parts:
        return document
    parent, last = _parent(document, parts), parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise patch_not_applied()


def _add(document: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent, last = _parent(document, parts), parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise patch_not_applied()
    else:
        raise patch_not_applied()
    return document


def _remove(document: Any, parts: list[str]) -> Any:
    if not parts:
        raise patch_not_applied()
    _get(document, parts)
    parent, last = _parent(document, parts), parts[-1]
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return document


def _apply(document: Any, operation: dict[str, Any]) -> Any:
    op, parts = operation["op"], _pointer(operation.get("path"))
    try:
        if op == "add":
            return _add(document, parts, copy.deepcopy(_value(operation)))
        if op == "remove":
            return _remove(document, parts)
        if op == "replace":
            _get(document, parts)
            if not parts:
                return copy.deepcopy(_value(operation))
            parent, last = _parent(document, parts), parts[-1]
            parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(_value(operation))
            return document
        if op == "move":
            source = _pointer(operation.get("from"))
            value = _get(document, source)
            return _add(_remove(document, source), parts, value)
        if op == "copy":
            return _add(document, parts, copy.deepcopy(_get(document, _pointer(operation.get("from")))))
        if op == "test":
            if not _json_equal(_get(document, parts), _value(operation)):
                raise patch_not_applied()
            return document
    except (KeyError, IndexError, TypeError, ValueError):
        raise patch_not_applied() from None
    raise bad_request(f"Unexpected kind: {op}")


def _value(operation: dict[str, Any]) -> Any:
    if "value" not in operation:
        raise patch_not_applied()
    return operation["value"]


def _json_equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


__all__ = ["ApiError", "json_patch", "merge_patch", "strategic_merge_patch"]
