"""What the API server does for each verb, between the HTTP request and etcd (k8s.io/apiserver's generic
registry store and each resource's strategy): create (server-set metadata, defaults, validation, 409
AlreadyExists), update (optimistic concurrency on metadata.resourceVersion, status kept as a subresource,
generation bumped when a Deployment's spec changes, a write that changes nothing is no write), patch, delete
(a scheduled pod is deleted gracefully: deletionTimestamp first, gone when its kubelet confirms), list (label
and field selectors, resourceVersion and resourceVersionMatch, limit and continue), and the Deployment's scale
subresource (an autoscaling/v1 Scale)."""
from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
import secrets
import uuid
from typing import Any

from . import errors
from .errors import ApiError
from .patches import json_patch, merge_patch, strategic_merge_patch
from .resources import DEFAULTS, RESOURCES, Resource, field_value, initial_status, validate
from .selectors import FieldSelector, LabelSelector, selector_string
from .storage import Storage, with_type

PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"       # k8s.io/apimachinery/pkg/util/rand: no vowels, no 0/1/3


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(NAME_ALPHABET) for _ in range(length))


def _revision(text: str, what: str = "resourceVersion") -> int:
    try:
        return int(text)
    except ValueError:
        raise errors.bad_request(f'invalid {what}: "{text}"') from None


