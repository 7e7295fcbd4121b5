"""The `vamp` command line, built here and only here: the gateway's commands (`gateway.register_commands`), the
control plane's (`register`, below, `control.events.cli.register` and `control.workflows.cli.register`) and the
load tester's (`loadtest.cli.register`). `vamp = control.cli:main`; `python -m control` is the same command.

    vamp run [--state-dir DIR] [--api HOST:PORT]        the embedded platform (API, gateway, local processes)
    vamp deploy FILE [--name N] [--timeout S|--no-wait] deploy (or merge) a blueprint, wait until it serves
    vamp get breeds|blueprints|deployments|gateways|scales|conditions|slas|escalations|workflows [NAME]
    vamp apply -f FILE                                  create or update every document of FILE
    vamp delete KIND NAME | vamp delete -f FILE         delete artifacts; with a blueprint: undeploy services
    vamp scale DEPLOYMENT/CLUSTER/SERVICE N             set a service's number of instances, wait until it serves
    vamp events [--tag T …] [--since TIME] [--follow]   the platform's events, and live ones (control.events.cli)
    vamp workflows list|status|suspend|resume|restart|promote|abort [NAME]   (control/workflows/cli.py)
    vamp metrics SCOPE [--window 5m]                    what a gateway, route, cluster port, service or instance
                                                        received (SCOPE: a path of /api/v1/metrics, e.g. gateways/G)
    vamp loadtest URL [options]                         load-test a canary split (loadtest)

`vamp apply -f FILE` tells documents apart in one place, `apply_documents`: documents with `kind:` go to the
control plane API, a gateways file to the gateways API (`gateway.apply_gateways_file`).

API commands (these, `vamp gateways …` and `vamp loadtest --from-gateway`) talk to `--api URL` (default
$VAMP_API, else http://127.0.0.1:8080) with the token from `--token` or $VAMP_TOKEN (gateway.common.cli);
they print tables for people and `-o json|yaml` for scripts. Exit codes: 0 ok, 1 the API failed or is
unreachable, 2 bad input, 141 stdout was closed early (`vamp get … | head`: the command stops quietly, as
if killed by SIGPIPE like other Unix tools).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml

from control import waiting
from control.events import cli as events_cli
from control.workflows import cli as workflows_cli
from gateway import AdminClient, api_command as command, apply_gateways_file, register_commands, weights_summary
from gateway.common.cli import (LIST_QUERY, CommandError, Commands, TokenError, add_server_options, add_store_options,
                                add_token_options, emit, new_parser, render_table, setup_logging, store_options_from,
                                store_options_given, token_from)
from gateway.common.units import parse_duration
from loadtest import cli as loadtest_cli

if TYPE_CHECKING:
    from gateway import StoreAddress

API = "/api/v1"
EXIT_BROKEN_PIPE = 141      # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away
KINDS = ("breeds", "blueprints", "deployments", "gateways", "scales", "conditions", "slas", "escalations",
         "workflows")
_STORED_BY_APPLY = "`vamp apply -f FILE` stores them"
_RUNNING = "see `vamp get deployments` for what runs"
NOTHING_STORED = {      # what `vamp get KIND` says for an empty list, and where to look instead
    "breeds": f"no breeds stored (deploying a blueprint from a file stores none; {_RUNNING})",
    "blueprints": f"no blueprints stored (deploying from a file stores none; {_RUNNING})",
    "deployments": "no deployments (start one with `vamp deploy FILE --name NAME`)",
    "gateways": "no gateways (a deployment's gateways appear here once it is deployed)",
    "scales": f"no scales stored ({_STORED_BY_APPLY}; a deployment's own scales: `vamp get deployments NAME`)",
    "conditions": f"no conditions stored ({_STORED_BY_APPLY}; a gateway's own conditions: `vamp gateways get "
                  "NAME`)",
    "slas": f"no SLAs stored ({_STORED_BY_APPLY})",
    "escalations": f"no escalations stored ({_STORED_BY_APPLY})",
    "workflows": f"no workflows stored ({_STORED_BY_APPLY})",
}


def build_parser() -> argparse.ArgumentParser:
    """The `vamp` parser: every part's commands, each with `func(args) -> int`."""
    parser, commands = new_parser()
    register_commands(commands, apply=apply_documents)
    register(commands)
    workflows_cli.register(commands)
    loadtest_cli.register(commands)
    return parser


