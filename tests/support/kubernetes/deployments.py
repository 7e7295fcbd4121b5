"""The Deployment controller with its ReplicaSets folded in, as the simulated cluster plays it: for each
Deployment, pods of its current template (named `<deployment>-<pod-template-hash>-<5 random>`, labelled with
the template's labels and `pod-template-hash`, owned by the ReplicaSet `<deployment>-<hash>`) up to
spec.replicas; a template change rolls (RollingUpdate: new pods up to maxSurge over replicas, old ones
deleted while at least replicas − maxUnavailable stay ready; Recreate: old ones gone first); scaling down
deletes the pod the ReplicaSet controller would (unscheduled first, then pending, then not ready, then the
lowest controller.kubernetes.io/pod-deletion-cost, then ready for the shortest time, most restarts, newest);
the revision annotation (deployment.kubernetes.io/revision, one more for each new template), and the
status as the real controller writes it (replicas, updatedReplicas, readyReplicas, availableReplicas,
unavailableReplicas, observedGeneration, conditions Available and Progressing, ProgressDeadlineExceeded when
no progress is made within progressDeadlineSeconds)."""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .kubelet import timestamp
from .registry import random_suffix
from .selectors import selector_from_object

HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
REVISION = "deployment.kubernetes.io/revision"


def template_hash(template: dict[str, Any]) -> str:
    """FNV-1a (32 bit) of the template, its decimal digits mapped as rand.SafeEncodeString maps them."""
    value = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(HASH_ALPHABET[ord(digit) % len(HASH_ALPHABET)] for digit in str(value))


def replica_set_uid(deployment: dict[str, Any], pod_hash: str) -> str:
    return str(uuid.uuid5(uuid.UUID(deployment["metadata"]["uid"]), pod_hash))


def is_ready(pod: dict[str, Any]) -> bool:
    return any(condition.get("type") == "Ready" and condition.get("status") == "True"
               for condition in (pod.get("status") or {}).get("conditions") or [])


def is_terminating(pod: dict[str, Any]) -> bool:
    return "deletionTimestamp" in pod["metadata"]