class Registry:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._cluster_ips = 0

    # reads

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        stored = self.storage.read(resource.name, namespace, name)
        if stored is None:
            raise errors.not_found(resource.name, resource.group, name)
        return with_type(resource.name, copy.deepcopy(stored))

    def list(self, resource: Resource, namespace: str | None, labels: LabelSelector, fields: FieldSelector, *,
             resource_version: str | None = None, match: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> dict[str, Any]:
        start = ""
        with self.storage.lock:
            current = self.storage.revision
            if continue_token:
                revision, start = self._continue(continue_token)
                objects = self.storage.state_at(resource.name, namespace, revision)
                if objects is None:
                    raise errors.expired(
                        "The provided continue parameter is too old to display a consistent list result. You can "
                        "start a new list without the continue parameter, or use the continue token in this "
                        "response to retrieve the remainder of the results. Continuing with the provided token "
                        "results in an inconsistent list - objects that were created, modified, or deleted between "
                        "the time the first chunk was returned and now may show up in the list.")
            else:
                revision, objects = self._snapshot(resource, namespace, resource_version, match, limit, current)
        selected = [obj for obj in objects
                    if labels.matches((obj.get("metadata") or {}).get("labels"))
                    and fields.matches(lambda field, o=obj: _field(o, field))]
        if start:
            after = tuple(start.split("/", 1))
            selected = [obj for obj in selected if _key(obj) > after]
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if limit and len(selected) > limit:
            page, rest = selected[:limit], selected[limit:]
            token = {"v": "meta.k8s.io/v1", "rv": revision, "start": "/".join(_key(page[-1])) + "\x00"}
            metadata["continue"] = base64.b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()
            if not labels.requirements and not fields.requirements:
                metadata["remainingItemCount"] = len(rest)
            selected = page
        return {"kind": f"{resource.kind}List", "apiVersion": resource.api_version, "metadata": metadata,
                "items": [copy.deepcopy(obj) for obj in selected]}

    def _snapshot(self, resource: Resource, namespace: str | None, resource_version: str | None, match: str | None,
                  limit: int | None, current: int) -> tuple[int, list[dict[str, Any]]]:
        if match and not resource_version:
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [(
                "resourceVersionMatch", "FieldValueForbidden",
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")])
        if match not in (None, "", "Exact", "NotOlderThan"):
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [(
                "resourceVersionMatch", "FieldValueNotSupported",
                f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan", ""')])
        if not resource_version or resource_version == "0":
            if match == "Exact":
                raise errors.invalid("ListOptions", "meta.k8s.io", "", [(
                    "resourceVersionMatch", "FieldValueForbidden",
                    'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"')])
            return current, self.storage.items(resource.name, namespace)
        revision = _revision(resource_version)
        if revision > current:
            raise ApiError(504, "Timeout", f"Too large resource version: {revision}, current: {current}",
                           {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                            "retryAfterSeconds": 1})
        exact = match == "Exact" or (not match and bool(limit))
        if not exact:
            return current, self.storage.items(resource.name, namespace)
        objects = self.storage.state_at(resource.name, namespace, revision)
        if objects is None:
            raise errors.expired("The resourceVersion for the provided list is too old.")
        return revision, objects

    @staticmethod
    def _continue(token: str) -> tuple[int, str]:
        try:
            decoded = json.loads(base64.b64decode(token, validate=True))
            return int(decoded["rv"]), str(decoded["start"]).rstrip("\x00")
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise errors.bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                     "(version meta.k8s.io/v1)") from None

    # writes

    def create(self, resource: Resource, namespace: str, body: Any, *, dry_run: bool = False) -> dict[str, Any]:
        obj = self._body(resource, body, namespace)
        metadata = obj["metadata"]
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + random_suffix()
        if metadata.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation", "managedFields", "selfLink"):
            metadata.pop(field, None)
        DEFAULTS[resource.name](obj)
        status = initial_status(resource, obj)
        if status is not None:
            obj["status"] = status
        validate(resource, obj, None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now()
        if resource.tracks_generation:
            metadata["generation"] = 1
        with self.storage.lock:
            if self.storage.read(resource.name, namespace, metadata["name"]) is not None:
                raise errors.already_exists(resource.name, resource.group, metadata["name"])
            if resource.name == "services":
                self._allocate_cluster_ip(obj)
            if dry_run:
                return with_type(resource.name, obj)
            change = self.storage.write(resource.name, namespace, metadata["name"], obj)
        return with_type(resource.name, copy.deepcopy(change.obj))

    def update(self, resource: Resource, namespace: str, name: str, body: Any, *, dry_run: bool = False,
               check_version: bool = True, keep_status: bool = True) -> dict[str, Any]:
        """PUT: replace the object, keeping what the server owns. `check_version` False and `keep_status` False:
        the fake's own replace-whole write (what a controller's status update amounts to)."""
        obj = self._body(resource, body, namespace)
        metadata = obj["metadata"]
        if metadata.get("name") is None:
            metadata["name"] = name
        if metadata["name"] != name:
            raise errors.bad_request(f"the name of the object ({metadata['name']}) does not match the name on the "
                                     f"URL ({name})")
        with self.storage.lock:
            old = self.storage.read(resource.name, namespace, name)
            if old is None:
                raise errors.not_found(resource.name, resource.group, name)
            expected = metadata.get("resourceVersion")
            if check_version and expected and expected != old["metadata"]["resourceVersion"]:
                _revision(expected)
                raise errors.conflict(resource.name, resource.group, name)
            result = self._prepare_update(resource, obj, old, keep_status=keep_status, validating=check_version)
            if _same(result, old):
                return with_type(resource.name, copy.deepcopy(old))
            if dry_run:
                return with_type(resource.name, result)
            finished = "deletionTimestamp" in result["metadata"] and not result["metadata"].get("finalizers")
            if finished and resource.name != "pods":      # the last finalizer is done: the object goes
                self.storage.write(resource.name, namespace, name, result)
                change = self.storage.write(resource.name, namespace, name, None)
            else:
                change = self.storage.write(resource.name, namespace, name, result)
        return with_type(resource.name, copy.deepcopy(change.obj))

    def _prepare_update(self, resource: Resource, obj: dict[str, Any], old: dict[str, Any], *, keep_status: bool,
                        validating: bool) -> dict[str, Any]:
        metadata, old_metadata = obj["metadata"], old["metadata"]
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if field in old_metadata and (validating or field not in metadata):
                metadata[field] = old_metadata[field]
            elif validating:
                metadata.pop(field, None)
        metadata["resourceVersion"] = old_metadata["resourceVersion"]
        DEFAULTS[resource.name](obj)
        if resource.has_status and keep_status:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        if resource.name == "services":
            spec, old_spec = obj.setdefault("spec", {}), old.get("spec") or {}
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if field not in spec and field in old_spec:
                    spec[field] = copy.deepcopy(old_spec[field])
        if resource.tracks_generation:
            generation = old_metadata.get("generation", 1)
            metadata["generation"] = generation + 1 if obj.get("spec") != old.get("spec") else generation
        if validating:
            validate(resource, obj, old)
        return obj

    def patch(self, resource: Resource, namespace: str, name: str, content_type: str, patch: Any, *,
              dry_run: bool = False) -> dict[str, Any]:
        with self.storage.lock:
            current = self.get(resource, namespace, name)
            patched = self._patched(resource.kind, current, content_type, patch)
            metadata = patched.setdefault("metadata", {})
            if metadata.get("name") != name:
                raise errors.bad_request(f"the name of the object ({metadata.get('name')}) does not match the name "
                                         f"on the URL ({name})")
            if metadata.get("resourceVersion") != current["metadata"]["resourceVersion"]:
                if not metadata.get("resourceVersion"):
                    metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
                else:
                    _revision(metadata["resourceVersion"])
                    raise errors.conflict(resource.name, resource.group, name)
            return self.update(resource, namespace, name, patched, dry_run=dry_run)

    @classmethod
    def _patched(cls, kind: str, current: dict[str, Any], content_type: str, patch: Any) -> dict[str, Any]:
        """`current` with `patch` applied; 400 when the result is not an object."""
        patched = cls._apply_patch(kind, current, content_type, patch)
        if not isinstance(patched, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        return patched

    @staticmethod
    def _apply_patch(kind: str, current: dict[str, Any], content_type: str, patch: Any) -> Any:
        if content_type == "application/json-patch+json":
            return json_patch(current, patch)
        if not isinstance(patch, dict):
            raise errors.bad_request("error decoding patch: json: cannot unmarshal array into Go value of type "
                                     "map[string]interface {}")
        if content_type == "application/merge-patch+json":
            return merge_patch(current, patch)
        if content_type == "application/strategic-merge-patch+json":
            return strategic_merge_patch(current, patch, kind)
        raise errors.unsupported_media_type(content_type, PATCH_TYPES)

    def delete(self, resource: Resource, namespace: str, name: str, options: dict[str, Any] | None = None, *,
               dry_run: bool = False) -> dict[str, Any]:
        options = options or {}
        with self.storage.lock:
            old = self.storage.read(resource.name, namespace, name)
            if old is None:
                raise errors.not_found(resource.name, resource.group, name)
            preconditions = options.get("preconditions") or {}
            for field, what in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                expected = preconditions.get(field)
                if expected and expected != old["metadata"].get(field):
                    raise errors.precondition_failed(resource.name, resource.group, name, what, expected,
                                                     old["metadata"].get(field, ""))
            grace = options.get("gracePeriodSeconds")
            finalizers = list(old["metadata"].get("finalizers") or [])
            policy = "Orphan" if options.get("orphanDependents") is True else options.get("propagationPolicy")
            if policy not in (None, "Orphan", "Background", "Foreground"):
                raise errors.invalid("DeleteOptions", "meta.k8s.io", "", [(
                    "propagationPolicy", "FieldValueNotSupported", f'Unsupported value: "{policy}": supported '
                    'values: "Foreground", "Background", "Orphan", "nil"')])
            marker = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy or "")
            if resource.name == "deployments" and marker is not None and marker not in finalizers:
                finalizers.append(marker)
            if finalizers:      # the object stays, marked for deletion, until its finalizers are done
                obj = copy.deepcopy(old)
                obj["metadata"]["finalizers"] = finalizers
                if "deletionTimestamp" not in obj["metadata"]:
                    obj["metadata"]["deletionTimestamp"] = now()
                    obj["metadata"]["deletionGracePeriodSeconds"] = 0
                    if resource.tracks_generation:
                        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
                if obj != old and not dry_run:
                    obj = self.storage.write(resource.name, namespace, name, obj).obj
                return with_type(resource.name, copy.deepcopy(obj))
            if resource.name == "pods" and self._graceful(old, grace):
                obj = copy.deepcopy(old)
                if "deletionTimestamp" not in obj["metadata"]:
                    seconds = grace if grace is not None else obj["spec"].get("terminationGracePeriodSeconds", 30)
                    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
                    obj["metadata"]["deletionTimestamp"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
                    obj["metadata"]["deletionGracePeriodSeconds"] = seconds
                    if dry_run:
                        return with_type(resource.name, obj)
                    obj = self.storage.write(resource.name, namespace, name, obj).obj
                return with_type(resource.name, copy.deepcopy(obj))
            if dry_run:
                deleted = old
            else:
                deleted = self.storage.write(resource.name, namespace, name, None).obj
        if resource.returns_deleted_object:
            return with_type(resource.name, copy.deepcopy(deleted))
        details = {"name": name, "group": resource.group, "kind": resource.name, "uid": old["metadata"]["uid"]}
        if not resource.group:
            del details["group"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    @staticmethod
    def _graceful(pod: dict[str, Any], grace: Any) -> bool:
        """A pod bound to a node waits for its kubelet, unless deleted with grace 0 or already finished."""
        if grace == 0 or not (pod.get("spec") or {}).get("nodeName"):
            return False
        return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    def update_status(self, resource: Resource, namespace: str, name: str, body: Any, *,
                      dry_run: bool = False) -> dict[str, Any]:
        """PUT .../status: only the status changes (the rest of `body` is ignored, as the status strategy does)."""
        obj = self._body(resource, body, namespace)
        if obj["metadata"].get("name", name) != name:
            raise errors.bad_request(f"the name of the object ({obj['metadata'].get('name')}) does not match the "
                                     f"name on the URL ({name})")
        with self.storage.lock:
            current = self.get(resource, namespace, name)
            expected = obj["metadata"].get("resourceVersion")
            if expected and expected != current["metadata"]["resourceVersion"]:
                raise errors.conflict(resource.name, resource.group, name)
            current["status"] = obj.get("status") or {}
            return self.update(resource, namespace, name, current, dry_run=dry_run, keep_status=False)

    def patch_status(self, resource: Resource, namespace: str, name: str, content_type: str, patch: Any, *,
                     dry_run: bool = False) -> dict[str, Any]:
        with self.storage.lock:
            current = self.get(resource, namespace, name)
            patched = self._patched(resource.kind, current, content_type, patch)
            return self.update_status(resource, namespace, name, patched, dry_run=dry_run)

    # the scale subresource

    def get_scale(self, namespace: str, name: str) -> dict[str, Any]:
        deployment = self.get(RESOURCES["deployments"], namespace, name)
        return _scale(deployment)

    def update_scale(self, namespace: str, name: str, body: Any, *, dry_run: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of a Scale must be a JSON object")
        metadata = body.get("metadata") or {}
        if metadata.get("name", name) != name:
            raise errors.bad_request(f"the name of the object ({metadata.get('name')}) does not match the name on "
                                     f"the URL ({name})")
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("Scale", "autoscaling", name, [(
                "spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or equal "
                                                      "to 0")])
        resource = RESOURCES["deployments"]
        with self.storage.lock:
            deployment = self.get(resource, namespace, name)
            expected = metadata.get("resourceVersion")
            if expected and expected != deployment["metadata"]["resourceVersion"]:
                raise errors.conflict(resource.name, resource.group, name)
            deployment["spec"]["replicas"] = replicas
            updated = self.update(resource, namespace, name, deployment, dry_run=dry_run)
        return _scale(updated)

    def patch_scale(self, namespace: str, name: str, content_type: str, patch: Any, *,
                    dry_run: bool = False) -> dict[str, Any]:
        with self.storage.lock:
            current = self.get_scale(namespace, name)
            patched = self._apply_patch("Scale", current, content_type, patch)
            return self.update_scale(namespace, name, patched, dry_run=dry_run)

    # helpers

    def _body(self, resource: Resource, body: Any, namespace: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request(f"Object 'Kind' is missing in '{json.dumps(body)}'")
        obj = copy.deepcopy(body)
        kind, api_version = obj.pop("kind", None), obj.pop("apiVersion", None)
        if kind is not None and kind != resource.kind:
            raise errors.bad_request(f"the kind of the object ({kind}) does not match the kind of the resource "
                                     f"({resource.kind})")
        if api_version is not None and api_version != resource.api_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                     f"version ({resource.api_version})")
        metadata = obj.get("metadata")
        if metadata is None:
            metadata = obj["metadata"] = {}
        if not isinstance(metadata, dict):
            raise errors.bad_request("metadata must be a JSON object")
        if metadata.get("namespace") is None:
            metadata["namespace"] = namespace
        elif metadata["namespace"] != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the "
                                     "request")
        return obj

    def _allocate_cluster_ip(self, service: dict[str, Any]) -> None:
        spec = service["spec"]
        if spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP"):
            self._cluster_ips += 1
            spec["clusterIP"] = f"10.96.{self._cluster_ips // 250}.{self._cluster_ips % 250 + 2}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        if spec["clusterIP"] != "None":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")


def _key(obj: dict[str, Any]) -> tuple[str, ...]:
    metadata = obj.get("metadata") or {}
    return metadata.get("namespace", ""), metadata.get("name", "")


def _field(obj: dict[str, Any], field: str) -> str:
    return field_value(obj, field)


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    return {k: v for k, v in new.items() if k not in ("kind", "apiVersion")} == old


def _scale(deployment: dict[str, Any]) -> dict[str, Any]:
    metadata = deployment["metadata"]
    status: dict[str, Any] = {"replicas": (deployment.get("status") or {}).get("replicas", 0),
                              "selector": selector_string(deployment["spec"].get("selector"))}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {key: metadata[key] for key in ("name", "namespace", "uid", "resourceVersion",
                                                        "creationTimestamp") if key in metadata},
            "spec": {"replicas": deployment["spec"].get("replicas", 0)}, "status": status}
