"""The gateway's commands of the `vamp` command line.

`register(commands)` adds the gateway's commands to a `vamp` parser: `vamp gateway --config FILE` runs the
gateway alone, `worker` is the internal worker process of `vamp gateway --workers N`, and `vamp gateways …` and
`vamp apply -f FILE` drive gateways through an API (`gateway.admin.client`). The `vamp` command is built in one
place, `control.cli`, from each part's `register`; `build_parser()` here holds the gateway's commands alone,
which is what `python -m gateway` runs. What the commands of every part share (the parser, logging, the token
options) is `gateway.common.cli`.

Exit codes (docs/cli.md): 0 success, 1 runtime failure, 2 bad input (configuration, arguments). Errors are
one line on stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import sys

from typing import TYPE_CHECKING

from gateway.admin import client as admin_client
from gateway.common.cli import Commands, TokenError, add_token_options, new_parser, setup_logging, token_from

if TYPE_CHECKING:
    from gateway.config.model import Config
    from gateway.config.state import StateStore

log = logging.getLogger("vamp")


def build_parser() -> argparse.ArgumentParser:
    """The gateway's commands alone (`python -m gateway`); the whole `vamp` is `control.cli.build_parser`."""
    parser, commands = new_parser()
    register(commands)
    return parser


def register(commands: Commands, *, apply: admin_client.Handler = admin_client.apply) -> None:
    """Adds `gateway`, `worker`, `gateways …` and `apply` to the subcommands of a `vamp` parser. `apply` is what
    `vamp apply -f FILE` does with the file: by default, apply the gateways of a gateways file."""
    gw = commands.add_parser("gateway", help="run the gateway alone, serving every gateway in a config file")
    gw.add_argument("--config", help="gateways YAML file: seeds a new state directory; SIGHUP re-applies it")
    gw.add_argument("--admin", default="127.0.0.1:9090", help="admin API address HOST:PORT (default %(default)s)")
    add_token_options(gw, "the admin API", "--admin-token")
    gw.add_argument("--state-dir", help="where applied changes persist (default: .vamp/gateway-<id of the "
                                       "--config file's path>, or .vamp/gateway without --config)")
    gw.add_argument("--workers", type=int, default=1,
                    help="worker processes sharing each port (default %(default)s: serve in this process)")
    gw.add_argument("--grace", type=float, default=30.0,
                    help="seconds in-flight requests get to finish on SIGTERM (default %(default)s)")
    _logging_options(gw)
    gw.set_defaults(func=run_gateway)
    worker = commands.add_parser("worker")      # internal: a worker process of `vamp gateway --workers N`
    _logging_options(worker)
    worker.set_defaults(func=run_worker)
    admin_client.add_commands(commands, apply=apply)


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway ARGS`: the gateway's commands alone."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


def run_worker(args: argparse.Namespace) -> int:
    import uvloop

    from gateway.runtime.workers import serve_worker
    setup_logging(args.log_format, args.log_level)
    return uvloop.run(serve_worker())


def default_state_dir(config: str | None) -> str:
    """One state directory per config file (by its absolute path), so gateways started from different files
    in one working directory never share or overwrite each other's state."""
    if config is None:
        return os.path.join(".vamp", "gateway")
    digest = hashlib.sha1(os.path.abspath(config).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return os.path.join(".vamp", f"gateway-{digest}")


def run_gateway(args: argparse.Namespace) -> int:
    from gateway.admin.api import AdminBindingError, check_admin_binding, parse_admin_address
    from gateway.config.load import ConfigError, load_file
    from gateway.config.state import StateError, StateStore

    setup_logging(args.log_format, args.log_level)
    if args.workers < 1:
        print("vamp: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        args.token = token_from(args)
        admin_host, admin_port = parse_admin_address(args.admin)
        check_admin_binding(admin_host, args.token)
    except (TokenError, AdminBindingError) as exc:
        print(f"vamp: {exc}", file=sys.stderr)
        return 2
    file_config = None
    if args.config is not None:
        try:
            file_config = load_file(args.config)
        except ConfigError as exc:
            print(f"vamp: {args.config}: {exc}", file=sys.stderr)
            return 2
    args.state_dir = args.state_dir or default_state_dir(args.config)
    store = StateStore(args.state_dir)
    try:
        stored = store.load()
    except StateError as exc:
        print(f"vamp: {exc}", file=sys.stderr)
        return 1
    if stored is not None:
        config = stored
        if file_config is not None and file_config != stored:
            log.info("serving the configuration last applied in %s; %s only seeds a new state directory "
                     "(send SIGHUP to apply it)", args.state_dir, args.config)
    elif file_config is not None:
        config = file_config
    else:
        print("vamp: --config is required when the state directory holds no configuration yet", file=sys.stderr)
        return 2

    import uvloop
    try:
        return uvloop.run(_serve(config, store, admin_host, admin_port, args))
    except KeyboardInterrupt:
        return 0


async def _serve(config: Config, store: StateStore, admin_host: str, admin_port: int, args: argparse.Namespace
                 ) -> int:
    from aiohttp import web

    from gateway.admin.api import READY, build_app
    from gateway.common.errors import Conflict
    from gateway.config.load import ConfigError, load_file
    from gateway.runtime.manager import ConfigManager
    from gateway.runtime.runtime import Runtime
    from gateway.runtime.workers import ApplyError, LocalWorker, ProcessWorker, Worker

    loop = asyncio.get_running_loop()
    controller: ConfigManager
    workers: list[Worker]
    if args.workers == 1:
        workers = [LocalWorker(Runtime(loop))]
    else:
        worker_args = ["--log-format", args.log_format, "--log-level", args.log_level]
        workers = [ProcessWorker(i, worker_args, lambda: controller.effective) for i in range(args.workers)]
    controller = ConfigManager(workers, store)
    try:
        await controller.start(config)
    except ApplyError as exc:
        print(f"vamp: {exc}", file=sys.stderr)
        await controller.shutdown(0)
        return 1
    app = build_app(controller, args.token, public_metrics=args.public_metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, admin_host, admin_port).start()
    except OSError as exc:
        print(f"vamp: cannot listen on admin address {admin_host}:{admin_port}: {exc.strerror or exc}",
              file=sys.stderr)
        await controller.shutdown(0)
        return 1
    app[READY][0] = True
    log.info("gateway ready: %d gateway(s), %d worker(s); admin API on http://%s:%d",
             len(controller.desired.gateways), args.workers, admin_host, admin_port)

    async def reload() -> None:
        if args.config is None:
            log.warning("SIGHUP: no --config file to reload")
            return
        try:
            await controller.replace(load_file(args.config))
            log.info("SIGHUP: applied %s", args.config)
        except (ConfigError, Conflict) as exc:
            log.error("SIGHUP: %s not applied, the configuration is unchanged: %s", args.config, exc)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    await stop.wait()
    log.info("stopping: finishing requests in flight (grace %.0fs)", args.grace)
    app[READY][0] = False
    await controller.shutdown(args.grace)
    await runner.cleanup()
    return 0
