"""The client of the gateways API (docs/admin-api.md, docs/cli.md): `AdminClient` sends JSON over HTTP to
`/api/v1`, and the commands built on it drive running gateways: `vamp gateways list|get|set-weight|drain|undrain|
delete` and `vamp apply -f FILE`.

Both servers serve `/api/v1/gateways`: `vamp run`'s API and a `vamp gateway`'s admin API (`--api
http://127.0.0.1:9090`). How a command names its server and token (`--api`, `--token`), its output and its
errors are what every part's command line shares (gateway.common.cli); `command(handler)` makes a command of a
function of the arguments and a client. `add_commands(subparsers)` registers the commands on the `vamp` parser.
Output is aligned text tables for people (`-o table`, the default) or, for scripts, the API's documents as JSON
or YAML (`-o json|yaml`). Exit codes: 0 success; 1 the API is unreachable or failed (5xx); 2 bad input: the
arguments, the file, or a 4xx answer, whose `error` and `field` are printed. Errors are one line on stderr and
never show the token. HTTP is the stdlib's `urllib`, without proxies and without following redirects, so the
token only ever goes to the URL given.
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.common.cli import (DEFAULT_API_URL, LIST_QUERY, OUTPUTS, CommandError, Commands, add_server_options,
                                api_token, api_url, emit, print_data, render_table)
from gateway.common.units import format_percent, parse_percent
from gateway.config.load import ConfigError, parse_document, parse_target_address
from gateway.config.model import FULL

DEFAULT_TIMEOUT = 30.0      # seconds for one API request (a write returns once every worker serves it)
API = "/api/v1/gateways"
Document = dict[str, Any]   # a JSON object of the API

# the last part of `ROUTE/TARGET`: host:port or [v6]:port, `https://` before it for a target reached over TLS
_TARGET_ADDRESS = re.compile(r"(?i:https://)?(?:\[[0-9A-Za-z:.%]+\]|[^\s/\[\]:]+):[0-9]{1,5}")


# -- HTTP ----------------------------------------------------------------------------------------------
class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None      # answered as an error instead: the token never follows a redirect elsewhere


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _RefuseRedirects())


@dataclass(frozen=True)
class Answer:
    status: int
    data: Any            # the decoded JSON body; None when the body is empty


def normalise_api_url(text: str) -> str:
    """'127.0.0.1:9090', 'http://host:9090/', 'http://host:9090/api/v1' -> 'http://host:9090'."""
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise CommandError("--api expects a URL without user or password; give the token in VAMP_TOKEN or "
                           "--token")
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query \
            and not parts.fragment and (parts.port is None or parts.port > 0)
    except ValueError:       # a port that is not a number or out of range
        valid = False
    if not valid:
        raise CommandError(f"--api expects a URL like {DEFAULT_API_URL}, got {text!r}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path.removesuffix('/api/v1')}"


def gateway_path(name: str) -> str:
    """The API path of a gateway; names may contain '/' and it stays a '/' in the path."""
    if not name:
        raise CommandError("expected a gateway name")
    return f"{API}/{urllib.parse.quote(name, safe='/:')}"


class AdminClient:
    """JSON over HTTP to the API at `base_url`; 4xx answers raise CommandError(exit 2), anything else
    that is not a 2xx (or listed in `expect`) raises CommandError(exit 1)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = normalise_api_url(url)
        self.token = token or None
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *, validate_only: bool = False,
                expect: tuple[int, ...] = ()) -> Answer:
        url = self.base_url + path + ("?validate_only=true" if validate_only else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, default=str).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, _error_body(exc)
        except (OSError, http.client.HTTPException) as exc:      # URLError is an OSError
            raise CommandError(f"cannot reach the API at {self.base_url}: {_reason(exc)} (is `vamp run` running? "
                               "For a `vamp gateway`, give its admin address: --api or VAMP_API)", 1) from None
        if 200 <= status < 300 or status in expect:
            return Answer(status, self._decode(status, raw))
        raise self._failure(status, raw)

    def get_gateway(self, name: str) -> Document:
        return _document(self.request("GET", gateway_path(name)).data, self.base_url)

    def patch_gateway(self, name: str, patch: Document) -> Document:
        return _document(self.request("PATCH", gateway_path(name), patch).data, self.base_url)

    def _decode(self, status: int, raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CommandError(f"the API at {self.base_url} answered {status} with a body that is not JSON "
                               "(is it a Vamp API?)", 1) from None

    def _failure(self, status: int, raw: bytes) -> CommandError:
        error, field = _error_of(status, raw)
        if not 400 <= status < 500:
            return CommandError(f"the API at {self.base_url} failed: HTTP {status}: {error}", 1)
        message = error + (f" (field: {field})" if field else "")
        if status == http.HTTPStatus.UNAUTHORIZED:
            message += ("; the token was refused" if self.token
                        else "; this API needs a token: set VAMP_TOKEN or --token")
        return CommandError(message, 2)


def client_for(args: argparse.Namespace, timeout: float = DEFAULT_TIMEOUT) -> AdminClient:
    """A client of the API the arguments name (`--api`, `--token`, their variables)."""
    return AdminClient(api_url(args), api_token(args), timeout)


def _error_body(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def _reason(exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _error_of(status: int, raw: bytes) -> tuple[str, str | None]:
    """(error, field) of an error answer: the contract's JSON body, else its first line of text."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        field = body.get("field")
        return str(body["error"]), (str(field) if field not in (None, "") else None)
    text = raw.decode("utf-8", "replace").strip()
    first_line = text.splitlines()[0] if text else ""
    return first_line or _phrase(status), None


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "no reason given"


def _document(data: Any, base_url: str) -> Document:
    if not isinstance(data, dict):
        raise CommandError(f"the API at {base_url} answered something other than a gateway document", 1)
    return data


# -- tables ------------------------------------------------------------------------------------------
def route_weights(routes: Document) -> dict[str, str]:
    """Each route's share as shown to people: its weight, or for a route without one, what it gets from
    sharing the rest evenly (the first ones take the leftover basis points, as the gateway does)."""
    given = {name: route.get("weight") for name, route in routes.items()
             if isinstance(route, dict) and route.get("weight") is not None}
    sharing = [name for name in routes if name not in given]
    shown = {name: str(weight) for name, weight in given.items()}
    if sharing:
        try:
            rest = FULL - sum(parse_percent(weight) for weight in given.values())
        except ValueError:
            rest = -1
        share, leftover = divmod(max(rest, 0), len(sharing))
        for index, name in enumerate(sharing):
            shown[name] = format_percent(share + (index < leftover)) if rest >= 0 else "?"
    return {name: shown[name] for name in routes}


def weights_summary(routes: Document) -> str:
    """'sava-1.0=90% sava-1.1=10%'."""
    return " ".join(f"{name}={weight}" for name, weight in route_weights(routes).items())


def gateways_table(gateways: list[Any]) -> str:
    """One row a gateway; a REVISION column (the store revision each serves, docs/fleet.md) when any has one."""
    if not gateways:
        return "no gateways"
    revisions = [_mapping(doc.get("status")).get("revision") for doc in gateways]
    with_revisions = any(revision is not None for revision in revisions)
    rows = []
    for doc, revision in zip(gateways, revisions):
        routes = _routes_of(doc)
        row = [doc.get("name"), doc.get("port"), doc.get("sticky"), len(routes), weights_summary(routes)]
        rows.append(row + [revision] if with_revisions else row)
    headers = ("NAME", "PORT", "STICKY", "ROUTES", "WEIGHTS")
    return render_table(headers + ("REVISION",) if with_revisions else headers, rows)


GATEWAY_COLUMNS = ("ROUTE", "WEIGHT", "CONDITION", "TARGET", "STATE", "IN-FLIGHT", "DRAIN-ENDS")


def gateway_table(doc: Document) -> str:
    """Header lines (name, port, bind, sticky, state, virtual hosts), then one row per route and target,
    including routes and targets that were removed but are still draining."""
    status = _mapping(doc.get("status"))
    header = f"gateway {doc.get('name')}: port {doc.get('port')} on {doc.get('bind', '-')}"
    sticky = doc.get("sticky") or "none"
    header += f", sticky {sticky}" + (f" (ttl {doc.get('sticky_ttl')})" if sticky != "none" else "")
    header += f", state {status.get('state', '-')}"
    if status.get("drain_ends_at"):
        header += f" until {status['drain_ends_at']}"
    if doc.get("virtual_hosts"):
        header += "\nvirtual hosts: " + " ".join(map(str, doc["virtual_hosts"]))
    routes = _routes_of(doc)
    route_status = _mapping(status.get("routes"))
    weights = route_weights(routes)
    rows: list[list[Any]] = []
    for name, route in routes.items():
        rows += _route_rows(name, route, route_status.get(name) or {}, weights[name])
    for name, state in route_status.items():
        if name not in routes:
            rows += _route_rows(name, {}, state or {}, None)
    if not rows:
        return header + "\n\nno routes"
    return header + "\n\n" + render_table(GATEWAY_COLUMNS, rows)


def _routes_of(doc: Document) -> Document:
    return _mapping(doc.get("routes"))


def _mapping(value: Any) -> Document:
    """A part of a document that should be a mapping: itself if it is, else empty."""
    return value if isinstance(value, dict) else {}


def _route_rows(name: str, route: Document, status: Document, weight: str | None) -> list[list[Any]]:
    condition = route.get("condition")
    if condition:
        condition = f"{condition} ({route.get('condition_strength', '100%')})"
    route_state = status.get("state")
    target_status = dict(_mapping(status.get("targets")))
    targets: list[tuple[str, Document]] = []
    for target in route.get("targets") or ():
        address, target_weight, _ = _target_fields(target)
        label = address if target_weight == 100 else f"{address} (weight {target_weight})"
        targets.append((label, target_status.pop(address, None) or {}))
    targets += [(address, state or {}) for address, state in target_status.items()]   # removed, draining
    if not targets:
        return [[name, weight, condition, None, route_state, None, status.get("drain_ends_at")]]
    rows = []
    for index, (label, state) in enumerate(targets):
        shown_state = route_state if route_state not in (None, "active") else state.get("state", route_state)
        if shown_state == "down" and state.get("health") == "unhealthy":
            shown_state = "down (unhealthy)"           # (rather than backed off: docs/health-checks.md)
        rows.append([name, weight if index == 0 else "", condition if index == 0 else "", label, shown_state,
                     state.get("in_flight"), state.get("drain_ends_at") or status.get("drain_ends_at")])
    return rows


def _target_fields(target: Any) -> tuple[str, int, bool]:
    """(address, weight, drain) of a target written as "host:port" or {address, weight, drain}."""
    if isinstance(target, dict):
        return str(target.get("address")), target.get("weight", 100), bool(target.get("drain", False))
    return str(target), 100, False


# -- commands ----------------------------------------------------------------------------------------
def list_gateways(args: argparse.Namespace, client: AdminClient) -> None:
    gateways = client.request("GET", API + LIST_QUERY).data
    if not isinstance(gateways, list):
        raise CommandError(f"the API at {client.base_url} answered something other than a list", 1)
    emit(args, gateways, lambda: gateways_table(gateways))


def get_gateway(args: argparse.Namespace, client: AdminClient) -> None:
    doc = client.get_gateway(args.name)
    emit(args, doc, lambda: gateway_table(doc))


def parse_weight_assignments(assignments: list[str]) -> dict[str, str]:
    """['a=90', 'b=10%', 'c=2.5%'] -> {'a': '90%', 'b': '10%', 'c': '2.5%'} (route names may hold '=')."""
    weights: dict[str, str] = {}
    for assignment in assignments:
        route, sep, percent = assignment.rpartition("=")
        if not sep or not route:
            raise CommandError(f"expected ROUTE=PERCENT (like sava-1.1=10%), got {assignment!r}")
        if route in weights:
            raise CommandError(f"route {route!r} is given twice")
        try:
            weights[route] = format_percent(parse_percent(percent))
        except ValueError as exc:
            raise CommandError(f"route {route!r}: {exc}") from None
    return weights


def set_weight(args: argparse.Namespace, client: AdminClient) -> None:
    weights = parse_weight_assignments(args.weights)
    routes = _routes_of(client.get_gateway(args.name))
    unknown = [route for route in weights if route not in routes]
    if unknown:     # a merge patch would add it as a new route without targets
        raise CommandError(f"gateway {args.name!r} has no route {unknown[0]!r} (routes: {', '.join(routes)})")
    doc = client.patch_gateway(args.name, {"routes": {route: {"weight": weight}
                                                      for route, weight in weights.items()}})
    emit(args, doc, lambda: f"gateway {args.name}: {weights_summary(_routes_of(doc))}")


def split_route_target(spec: str, routes: Document) -> tuple[str, str | None]:
    """'ROUTE' or 'ROUTE/TARGET' -> (route, target or None). Route names may hold '/': a TARGET is what follows
    a '/' when it looks like [https://]host:port or [https://][v6]:port and what comes before names an existing
    route (the last such '/')."""
    cut = len(spec)
    while (cut := spec.rfind("/", 0, cut)) >= 0:
        route, target = spec[:cut], spec[cut + 1:]
        if route in routes and _TARGET_ADDRESS.fullmatch(target):
            return route, target
    if spec in routes:
        return spec, None
    raise CommandError(f"no route {spec!r} (routes: {', '.join(routes) or 'none'})")


def _same_address(a: str, b: str) -> bool:
    try:
        return parse_target_address(a) == parse_target_address(b)
    except ValueError:
        return a == b


def _set_drain(args: argparse.Namespace, client: AdminClient, drain: bool) -> None:
    routes = _routes_of(client.get_gateway(args.name))
    try:
        route, target = split_route_target(args.route, routes)
    except CommandError as exc:
        raise CommandError(f"gateway {args.name!r}: {exc}") from None
    patch: Document
    if target is None:
        patch = {"routes": {route: {"drain": drain}}}
        what = f"route {route}"
    else:
        targets: list[str | Document] = []
        found: str | None = None
        for item in routes[route].get("targets") or ():
            address, weight, item_drain = _target_fields(item)
            if found is None and _same_address(address, target):
                found, item_drain = address, drain
            targets.append(address if weight == 100 and not item_drain
                           else {"address": address, "weight": weight, "drain": item_drain})
        if found is None:
            known = ", ".join(_target_fields(item)[0] for item in routes[route].get("targets") or ()) or "none"
            raise CommandError(f"route {route!r} of gateway {args.name!r} has no target {target!r} "
                               f"(targets: {known})")
        patch = {"routes": {route: {"targets": targets}}}
        what = f"target {found} of route {route}"
    doc = client.patch_gateway(args.name, patch)
    emit(args, doc, lambda: f"gateway {args.name}: {what} {'draining' if drain else 'active'}")


def drain(args: argparse.Namespace, client: AdminClient) -> None:
    _set_drain(args, client, True)


def undrain(args: argparse.Namespace, client: AdminClient) -> None:
    _set_drain(args, client, False)


def delete_gateway(args: argparse.Namespace, client: AdminClient) -> None:
    answer = client.request("DELETE", gateway_path(args.name))
    emit(args, answer.data, lambda: f"gateway {args.name} deleted: it drains, then disappears")


def read_gateways(path: str) -> list[tuple[str, Any]]:
    """The gateways of a file in the `vamp gateway --config` shape ('-' is stdin), as (name, document)."""
    source = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = parse_document(text, source)
    except ConfigError as exc:
        raise CommandError(f"{source}: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"gateways", "geo"}:
        raise CommandError(f"{source}: expected a document with 'gateways' (and optionally 'geo')")
    if data.get("geo") is not None:
        print(f"vamp: note: {source}: 'geo' is a setting of the gateway process (its --config file), not "
              "applied through the admin API", file=sys.stderr)
    gateways = data.get("gateways")
    if gateways is None:
        return []
    if isinstance(gateways, dict):
        return list(gateways.items())
    if not isinstance(gateways, list):
        raise CommandError(f"{source}: 'gateways' must map gateway names to gateways, or list gateways "
                           "each with a 'name'")
    entries: list[tuple[str, Any]] = []
    for index, item in enumerate(gateways):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str):
            raise CommandError(f"{source}: gateways[{index}]: expected a gateway with a 'name'")
        if any(name == seen for seen, _ in entries):
            raise CommandError(f"{source}: gateway {name!r} is given twice")
        entries.append((name, {**item, "name": name}))
    return entries


def _without_status(doc: Any) -> Any:
    return {key: value for key, value in doc.items() if key != "status"} if isinstance(doc, dict) else doc


def _about(name: str, error: CommandError) -> CommandError:
    """The error, naming the gateway unless the API's message already does."""
    if error.exit_code != 2 or repr(name) in str(error) or f"gateway {name}" in str(error):
        return error
    return CommandError(f"gateway {name!r}: {error}", error.exit_code)


def apply(args: argparse.Namespace, client: AdminClient) -> None:
    """Validates every gateway of the file first; only when all are valid, writes those that differ."""
    entries = read_gateways(args.file)
    validated = {}
    for name, doc in entries:
        try:
            validated[name] = client.request("PUT", gateway_path(name), doc, validate_only=True).data
        except CommandError as exc:
            raise _about(name, exc) from None
    results = []
    for name, doc in entries:
        current = client.request("GET", gateway_path(name), expect=(http.HTTPStatus.NOT_FOUND,))
        if current.status == http.HTTPStatus.OK and _without_status(current.data) == _without_status(
                validated[name]):
            outcome, result = "unchanged", current.data
        else:
            try:
                answer = client.request("PUT", gateway_path(name), doc)
            except CommandError as exc:
                raise _about(name, exc) from None
            created = current.status == http.HTTPStatus.NOT_FOUND   # `vamp run` answers 202 either way
            outcome = "created" if created else "configured"
            result = answer.data
        if args.output == "table":
            print(f"gateway {name} {outcome}", flush=True)
        results.append(result)
    if args.output != "table":
        print_data(args.output, results)


# -- wiring ------------------------------------------------------------------------------------------
Handler = Callable[[argparse.Namespace, AdminClient], None]     # a command's body; CommandError for failures


def command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """A command's `func(args) -> int` for the `vamp` parser: runs `handler` with a client of the API the
    arguments name; a CommandError is one line on stderr and its exit code."""
    def run(args: argparse.Namespace) -> int:
        try:
            handler(args, client_for(args))
        except CommandError as exc:
            print(f"vamp: {exc}", file=sys.stderr)
            return exc.exit_code
        return 0
    return run


def add_commands(subparsers: Commands, *, apply: Handler = apply) -> None:
    """Registers `gateways ...` and `apply` on the `vamp` parser's subparsers; `apply` handles `apply -f FILE`
    (by default: the gateways of a gateways file)."""
    common = argparse.ArgumentParser(add_help=False)
    add_server_options(common)
    common.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                        help="table for people (default); json or yaml: what the API answered, for scripts")

    gateways = subparsers.add_parser("gateways", help="list, inspect and change the gateways of `vamp run` or of "
                                                      "a `vamp gateway` (--api)")
    verbs = gateways.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(name, parents=[common], help=help_text,
                                                           description=help_text)
        parser.set_defaults(func=command(handler))
        return parser

    verb("list", list_gateways, "one line per gateway: port, sticky mode, route weights")
    verb("get", get_gateway, "one gateway: its routes and targets with their state").add_argument(
        "name", metavar="NAME")
    parser = verb("set-weight", set_weight, "change route weights in one atomic update")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("weights", nargs="+", metavar="ROUTE=PCT", help="e.g. sava-1.0=90%% sava-1.1=10%%")
    for name, handler, help_text in (("drain", drain, "drain a route or one target of it: no new requests"),
                                     ("undrain", undrain, "give a drained route or target traffic again")):
        parser = verb(name, handler, help_text)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("route", metavar="ROUTE[/TARGET]",
                            help="a route, or ROUTE/host:port (ROUTE/https://host:port for a TLS target)")
    verb("delete", delete_gateway, "remove a gateway: it drains, then disappears").add_argument(
        "name", metavar="NAME")

    parser = subparsers.add_parser("apply", parents=[common], help="create or update the gateways of a file "
                                   "through the API (--api)", description="Validate every gateway of FILE, then "
                                   "create or replace each one that differs (gateways not in FILE stay).")
    parser.add_argument("-f", "--file", required=True, metavar="FILE",
                        help="gateways YAML or JSON, as `vamp gateway --config` takes; '-' reads stdin")
    parser.set_defaults(func=command(apply))
