"""`vamp loadtest URL …`: drive traffic through a canary split and report what each version received.

Builds the `Plan` from the command line, reads the expected split (`--expect`, or a gateway's routes with
`--from-gateway`, read from the API at `--api`), runs it with a live progress line, writes `--plot` /
`--json`, prints the summary, and exits 0 when the run passed, 3 when it did not, 2 for bad input (or without
the `vamp[loadtest]` extra, whose install command it prints) and 1 when something failed at run time.
Whatever can be found wrong before the run is found before any request is sent; the summary's verdict line
and the exit status always agree (PASS is 0, anything else FAIL).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from typing import Any

from gateway.common.cli import DeprecatedAlias, add_server_options, api_token, api_url

from .plan import (MAX_CLIENTS, MAX_CONCURRENCY, Plan, PlanError, is_ip_literal, parse_body, parse_cookie,
                   parse_expectations, parse_fraction, parse_grouping, parse_header, parse_rate, parse_seconds,
                   parse_url, positive_int)

SUMMARY_WIDTH = 140       # columns of the summary when stdout is not a terminal
EXTRA_MODULES = ("hdrh", "numpy", "rich", "scipy", "matplotlib")    # what the `vamp[loadtest]` extra installs
INSTALL_HINT = "pip install 'vamp[loadtest]'"
PROBE_TIMEOUT = 1.0       # seconds to try each address of a host name before the run

EXAMPLES = """\
examples:
  vamp loadtest http://127.0.0.1:9050/ --duration 30s --by header:X-Version --expect 1.0.0=90% --expect 1.1.0=10%
  vamp loadtest http://127.0.0.1:9050/ --by header:X-Version --from-gateway sava/sava/webport \\
      --api http://127.0.0.1:8080
  vamp loadtest http://127.0.0.1:9050/ --clients 500 --sticky --mix browsers --forwarded-for countries:GB=20,US=80

exit status: 0 passed, 3 the split, the error rate or stickiness did not hold, 2 bad input (or a split that
cannot be judged), 1 failure."""


def register(commands: Any) -> None:
    """Adds `loadtest` to the subcommands of a `vamp` parser (what `add_subparsers()` returned). Parsing needs
    none of the extra's modules; running does."""
    parser = commands.add_parser(
        "loadtest", help="load-test a canary split and report what each route received",
        description=__doc__.split("\n")[0], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="http://HOST[:PORT]/PATH of the gateway (or any HTTP/1.1 server)")
    load = parser.add_argument_group("load")
    load.add_argument("-d", "--duration", help="how long to run, e.g. 30s, 2m (default 10s unless --requests)")
    load.add_argument("-n", "--requests", help="stop after this many finished requests")
    load.add_argument("-c", "--concurrency", default="64",
                      help="connections; in the closed model, requests in flight (default %(default)s)")
    load.add_argument("-r", "--rate", help="open model: requests per second, latency measured from when each "
                                           "request was due (corrects coordinated omission)")
    load.add_argument("-p", "--processes", default="1", help="worker processes, to use more cores (default 1)")
    load.add_argument("--timeout", default="10s", help="a request taking longer fails as a timeout (default 10s)")
    split = parser.add_argument_group("split")
    split.add_argument("--by", default="status",
                       help="group responses by header:NAME, body:/REGEX/ or status (default status)")
    split.add_argument("--expect", action="append", default=[], metavar="GROUP=SHARE",
                       help="expected share of a group, e.g. 1.1.0=10%% (repeat for each group)")
    split.add_argument("--from-gateway", metavar="NAME", help="expect the split of this gateway's routes, read "
                                                              "from the API at --api")
    add_server_options(split)
    split.add_argument("--admin-token", dest="token", action=DeprecatedAlias, replacement="--token",
                       help=argparse.SUPPRESS)
    split.add_argument("--max-errors", default="0.1%", help="error rate above which the run fails (default 0.1%%)")
    split.add_argument("--alpha", default="0.001", help="significance level of the split test (default 0.001)")
    users = parser.add_argument_group("traffic")
    users.add_argument("--clients", help="virtual users, each with its own headers, address and cookies")
    users.add_argument("--sticky", action="store_true",
                       help="virtual users keep cookies; fail when one sees more than one group")
    users.add_argument("--mix", help="user agents: browsers, mobile, or a file (one per line, optional weight)")
    users.add_argument("--forwarded-for", metavar="SPEC",
                       help="X-Forwarded-For: countries:GB=20,US=80 (addresses from those countries) or an address")
    users.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="request header ({user} expands to the virtual user's number)")
    users.add_argument("--cookie", action="append", default=[], metavar="NAME=VALUE", help="request cookie")
    users.add_argument("-m", "--method", default="GET", help="request method (default GET)")
    users.add_argument("--body", help="request body: TEXT or @FILE")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="FILE", help="write every figure as JSON (loadtest/result.schema.json)")
    output.add_argument("--plot", metavar="FILE", help="write a PNG: share over time and latency per group")
    output.add_argument("--no-progress", action="store_true", help="no live progress line")
    parser.set_defaults(func=main)