def register(commands: Commands) -> None:
    """Adds the control plane's commands to the subcommands of a `vamp` parser: run, deploy, get, delete, scale."""
    run = commands.add_parser(
        "run", help="the embedded platform: control plane API, gateway, orchestrator (local or Kubernetes)",
        description="The embedded platform: the control plane API, the gateway and an orchestrator: local processes "
                    "by default, or, with --orchestrator kubernetes, Deployments and Services in a Kubernetes "
                    "namespace (docs/kubernetes.md). "
                    "Its store is SQLite in the state directory, or, with --store, etcd shared by several `vamp run` "
                    "replicas: one of them leads (an etcd lease of --leader-ttl) and runs the deployments, SLAs "
                    "and workflows; the others serve stored artifacts, events and /api/v1/status themselves and "
                    "forward every other API request (writes included) to the leader, answering 503 with "
                    "Retry-After while no replica leads. A leader that loses its lease stops its instances and "
                    "exits 3. See docs/replicas.md.")
    run.add_argument("--state-dir", default=".vamp", help="store and logs (default %(default)s)")
    run.add_argument("--api", default="127.0.0.1:8080", help="API address HOST:PORT (default %(default)s)")
    add_token_options(run, "the API")
    run.add_argument("--bind", default="127.0.0.1",
                     help="address external gateways listen on (default %(default)s)")
    run.add_argument("--grace", type=float, default=10.0, help="seconds requests get to finish on stop")
    run.add_argument("--internal-ports", type=_port_range, metavar="FIRST-LAST",
                     default=os.environ.get("VAMP_INTERNAL_PORTS", "40000-40999"),
                     help="the loopback ports the clusters' internal gateways are given (default: "
                          "$VAMP_INTERNAL_PORTS, else 40000-40999)")
    events_cli.add_retention_options(run)
    run.add_argument("--metrics-window", type=_metrics_window, default="1h", metavar="DURATION",
                     help="how far back the metrics API can look, e.g. 30m, 2h (default 1h; 0 turns the "
                          "aggregation off)")
    run.add_argument("--workers", type=_worker_count, default=1, metavar="N",
                     help="gateway worker processes sharing the gateways' ports (default 1: in this process)")
    run.add_argument("--store", metavar="URL",
                     help="keep deployments, artifacts, events and the gateways in etcd, shared with other replicas: "
                          "etcd://HOST:PORT[,HOST:PORT...]/PREFIX (etcds:// for TLS); default: SQLite in the state "
                          "directory")
    run.add_argument("--leader-ttl", type=_leader_ttl, metavar="DURATION",
                     help="with --store: the leader's lease, by when another replica takes over from a leader that "
                          "died (whole seconds, at least 2s; default 10s)")
    run.add_argument("--api-url", metavar="URL",
                     help="with --store: this API's URL as the other replicas reach it (default: http://HOST:PORT of "
                          "--api, a wildcard address as this host's name)")
    add_store_options(run)
    run.add_argument("--orchestrator", choices=("local", "kubernetes"), default="local",
                     help="where the services run: local processes (default), or a Kubernetes namespace")
    run.add_argument("--kubeconfig", metavar="PATH",
                     help="with --orchestrator kubernetes: the kubeconfig (default: in a pod, the in-cluster "
                          "configuration; elsewhere $KUBECONFIG or ~/.kube/config)")
    run.add_argument("--namespace", metavar="NS",
                     help="with --orchestrator kubernetes: the namespace of the services (default: the "
                          "kubeconfig context's, in a pod its own, else default)")
    run.set_defaults(func=_run)

    deploy = commands.add_parser("deploy", help="deploy a blueprint, or merge it into a running deployment")
    deploy.add_argument("file", help="blueprint YAML/JSON file ('-' for stdin)")
    deploy.add_argument("--name", help="deployment name (default: a new UUID)")
    waiting.add_options(deploy)
    _api_options(deploy)
    deploy.set_defaults(func=command(_deploy))

    get = commands.add_parser("get", help="list artifacts of a kind, or show one")
    get.add_argument("kind", choices=KINDS)
    get.add_argument("name", nargs="?")
    _api_options(get)
    get.set_defaults(func=command(_get))

    delete = commands.add_parser("delete", help="delete an artifact; `-f blueprint` undeploys its services")
    delete.add_argument("kind", nargs="?", choices=KINDS)
    delete.add_argument("name", nargs="?")
    delete.add_argument("-f", "--file", help="documents to delete (multi-document YAML with kind:)")
    delete.add_argument("--deployment", help="with -f: the deployment to remove the blueprint's services from")
    _api_options(delete)
    delete.set_defaults(func=command(_delete))

    scale = commands.add_parser("scale", help="set the number of instances of DEPLOYMENT/CLUSTER/SERVICE")
    scale.add_argument("service", help="DEPLOYMENT/CLUSTER/SERVICE, e.g. sava/sava/sava:1.0.0")
    scale.add_argument("instances", type=int)
    waiting.add_options(scale)
    _api_options(scale)
    scale.set_defaults(func=command(_scale))

    events_cli.register(commands)
    metrics = commands.add_parser("metrics", help="requests, response times and health of a gateway, route, "
                                                  "cluster port, service or instance over a window")
    metrics.add_argument("scope", help="gateways/NAME[/routes/ROUTE], or deployments/D/clusters/C/ports/P"
                                       "[/services/S[/instances/I]] (as in /api/v1/metrics/…)")
    metrics.add_argument("--window", default="60s", help="how far back, e.g. 30s, 5m, 1h (default %(default)s)")
    _api_options(metrics)
    metrics.set_defaults(func=command(_metrics))


