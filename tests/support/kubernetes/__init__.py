"""A faithful fake of a Kubernetes cluster for tests: `FakeKubernetes`, an API server over real HTTP that
kubernetes_asyncio (or any client) talks to as to kube-apiserver, and `SimulatedCluster`, the controllers and
kubelet that turn its Deployments and Services into running pods and EndpointSlices. The fixtures are in
`fixtures.py` (registered in tests/conftest.py)."""
from .cluster import SimulatedCluster
from .errors import ApiError
from .fixtures import KubeTarget
from .server import FakeKubernetes

__all__ = ["ApiError", "FakeKubernetes", "KubeTarget", "SimulatedCluster"]