def build_plan(args: argparse.Namespace) -> Plan:
    host, port, target, host_header = parse_url(args.url)
    requests = None if args.requests is None else positive_int(args.requests, "--requests", 10**12)
    duration = (parse_seconds(args.duration, "--duration") if args.duration is not None
                else None if requests is not None else 10.0)
    concurrency = positive_int(args.concurrency, "--concurrency", MAX_CONCURRENCY)
    processes = positive_int(args.processes, "--processes", 256)
    if processes > concurrency:
        raise PlanError(f"--processes: {processes} processes need at least as many connections (--concurrency)")
    clients = None if args.clients is None else positive_int(args.clients, "--clients", MAX_CLIENTS)
    if args.sticky and clients is None:
        clients = concurrency
    if clients is not None and clients < processes:
        raise PlanError(f"--clients: {processes} processes need at least {processes} virtual users")
    if args.expect and args.from_gateway:
        raise PlanError("--expect and --from-gateway: give one of them")
    method = args.method.upper()
    if not method.isalpha() or len(method) > 20:
        raise PlanError(f"--method: expected a method name like GET or POST, got {args.method!r}")
    alpha = parse_fraction(args.alpha, "--alpha")
    if not 0 < alpha < 1:
        raise PlanError("--alpha: expected a significance level between 0 and 1, e.g. 0.001")
    return Plan(
        url=args.url, host=resolve_host(host, port), port=port, target=target, host_header=host_header,
        method=method, body=parse_body(args.body),
        headers=tuple(parse_header(h) for h in args.header),
        cookies=tuple(parse_cookie(c) for c in args.cookie),
        duration=duration, requests=requests, concurrency=concurrency, rate=parse_rate(args.rate),
        processes=processes, timeout=parse_seconds(args.timeout, "--timeout"),
        by=parse_grouping(args.by),
        expect=parse_expectations(args.expect) if args.expect else None,
        from_gateway=args.from_gateway,
        admin=api_url(args), admin_token=api_token(args),
        max_errors=parse_fraction(args.max_errors, "--max-errors"), alpha=alpha,
        clients=clients, sticky=args.sticky, mix=args.mix, forwarded_for=args.forwarded_for,
        json_path=_writable(args.json, "--json"), plot_path=_writable(args.plot, "--plot"),
        progress=not args.no_progress,
    )


def _writable(path: str | None, option: str) -> str | None:
    """An output path, checked before the run rather than after it."""
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise PlanError(f"{option}: cannot write {path!r} (no such folder, not writable, or a folder)")
    return path


