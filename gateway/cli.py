"""The `vamp` command line: `vamp gateway --config FILE` runs the gateway alone.

Exit codes (DESIGN.md §6): 0 success, 1 runtime failure, 2 bad input (configuration, arguments). Errors are
one line on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

log = logging.getLogger("vamp")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage()})


def _setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # one line, exit 2
        self.exit(2, f"vamp: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vamp", description="Vamp: canary releases with a fast programmable gateway.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gw = sub.add_parser("gateway", help="run the gateway alone, serving every gateway in a config file")
    gw.add_argument("--config", required=True, help="gateways YAML file (DESIGN.md §3)")
    gw.add_argument("--admin", default="127.0.0.1:9090", help="admin API address HOST:PORT (default %(default)s)")
    gw.add_argument("--admin-token", default=os.environ.get("VAMP_ADMIN_TOKEN"),
                    help="bearer token for the admin API (default: $VAMP_ADMIN_TOKEN)")
    gw.add_argument("--state-dir", default=".vamp", help="state directory (default %(default)s)")
    gw.add_argument("--grace", type=float, default=30.0,
                    help="seconds in-flight requests get to finish on SIGTERM (default %(default)s)")
    gw.add_argument("--log-format", choices=("text", "json"), default="text")
    gw.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "gateway":
        return run_gateway(args)
    return 2


def run_gateway(args: argparse.Namespace) -> int:
    from .admin import AdminBindingError, check_admin_binding, parse_admin_address
    from .config import ConfigError, load_file

    _setup_logging(args.log_format, args.log_level)
    try:
        config = load_file(args.config)
    except ConfigError as exc:
        print(f"vamp: {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        admin_host, admin_port = parse_admin_address(args.admin)
        check_admin_binding(admin_host, args.admin_token)
    except AdminBindingError as exc:
        print(f"vamp: {exc}", file=sys.stderr)
        return 2

    import uvloop
    try:
        return uvloop.run(_serve(config, admin_host, admin_port, args))
    except KeyboardInterrupt:
        return 0


async def _serve(config, admin_host: str, admin_port: int, args: argparse.Namespace) -> int:
    from aiohttp import web

    from .admin import build_app
    from .server import Runtime

    loop = asyncio.get_running_loop()
    runtime = Runtime(loop)
    try:
        await runtime.apply(config)
    except OSError as exc:
        print(f"vamp: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    app = build_app(runtime, args.admin_token)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, admin_host, admin_port).start()
    except OSError as exc:
        print(f"vamp: cannot listen on admin address {admin_host}:{admin_port}: {exc.strerror or exc}",
              file=sys.stderr)
        await runtime.close()
        return 1
    log.info("gateway ready: %d gateway(s); admin API on http://%s:%d", len(runtime.table.gateways),
             admin_host, admin_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing requests in flight (grace %.0fs)", args.grace)
    await runtime.shutdown(args.grace)
    await runner.cleanup()
    return 0
