"""The gateway's commands of the `vamp` command line.

`register(commands)` adds the gateway's commands to a `vamp` parser: `vamp gateway --config FILE` runs the
gateway alone (`vamp gateway --config-store etcd://…`: as one replica of a fleet, docs/fleet.md), `worker` is
the internal worker process of `vamp gateway --workers N`, and `vamp gateways …` and `vamp apply -f FILE`
drive gateways through an API (`gateway.admin.client`). The `vamp` command is built in one place,
`control.cli`, from each part's `register`; `build_parser()` here holds the gateway's commands alone, which is
what `python -m gateway` runs. What the commands of every part share (the parser, logging, the token and store
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

from gateway import compiled
from gateway.admin import client as admin_client
from gateway.common.cli import (Commands, TokenError, add_store_options, add_token_options, new_parser, setup_logging,
                                store_options_from, store_options_given, token_from)

if TYPE_CHECKING:
    from gateway.config.model import Config
    from gateway.config.state import StateStore
    from gateway.store.etcd import StoreAddress

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
    gw.add_argument("--config", help="gateways YAML file: seeds a new state directory (with --config-store: an "
                                     "empty store); SIGHUP re-applies it")
    gw.add_argument("--config-store", metavar="URL",
                    help="serve the gateways kept in etcd, as one replica of a fleet: "
                         "etcd://HOST:PORT[,HOST:PORT...]/PREFIX (etcds:// for TLS); see docs/fleet.md")
    gw.add_argument("--bind", metavar="ADDRESS",
                    help="with --config-store: the address this replica's gateways listen on, whatever their bind")
    add_store_options(gw)
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
    worker.add_argument("--stdout-fd", type=int, default=None)   # the supervisor's stdout (access logs to "-")
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

    from gateway.runtime import access_log
    from gateway.runtime.workers import serve_worker
    setup_logging(args.log_format, args.log_level)
    if args.stdout_fd is not None:
        access_log.set_stdout(args.stdout_fd)
    return uvloop.run(serve_worker())


def default_state_dir(config: str | None, store: str | None = None) -> str:
    """One state directory per config file (by its absolute path), so gateways started from different files
    in one working directory never share or overwrite each other's state; a fleet's replica: one per store URL
    and --bind (`store`)."""
    if store is not None:
        digest = hashlib.sha1(store.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        return os.path.join(".vamp", f"gateway-fleet-{digest}")
    if config is None:
        return os.path.join(".vamp", "gateway")
    digest = hashlib.sha1(os.path.abspath(config).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return os.path.join(".vamp", f"gateway-{digest}")


def store_address(args: argparse.Namespace) -> StoreAddress | None:
    """The configuration store of --config-store and its options (None without it); ValueError saying what is
    wrong (the options need --config-store; a bad URL, --bind or file)."""
    if args.config_store is None:
        if args.bind is not None or store_options_given(args):
            raise ValueError("--bind and the --etcd-* options go with --config-store")
        return None
    import ipaddress

    from gateway.store.etcd import StoreAddress
    if args.bind is not None:
        try:
            args.bind = str(ipaddress.ip_address(args.bind.strip()))
        except ValueError:
            raise ValueError(f"--bind expects an IP address to listen on, like 127.0.0.2, got {args.bind!r}") from None
    for option in ("etcd_ca", "etcd_cert", "etcd_key"):
        path = getattr(args, option)
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError(f"--{option.replace('_', '-')}: cannot read {path}")
    return StoreAddress.parse(args.config_store, **store_options_from(args))


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
        address = store_address(args)
    except (TokenError, AdminBindingError, ValueError) as exc:
        print(f"vamp: {exc}", file=sys.stderr)
        return 2
    file_config = None
    if args.config is not None:
        try:
            file_config = load_file(args.config)
        except ConfigError as exc:
            print(f"vamp: {args.config}: {exc}", file=sys.stderr)
            return 2
    args.state_dir = args.state_dir or default_state_dir(
        args.config, None if address is None else f"{address}|{args.bind}")
    store = StateStore(args.state_dir)
    try:
        stored = store.load()
    except StateError as exc:
        print(f"vamp: {exc}", file=sys.stderr)
        return 1
    if address is not None:     # a fleet's replica: the store decides; the file seeds it, the state dir bridges
        config = file_config
    elif stored is not None:
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
        return uvloop.run(_serve(config, store, admin_host, admin_port, args, address))
    except KeyboardInterrupt:
        return 0


async def _serve(config: Config | None, store: StateStore, admin_host: str, admin_port: int,
                 args: argparse.Namespace, address: StoreAddress | None) -> int:
    """Serve `config` (standalone), or the gateways of the store at `address` (`config` seeds it), until
    SIGTERM or SIGINT; SIGHUP applies the --config file again, SIGUSR1
    reopens the access log files."""
    from aiohttp import web

    from gateway.admin.api import READY, build_app
    from gateway.common.errors import Conflict, RequestError
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
    fleet = None
    try:
        if address is None:
            assert config is not None
            await controller.start(config)
        else:
            from gateway.store.fleet import FleetGateways
            fleet = FleetGateways(controller, address, bind=args.bind)
            await fleet.start(seed=config)
    except ApplyError as exc:
        print(f"vamp: {exc}", file=sys.stderr)
        if fleet is not None:
            await fleet.close()
        await controller.shutdown(0)
        return 1
    app = build_app(controller, args.token, public_metrics=args.public_metrics, source=fleet, store=fleet)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, admin_host, admin_port).start()
    except OSError as exc:
        print(f"vamp: cannot listen on admin address {admin_host}:{admin_port}: {exc.strerror or exc}",
              file=sys.stderr)
        if fleet is not None:
            await fleet.close()
        await controller.shutdown(0)
        return 1
    app[READY][0] = True
    log.info("gateway ready: %d gateway(s), %d worker(s); admin API on http://%s:%d; hot path: %s",
             len(controller.desired.gateways), args.workers, admin_host, admin_port, compiled.mode)
    if fleet is not None:
        status = fleet.status()
        log.info("serving revision %s of the configuration store %s (from the %s)", status["revision"],
                 status["url"], status["source"])

    async def reload() -> None:
        if args.config is None:
            log.warning("SIGHUP: no --config file to reload")
            return
        try:
            if fleet is not None:
                await fleet.replace(load_file(args.config))
                log.info("SIGHUP: applied %s to the configuration store %s", args.config, address)
            else:
                await controller.replace(load_file(args.config))
                log.info("SIGHUP: applied %s", args.config)
        except (ConfigError, Conflict) as exc:
            log.error("SIGHUP: %s not applied, the configuration is unchanged: %s", args.config, exc)
        except RequestError as exc:
            log.error("SIGHUP: %s not applied: %s", args.config, exc.message)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))

    def reopen_access_logs() -> None:
        log.info("SIGUSR1: reopening the access logs")
        for worker in workers:
            worker.reopen_access_logs()
    loop.add_signal_handler(signal.SIGUSR1, reopen_access_logs)
    await stop.wait()
    log.info("stopping: finishing requests in flight (grace %.0fs)", args.grace)
    app[READY][0] = False
    if fleet is not None:
        await fleet.close()
    await controller.shutdown(args.grace)
    await runner.cleanup()
    return 0