def resolve_host(host: str, port: int) -> str:
    """The address to connect to, resolved once (the Host header keeps the name): of the name's addresses
    (`localhost` is often ::1 and 127.0.0.1), the first that accepts a connection, else the first."""
    if is_ip_literal(host):
        return host
    try:
        addresses = [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except socket.gaierror as exc:
        raise PlanError(f"URL: cannot resolve {host!r}: {exc}") from None
    for address in addresses:
        try:
            socket.create_connection((address, port), timeout=PROBE_TIMEOUT).close()
        except OSError:
            continue
        return address
    return addresses[0]


def _summary_console():
    """stdout for the summary: a terminal's width, or 140 columns when written to a file or a pipe."""
    from rich.console import Console
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console() if wide else Console(width=SUMMARY_WIDTH)


def missing_extra() -> str | None:
    """The first module of the `vamp[loadtest]` extra that is not installed, or None: the rest of Vamp runs
    without them, so `vamp loadtest` checks before it imports them."""
    return next((name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None), None)


def main(args: argparse.Namespace) -> int:
    missing = missing_extra()
    if missing is not None:
        print(f"vamp loadtest: the load tester's extra is not installed (no module {missing!r}): {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    # Imported here: `vamp --help` and the other commands should not pay for scipy, hdrh and rich.
    from rich.console import Console

    from . import runner
    from .expectation import ExpectationError, GatewayUnreachable, gateway_route_shares, groups_for_routes
    from .report import LiveProgress, print_summary, write_json
    from .traffic import Traffic
    from .verdict import BAD_INPUT, FAILURE, failed, judge, normalised

    try:
        plan = build_plan(args)
        traffic = Traffic(plan)
        shares = gateway_route_shares(plan, traffic) if plan.from_gateway else None
    except PlanError as exc:
        print(f"vamp loadtest: {exc}", file=sys.stderr)
        return 2
    except GatewayUnreachable as exc:
        print(f"vamp loadtest: {exc}", file=sys.stderr)
        return 1
    except ExpectationError as exc:
        print(f"vamp loadtest: {exc}", file=sys.stderr)
        return 2

    with LiveProgress(plan, Console(stderr=True)) as live:     # silent off a terminal or with --no-progress
        try:
            outcome = runner.run(plan, traffic, live.update)    # Ctrl-C ends the run early, with its results
        except KeyboardInterrupt:                               # ... unless it came before the run started
            print("vamp loadtest: interrupted", file=sys.stderr)
            return 1
        except RuntimeError as exc:                             # a worker process died or never started
            print(f"vamp loadtest: {exc}", file=sys.stderr)
            return 1
    snapshot = outcome.snapshot
    observed, unit = runner.split_counts(plan, snapshot)
    mapping_error = None
    try:
        expected = plan.expect if shares is None else normalised(groups_for_routes(shares, observed))
    except ExpectationError as exc:     # the routes do not say which groups they are: report without a split
        expected, mapping_error = None, exc
    sticky = runner.sticky_summary(plan, snapshot)
    expected_from = "expect" if plan.expect else f"gateway:{plan.from_gateway}" if plan.from_gateway else None
    verdict = judge(observed=observed, expected=expected, expected_from=expected_from,
                    unit=unit, requests=snapshot["requests"], errors=snapshot["errors"], alpha=plan.alpha,
                    max_errors=plan.max_errors,
                    users_with_several_groups=None if sticky is None else sticky["users_with_several_groups"])
    if mapping_error is not None:
        print(f"vamp loadtest: {mapping_error}", file=sys.stderr)
        verdict = failed(verdict, f"the split could not be judged: {mapping_error}", BAD_INPUT)
    result = runner.build_result(plan, outcome, expected, verdict)
    try:                                # written before the summary, whose verdict line says if they failed
        if plan.plot_path:
            from .plot import write_plot
            write_plot(result, plan.plot_path)
        if plan.json_path:
            write_json(result, plan.json_path)
    except OSError as exc:
        message = f"cannot write {exc.filename}: {exc.strerror}"
        print(f"vamp loadtest: {message}", file=sys.stderr)
        result["verdict"] = failed(result["verdict"], message, FAILURE)
    print_summary(result, _summary_console())
    return result["verdict"]["exit_status"]