def _resolve(value: Any, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = replicas * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


@dataclass
class DeploymentController:
    """Reconciles Deployments against their pods, through the fake's own API (create, delete, update)."""
    create_pod: Callable[[str, dict[str, Any]], dict[str, Any]]
    delete_pod: Callable[[dict[str, Any]], None]
    write_status: Callable[[dict[str, Any], dict[str, Any], str], None]
    ready_since: Callable[[dict[str, Any]], float | None]
    clock: Callable[[], float]
    order: dict[str, int] = field(default_factory=dict)          # pod name -> creation order, for "newest"
    progress: dict[str, tuple[str, float]] = field(default_factory=dict)   # deployment uid -> (state, when)
    revisions: dict[str, dict[str, int]] = field(default_factory=dict)     # deployment uid -> hash -> revision

    def reconcile(self, deployment: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        spec = deployment["spec"]
        replicas = spec.get("replicas", 1)
        pod_hash = template_hash(spec["template"])
        active = [pod for pod in owned if not is_terminating(pod)]
        new = [pod for pod in active if pod["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash]
        old = [pod for pod in active if pod not in new]
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("rollingUpdate") or {}
        surge = _resolve(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = _resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        if strategy.get("type") == "Recreate":
            unavailable = replicas
        if not old:
            self._scale(deployment, pod_hash, new, replicas)
        elif strategy.get("type") == "Recreate":
            for pod in old:
                self.delete_pod(pod)
            if not any(pod not in new for pod in owned):       # the old ones are gone, terminating ones too
                self._scale(deployment, pod_hash, new, replicas)
        else:
            self._roll(deployment, pod_hash, new, old, replicas, surge, unavailable)
        self._status(deployment, owned, pod_hash, replicas, unavailable)

    def _scale(self, deployment: dict[str, Any], pod_hash: str, pods: list[dict[str, Any]], replicas: int) -> None:
        for _ in range(replicas - len(pods)):
            self._create(deployment, pod_hash)
        for pod in self.deletion_order(pods)[:max(0, len(pods) - replicas)]:
            self.delete_pod(pod)

    def _roll(self, deployment: dict[str, Any], pod_hash: str, new: list[dict[str, Any]], old: list[dict[str, Any]],
              replicas: int, surge: int, unavailable: int) -> None:
        total = len(new) + len(old)
        if len(new) < replicas and total < replicas + surge:
            for _ in range(min(replicas - len(new), replicas + surge - total)):
                new = new + [self._create(deployment, pod_hash)]
        elif len(new) > replicas:
            self._scale(deployment, pod_hash, new, replicas)
            new = new[:replicas]
        total = len(new) + len(old)
        minimum = replicas - unavailable
        new_unavailable = sum(1 for pod in new if not is_ready(pod))
        allowed = total - minimum - new_unavailable
        remaining = list(old)
        if allowed > 0:         # old pods that are not ready go first (cleanupUnhealthyReplicas)
            for pod in self.deletion_order([pod for pod in old if not is_ready(pod)])[:allowed]:
                self.delete_pod(pod)
                remaining.remove(pod)
        available = sum(1 for pod in new + remaining if is_ready(pod))
        for pod in self.deletion_order(remaining)[:max(0, available - minimum)]:
            self.delete_pod(pod)

    def _create(self, deployment: dict[str, Any], pod_hash: str) -> dict[str, Any]:
        template = deployment["spec"]["template"]
        metadata = template.get("metadata") or {}
        name = deployment["metadata"]["name"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{name}-{pod_hash}-{random_suffix()}", "generateName": f"{name}-{pod_hash}-",
            "labels": {**(metadata.get("labels") or {}), "pod-template-hash": pod_hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{pod_hash}",
                                 "uid": replica_set_uid(deployment, pod_hash), "controller": True,
                                 "blockOwnerDeletion": True}]},
            "spec": json.loads(json.dumps(template.get("spec") or {}))}
        if metadata.get("annotations"):
            pod["metadata"]["annotations"] = dict(metadata["annotations"])
        created = self.create_pod(deployment["metadata"]["namespace"], pod)
        self.order[created["metadata"]["name"]] = len(self.order)
        return created

    def deletion_order(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The pods the ReplicaSet controller deletes first, first (controller.ActivePodsWithRanks)."""
        phases = {"Pending": 0, "Unknown": 1, "Running": 2}

        def rank(pod: dict[str, Any]) -> tuple[Any, ...]:
            status = pod.get("status") or {}
            try:
                cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, "0"))
            except ValueError:
                cost = 0
            since = self.ready_since(pod)
            restarts = sum(entry.get("restartCount", 0) for entry in status.get("containerStatuses") or [])
            return (1 if pod["spec"].get("nodeName") else 0, phases.get(status.get("phase", "Pending"), 0),
                    1 if is_ready(pod) else 0, cost, -(since or 0.0), -restarts,
                    -self.order.get(pod["metadata"]["name"], -1), pod["metadata"].get("creationTimestamp", ""))
        return sorted(pods, key=rank)

    def _status(self, deployment: dict[str, Any], owned: list[dict[str, Any]], pod_hash: str, replicas: int,
                unavailable: int) -> None:
        active = [pod for pod in owned if not is_terminating(pod)]
        updated = [pod for pod in active if pod["metadata"].get("labels", {}).get("pod-template-hash") == pod_hash]
        ready = sum(1 for pod in active if is_ready(pod))
        counts = {"observedGeneration": deployment["metadata"].get("generation", 1), "replicas": len(active),
                  "updatedReplicas": len(updated), "readyReplicas": ready, "availableReplicas": ready,
                  "unavailableReplicas": max(0, replicas - ready)}
        status: dict[str, Any] = {key: value for key, value in counts.items() if value}
        old = deployment.get("status") or {}
        conditions = {entry["type"]: entry for entry in old.get("conditions") or []}
        name = f'{deployment["metadata"]["name"]}-{pod_hash}'
        now = self.clock()
        available = ready >= replicas - unavailable
        complete = len(updated) == replicas == ready and len(active) == replicas
        uid = deployment["metadata"]["uid"]
        progress_key = json.dumps([counts, pod_hash])
        last, since = self.progress.get(uid, ("", now))
        if progress_key != last:
            since = now
            self.progress[uid] = (progress_key, now)
        deadline = deployment["spec"].get("progressDeadlineSeconds", 600)
        if complete:
            progressing = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{name}" has successfully progressed.')
        elif now - since > deadline:
            progressing = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{name}" has timed out progressing.')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.')
        status["conditions"] = [
            _condition(conditions.get("Available"), "Available", *(
                ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.") if available else
                ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."))),
            _condition(conditions.get("Progressing"), "Progressing", *progressing)]
        revisions = self.revisions.setdefault(uid, {})
        if pod_hash not in revisions:
            revisions[pod_hash] = max(revisions.values(), default=0) + 1
        revision = str(revisions[pod_hash])
        if _comparable(status) != _comparable(old) or \
                (deployment["metadata"].get("annotations") or {}).get(REVISION) != revision:
            self.write_status(deployment, status, revision)


def _condition(old: dict[str, Any] | None, kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    now = timestamp()
    same = old is not None and old.get("status") == status
    unchanged = same and old is not None and old.get("reason") == reason and old.get("message") == message
    return {"type": kind, "status": status,
            "lastUpdateTime": old["lastUpdateTime"] if unchanged and old is not None else now,
            "lastTransitionTime": old["lastTransitionTime"] if same and old is not None else now,
            "reason": reason, "message": message}


def _comparable(status: dict[str, Any]) -> Any:
    return {**status, "conditions": [{k: v for k, v in entry.items() if not k.startswith("last")}
                                     for entry in status.get("conditions") or []]}


def selects(deployment: dict[str, Any], pod: dict[str, Any]) -> bool:
    return selector_from_object(deployment["spec"].get("selector")).matches(pod["metadata"].get("labels"))
