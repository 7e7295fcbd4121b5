"""What the command lines of every part of Vamp share: the `vamp` parser, logging, the token of a server, and
how a command talks to an API.

`new_parser()` is the empty `vamp` parser to which each part's `register` adds its commands (errors are one
line, exit 2); `setup_logging` sends log records to stderr. A server's token comes from `--token` or
`--token-file` (`add_token_options`, `token_from`). A command that uses an API takes `--api URL` (default
`$VAMP_API`, else http://127.0.0.1:8080, where `vamp run` serves) and `--token` (default `$VAMP_TOKEN`)
(`add_server_options`, `api_url`, `api_token`); the older spellings still work: `--admin` (a deprecated alias
of `--api`), `$VAMP_API_URL` and `$VAMP_ADMIN_URL`, `$VAMP_ADMIN_TOKEN`. It prints aligned text tables for
people or, for scripts, the API's documents as JSON or YAML (`emit`), and fails with a `CommandError`: one line
on stderr and its exit code (docs/cli.md: 1 runtime failure, 2 bad input).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import yaml

# -- the parser and logging ------------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage()})


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Log records go to stderr, as text or one JSON object a line, from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:   # one line, exit 2
        self.exit(2, f"vamp: {message}\n")


# What `add_subparsers` returns: argparse's own name for it is private.
Commands = Any


def new_parser() -> tuple[argparse.ArgumentParser, Commands]:
    """An empty `vamp` parser and its subcommands, to which each part's `register` adds its commands; every
    command sets `func(args) -> int`, the exit status."""
    parser = _Parser(prog="vamp", description="Vamp: canary releases with a fast programmable gateway.")
    return parser, parser.add_subparsers(dest="command", required=True, parser_class=_Parser)


# -- the token of a server ---------------------------------------------------------------------------------
TOKEN_VARIABLES = ("VAMP_TOKEN", "VAMP_ADMIN_TOKEN")     # the first one set (not empty) is the default token
MAX_TOKEN_FILE = 64 * 1024


class TokenError(ValueError):
    pass


def add_token_options(parser: argparse.ArgumentParser, api: str, *aliases: str) -> None:
    """--token (and `aliases` of it) or --token-file, and --public-metrics; `token_from(args)` reads them."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--token", *aliases, dest="token", metavar="TOKEN",
                        help=f"bearer token {api} requires on every request but /health and /ready "
                             "(default: $VAMP_TOKEN, else $VAMP_ADMIN_TOKEN)")
    source.add_argument("--token-file", metavar="PATH",
                        help="read the token from a file, such as a mounted secret (a trailing newline is ignored)")
    parser.add_argument("--public-metrics", action="store_true",
                        help="serve /metrics without the token (for a Prometheus that sends none)")


def token_from(args: argparse.Namespace) -> str | None:
    """The token of --token-file, --token, $VAMP_TOKEN or $VAMP_ADMIN_TOKEN (the first given); None for none."""
    if args.token_file is not None:
        return read_token_file(args.token_file)
    token: str | None = args.token
    if token:
        return token
    return _first_set(TOKEN_VARIABLES)


def read_token_file(path: str, what: str = "token") -> str:
    """The token (or other secret: `what`) a file holds on its one line (a trailing newline is not part of it)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise TokenError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None
    try:
        token = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise TokenError(f"the {what} file {path} is not UTF-8 text") from None
    if len(raw) > MAX_TOKEN_FILE:
        raise TokenError(f"the {what} file {path} is larger than {MAX_TOKEN_FILE // 1024} KiB: is it a {what}?")
    if not token:
        raise TokenError(f"the {what} file {path} is empty")
    if not token.isprintable() or token != token.strip():
        raise TokenError(f"the {what} file {path} must hold the {what} alone on one line, without spaces around "
                         "it")
    return token


# -- a configuration store (etcd) ------------------------------------------------------------------------------
ETCD_PASSWORD_VARIABLE = "VAMP_ETCD_PASSWORD"
STORE_OPTIONS = ("etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file")


def add_store_options(parser: Options) -> None:
    """How a command reaches the etcd its store URL names: TLS files and credentials (`store_options_from`).
    The password is never an option's value (the process list would show it)."""
    parser.add_argument("--etcd-ca", metavar="FILE", help="the CA certificate etcd's members are signed by (TLS)")
    parser.add_argument("--etcd-cert", metavar="FILE", help="this client's certificate, when etcd asks for one "
                                                            "(with --etcd-key)")
    parser.add_argument("--etcd-key", metavar="FILE", help="the key of --etcd-cert")
    parser.add_argument("--etcd-user", metavar="USER", help="the etcd user to authenticate as")
    parser.add_argument("--etcd-password-file", metavar="FILE",
                        help=f"read the etcd user's password from a file (default: ${ETCD_PASSWORD_VARIABLE})")