def _api_options(parser: argparse.ArgumentParser) -> None:
    add_server_options(parser)
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")


def _read(path: str) -> list[Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", 2) from None
    except yaml.YAMLError as exc:
        raise CommandError(f"{path}: not valid YAML: {exc}".replace("\n", " "), 2) from None
    if not documents:
        raise CommandError(f"{path}: no document", 2)
    return documents


def _deploy(args: argparse.Namespace, client: AdminClient) -> None:
    documents = _read(args.file)
    if len(documents) != 1:
        raise CommandError(f"{args.file}: expected one blueprint, found {len(documents)} documents", 2)
    blueprint = {k: v for k, v in documents[0].items() if k != "kind"} if isinstance(documents[0], dict) \
        else documents[0]
    if args.name:
        answer = client.request("PUT", f"{API}/deployments/{quote(args.name, safe='')}", blueprint)
    else:
        answer = client.request("POST", f"{API}/deployments", blueprint)
    document = answer.data or {}
    name = document.get("name", args.name)
    if args.no_wait:
        emit(args, document, lambda: f"deployment {name} accepted")
        return
    document = waiting.until_deployed(client, name, args.timeout)
    emit(args, document, lambda: f"deployment {name} deployed")


def _summary(kind: str, item: dict) -> list[Any]:
    if kind == "deployments":
        clusters = item.get("clusters") or {}
        services = [f"{c}/{s.get('breed', {}).get('name', '?')}×{len(s.get('instances', []))}"
                    for c, body in clusters.items() for s in body.get("services", [])]
        return [item.get("name"), " ".join(services)]
    if kind == "gateways":
        return [item.get("name"), item.get("port"), weights_summary(item.get("routes") or {})]
    return [item.get("name"), ""]


def _get(args: argparse.Namespace, client: AdminClient) -> None:
    if args.name:
        path = _artifact_path(args.kind, args.name)
        data = client.request("GET", path).data
        emit(args, data, lambda: yaml.safe_dump(data, sort_keys=False).rstrip())
        return
    answer = client.request("GET", f"{API}/{args.kind}{LIST_QUERY}", expect=(404,))
    if answer.status == 404:        # a `vamp gateway`'s admin API serves gateways only
        raise CommandError(f"the API at {client.base_url} has no {args.kind}: `vamp get {args.kind}` needs "
                           "`vamp run`'s API (only `vamp get gateways` works against a `vamp gateway`)", 2)
    data = answer.data or []
    headers = {"deployments": ("NAME", "SERVICES (cluster/breed×instances)"),
               "gateways": ("NAME", "PORT", "ROUTES")}.get(args.kind, ("NAME", ""))
    emit(args, data, lambda: render_table(headers, [_summary(args.kind, item)[:len(headers)] for item in data])
         if data else NOTHING_STORED[args.kind])


def _artifact_path(kind: str, name: str) -> str:
    """Gateway names keep their '/' in the path; other names are one path segment."""
    return f"{API}/{kind}/{quote(name, safe='/:' if kind == 'gateways' else ':')}"


def _delete(args: argparse.Namespace, client: AdminClient) -> None:
    if args.file:
        documents = _read(args.file)
        if args.deployment:
            for document in documents:
                body = {k: v for k, v in document.items() if k != "kind"}
                client.request("DELETE", f"{API}/deployments/{quote(args.deployment, safe='')}", body)
            print(f"services of {args.file} removed from deployment {args.deployment}")
            return
        client.request("DELETE", API, documents)
        print(f"deleted the {len(documents)} document(s) of {args.file}")
        return
    if not args.kind or not args.name:
        raise CommandError("say what to delete: vamp delete KIND NAME, or vamp delete -f FILE", 2)
    path = _artifact_path(args.kind, args.name)
    client.request("DELETE", path)
    print(f"{args.kind[:-1]} {args.name} deleted")


def _scale(args: argparse.Namespace, client: AdminClient) -> None:
    parts = args.service.split("/")
    if len(parts) != 3 or not all(parts):
        raise CommandError(f"expected DEPLOYMENT/CLUSTER/SERVICE, got {args.service!r}", 2)
    if args.instances < 0:
        raise CommandError("the number of instances must be 0 or more", 2)
    deployment, cluster, service = (quote(p, safe="") for p in parts)
    path = f"{API}/deployments/{deployment}/clusters/{cluster}/services/{service}/scale"
    scale = client.request("GET", path).data or {}
    scale = {k: v for k, v in scale.items() if k not in ("kind", "name")}
    scale["instances"] = args.instances
    answer = client.request("PUT", path, scale)
    if not args.no_wait:
        waiting.until_deployed(client, parts[0], args.timeout, service=f"{parts[1]}/{parts[2]}")
    emit(args, answer.data, lambda: f"{args.service} scaled to {args.instances} instance(s)")


def _metrics(args: argparse.Namespace, client: AdminClient) -> None:
    """`vamp metrics SCOPE`: the summary the API's `all` metric gives, as a table of figures."""
    scope = args.scope.strip("/")
    if not scope.startswith(("gateways/", "deployments/")):
        raise CommandError(f"expected gateways/NAME… or deployments/NAME/clusters/…, got {args.scope!r}", 2)
    path = f"{API}/metrics/{quote(scope, safe='/:')}/all?window={quote(args.window)}"
    answer = client.request("GET", path).data or {}
    summary = answer.get("value") or {}

    def shown(value: Any, unit: str = "", digits: int = 1) -> str:
        if value is None:
            return "-"
        return f"{value:,.{digits}f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"

    rows = [["requests", shown(summary.get("requests"))], ["rate", shown(summary.get("rate"), "/s")],
            *[[f"{cls} responses", shown(count)] for cls, count in (summary.get("classes") or {}).items() if count],
            ["response time (mean)", shown(summary.get("response_time"), " ms")],
            *[[name, shown(summary.get(name), " ms")] for name in ("p50", "p95", "p99")],
            ["errors (5xx)", shown(summary.get("errors"))],
            ["health", "-" if summary.get("health") is None else f"{summary['health']:.2%}"],
            ["upstream errors", shown(summary.get("upstream_errors"))],
            ["in flight", shown(summary.get("in_flight"))]]
    emit(args, answer, lambda: f"{scope}, over the last {shown(answer.get('window'), 's', 0)}:\n"
                               + render_table(("METRIC", "VALUE"), rows))


def apply_documents(args: argparse.Namespace, client: AdminClient) -> None:
    """`vamp apply -f FILE`: documents that all have `kind:` go to the control plane API (PUT /api/v1); anything
    else is a gateways file, for the gateways API (stdin too: it can be read only once)."""
    if args.file != "-":
        try:
            documents = _read(args.file)
        except CommandError:        # the gateways file reader says what is wrong, with the line of a YAML error
            documents = []
        if documents and all(isinstance(d, dict) and "kind" in d for d in documents):
            answer = client.request("PUT", API, documents)
            for document in answer.data or []:
                print(f"{document.get('kind', 'artifact')} {document.get('name')} applied")
            return
    apply_gateways_file(args, client)


def _metrics_window(text: str) -> float:
    """`--metrics-window`: a duration of at least 1 s, or 0 (off)."""
    try:
        seconds = parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if 0 < seconds < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1s (or 0: no aggregation), got {text!r}")
    return seconds


def _worker_count(text: str) -> int:
    """`--workers`: a whole number of at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {count}")
    return count


def _port_range(text: str) -> range:
    """`--internal-ports`: FIRST-LAST, both included, within 1-65535."""
    first, dash, last = text.strip().partition("-")
    try:
        low, high = int(first), int(last)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ports FIRST-LAST, like 40000-40999, got {text!r}") from None
    if not (dash and 1 <= low <= high <= 65535):
        raise argparse.ArgumentTypeError(f"expected ports FIRST-LAST within 1-65535, FIRST not above LAST, "
                                         f"got {text!r}")
    return range(low, high + 1)


def _leader_ttl(text: str) -> int:
    """`--leader-ttl`: a duration of whole seconds, at least 2 (etcd's leases count in seconds)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 2 or seconds != int(seconds):
        raise argparse.ArgumentTypeError(f"expected whole seconds, at least 2s, got {text!r}")
    return int(seconds)


def _run_store(args: argparse.Namespace) -> StoreAddress | None:
    """The etcd store of `--store` with its options (None without it: SQLite); ValueError or TokenError saying
    what is wrong."""
    if args.store is None:
        if store_options_given(args) or args.leader_ttl is not None or args.api_url is not None:
            raise ValueError("--leader-ttl, --api-url and the --etcd-* options go with --store")
        return None
    from gateway import StoreAddress
    if args.api_url is not None and not args.api_url.startswith(("http://", "https://")):
        raise ValueError(f"--api-url expects http://HOST:PORT, got {args.api_url!r}")
    return StoreAddress.parse(args.store, **store_options_from(args))


def _run(args: argparse.Namespace) -> int:
    from control.platform import DEFAULT_LEADER_TTL, serve
    from gateway import AdminBindingError, check_admin_binding, parse_admin_address

    setup_logging()
    try:
        token = token_from(args)
        host, port = parse_admin_address(args.api)
        check_admin_binding(host, token, "the API")
        store = _run_store(args)
        if args.orchestrator != "kubernetes" and (args.kubeconfig is not None or args.namespace is not None):
            raise ValueError("--kubeconfig and --namespace go with --orchestrator kubernetes")
    except (TokenError, AdminBindingError, ValueError) as exc:
        print(f"vamp: {str(exc).replace('--admin', '--api')}", file=sys.stderr)
        return 2
    import uvloop
    try:
        return uvloop.run(serve(Path(args.state_dir), host, port, token, args.bind, args.grace,
                                public_metrics=args.public_metrics, events_max_count=args.events_max_count,
                                events_max_age=args.events_max_age, metrics_window=args.metrics_window,
                                workers=args.workers, store=store, leader_ttl=args.leader_ttl or DEFAULT_LEADER_TTL,
                                api_url=args.api_url, orchestrator=args.orchestrator,
                                kubeconfig=args.kubeconfig, namespace=args.namespace,
                                internal_ports=args.internal_ports))
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()      # here, not at exit, where a closed pipe could only print a traceback
    except BrokenPipeError:     # the reader went away (`vamp get … | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())   # what is still buffered goes nowhere when Python exits
        return EXIT_BROKEN_PIPE
    return status


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
