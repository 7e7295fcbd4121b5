"""The Kubernetes orchestrator driver: Vamp services as Deployments and Services in one namespace.

`names` (object names and labels), `objects` (the objects a spec wants), `api` (calls as JSON, errors),
`watch` (list-then-watch), `driver` (`KubernetesOrchestrator`), `config` (`connect`: kubeconfig or in-cluster).
"""
from control.orchestrator.kubernetes.config import KubernetesUnavailable, connect
from control.orchestrator.kubernetes.driver import KubernetesOrchestrator

__all__ = ["KubernetesOrchestrator", "KubernetesUnavailable", "connect"]