def store_options_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) is not None for name in STORE_OPTIONS)


def store_options_from(args: argparse.Namespace) -> dict[str, str | None]:
    """The keyword arguments of `StoreAddress.parse` (gateway.store.etcd) the options give; the password comes
    from --etcd-password-file, else $VAMP_ETCD_PASSWORD, and only with --etcd-user. TokenError when the file
    cannot be read."""
    user: str | None = args.etcd_user
    password: str | None = None
    if args.etcd_password_file is not None:
        password = read_token_file(args.etcd_password_file, "password")
    elif user is not None:
        password = os.environ.get(ETCD_PASSWORD_VARIABLE) or None
    return {"ca_file": args.etcd_ca, "cert_file": args.etcd_cert, "key_file": args.etcd_key,
            "username": user, "password": password}


# -- a command that uses an API ------------------------------------------------------------------------------
DEFAULT_API_URL = "http://127.0.0.1:8080"     # where `vamp run` serves its API
API_URL_VARIABLES = ("VAMP_API", "VAMP_API_URL", "VAMP_ADMIN_URL")   # the first one set wins; then older names
LIST_QUERY = "?per_page=1000"   # `vamp run`'s API answers lists in pages (30 by default); a gateway ignores it
OUTPUTS = ("table", "json", "yaml")

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


class CommandError(Exception):
    """A failed command: `str()` is the one-line message, `exit_code` 1 (runtime) or 2 (bad input)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(_LINE_BREAKS.sub(" ", message).strip())
        self.exit_code = exit_code


def _first_set(variables: tuple[str, ...]) -> str | None:
    return next((os.environ[name] for name in variables if os.environ.get(name)), None)


def api_url(args: argparse.Namespace) -> str:
    """The server a command talks to: --api, else $VAMP_API ($VAMP_API_URL, $VAMP_ADMIN_URL), else the
    address `vamp run` serves on."""
    given: str | None = getattr(args, "api", None)
    return given or _first_set(API_URL_VARIABLES) or DEFAULT_API_URL


def api_token(args: argparse.Namespace) -> str | None:
    """The bearer token sent with every request: --token, else $VAMP_TOKEN ($VAMP_ADMIN_TOKEN), else none."""
    given: str | None = getattr(args, "token", None)
    return given or _first_set(TOKEN_VARIABLES)


class DeprecatedAlias(argparse.Action):
    """An older spelling of an option: stores what the current option stores, with a note on stderr."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str, **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"vamp: note: {option_string} is deprecated, use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class Options(Protocol):
    """A parser or an argument group: where options are added."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action: ...


def add_server_options(parser: Options) -> None:
    """--api URL and --token (and the deprecated --admin) on a command or argument group that uses an API."""
    parser.add_argument("--api", metavar="URL",
                        help=f"the server: `vamp run`'s API, or a `vamp gateway`'s admin API (e.g. "
                             f"http://127.0.0.1:9090); default $VAMP_API, else {DEFAULT_API_URL}")
    parser.add_argument("--admin", dest="api", metavar="URL", action=DeprecatedAlias, replacement="--api",
                        help=argparse.SUPPRESS)
    parser.add_argument("--token", help="bearer token sent with every request (default $VAMP_TOKEN, which keeps "
                                        "it out of the process list)")


# -- output --------------------------------------------------------------------------------------------------
def render_table(headers: tuple[str, ...], rows: list[list[Any]]) -> str:
    """Plain text columns, left-aligned, two spaces apart, no trailing blanks; None is shown as '-'."""
    lines = [list(headers)] + [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def emit(args: argparse.Namespace, data: Any, table: Callable[[], str]) -> None:
    """The table for people, or the API's data as JSON or YAML for scripts."""
    if args.output == "table":
        print(table())
    else:
        print_data(args.output, data)


def print_data(output: str, data: Any) -> None:
    """The API's data as JSON or YAML (`output`); nothing for None."""
    if data is None:
        return
    if output == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        # the last line break written apart, as for JSON: a reader gone before the end is noticed (one large
        # write that the pipe takes only part of is not reported by Python)
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).removesuffix("\n"))
