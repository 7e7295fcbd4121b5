"""Finding the Kubernetes API and checking that it answers: `connect` returns a started driver, or raises
`KubernetesUnavailable` saying what and where.

Without a kubeconfig path the platform uses the in-cluster configuration when it runs in a pod
(KUBERNETES_SERVICE_HOST set), else $KUBECONFIG (one or more paths) or ~/.kube/config. Without a namespace it uses
the kubeconfig context's, in a pod the pod's own (the service account's namespace file), else "default".
A kubeconfig whose token comes from an exec plugin (or a cloud provider) has it renewed while the driver runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from control.orchestrator.kubernetes import api
from control.orchestrator.kubernetes.driver import BeforeStop, KubernetesOrchestrator

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_KUBECONFIG = "~/.kube/config"
PERMISSIONS = ("the platform needs, in its namespace: get, list, watch, create, update, delete on deployments "
               "and services; patch on deployments/scale; list, watch, patch, delete on pods; list, watch on "
               "endpointslices")


class KubernetesUnavailable(Exception):
    """The Kubernetes API cannot be used: the message says what and where."""


async def connect(kubeconfig: str | None, namespace: str | None, *, before_stop: BeforeStop | None = None
                  ) -> KubernetesOrchestrator:
    """A started driver for `namespace` of the cluster `kubeconfig` names (see the module docstring)."""
    configuration = client.Configuration()
    loader: Any = None
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise KubernetesUnavailable(f"cannot use the in-cluster configuration of this pod: {exc}") from None
        if namespace is None and NAMESPACE_FILE.is_file():
            namespace = NAMESPACE_FILE.read_text().strip() or None
    else:
        paths = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
        expanded = os.pathsep.join(os.path.expanduser(path) for path in paths.split(os.pathsep) if path)
        if not any(Path(path).is_file() for path in expanded.split(os.pathsep)):
            raise KubernetesUnavailable(f"no kubeconfig at {paths}")
        try:
            loader = await config.load_kube_config(config_file=expanded, client_configuration=configuration,
                                                   persist_config=False)
        except Exception as exc:  # noqa: BLE001 - the loader raises anything from YAML to missing keys
            raise KubernetesUnavailable(f"cannot use the kubeconfig at {paths}: {exc}") from None
        if namespace is None:
            context = (loader.current_context or {}).get("context") or {}
            namespace = context.get("namespace") or None
    namespace = namespace or "default"
    api_client = client.ApiClient(configuration)
    try:
        await _check(api_client, namespace)
    except BaseException:
        await api_client.close()
        raise
    orchestrator = KubernetesOrchestrator(api_client, namespace, before_stop=before_stop)
    if loader is not None and _renewed(loader):
        orchestrator.background.start(config.refresh_token(loader, configuration), "kubeconfig token renewal")
    await orchestrator.start()
    return orchestrator


def _renewed(loader: Any) -> bool:
    """Whether the kubeconfig's token expires and is renewed (every minute, by `config.refresh_token`): one from
    an exec plugin or the gcp auth provider."""
    user = getattr(loader, "_user", None)
    return loader.provider == "gcp" or (user is not None and "exec" in user)


async def _check(api_client: client.ApiClient, namespace: str) -> None:
    """Raise KubernetesUnavailable unless the API lists the Deployments of `namespace`."""
    where = api_client.configuration.host
    try:
        await api.call(client.AppsV1Api(api_client).list_namespaced_deployment, namespace, limit=1)
    except ApiException as exc:
        if exc.status == 403:
            raise KubernetesUnavailable(f"the Kubernetes API at {where} does not let the platform list "
                                        f"deployments in namespace {namespace} ({PERMISSIONS}): "
                                        f"{api.describe(exc)}") from None
        if exc.status == 401:
            raise KubernetesUnavailable(f"the Kubernetes API at {where} does not accept the platform's "
                                        f"credentials: {api.describe(exc)}") from None
        raise KubernetesUnavailable(f"the Kubernetes API at {where} cannot list deployments in namespace "
                                    f"{namespace}: {api.describe(exc)}") from None
    except api.TRANSPORT_ERRORS as exc:
        raise KubernetesUnavailable(f"cannot reach the Kubernetes API at {where}: {api.describe(exc)}") from None
