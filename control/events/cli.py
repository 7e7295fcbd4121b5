"""`vamp events`: the platform's events from its API, and with `--follow` the live ones from its event stream; and
`vamp run`'s retention options (`add_retention_options`). docs/cli.md, "vamp events".

    vamp events [--tag T …] [--type T] [--since TIME] [--limit N] [--follow] [-o table|json|yaml]

It lists the `--limit` newest matching events, oldest first. `--follow` then keeps printing new ones from
`GET /api/v1/events/stream`, resumed after the last event shown: when the connection drops (the platform
restarts, the network fails, no heartbeat arrives for a while) it reconnects with `Last-Event-ID`, so nothing
still kept is missed and nothing is printed twice. It stops with Ctrl-C (exit 0).
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import yaml

from control.events.log import DEFAULT_MAX_AGE, DEFAULT_MAX_COUNT
from gateway import AdminClient, api_command as command
from gateway.common.cli import CommandError, add_server_options
from gateway.common.units import format_duration, parse_duration

EVENTS = "/api/v1/events"
STREAM = "/api/v1/events/stream"
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000                # the API's largest page
HEARTBEAT = 15.0                # seconds between the stream's heartbeats (asked of the server)
SILENCE_LIMIT = 3 * HEARTBEAT   # no byte for this long: the connection is taken as dropped
RECONNECT_FIRST, RECONNECT_MAX = 0.5, 5.0      # seconds between attempts, doubling
_EPOCH = re.compile(r"[0-9]+(?:\.[0-9]*)?")


# -- `vamp run` ----------------------------------------------------------------------------------------
def add_retention_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events-max-count", type=_count, default=DEFAULT_MAX_COUNT, metavar="N",
                        help="events kept at most; older ones are pruned (default %(default)s)")
    parser.add_argument("--events-max-age", type=_age, default=DEFAULT_MAX_AGE, metavar="DURATION",
                        help=f"events older than this are pruned, e.g. 12h, 30d (default "
                             f"{format_duration(DEFAULT_MAX_AGE)})")


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 10**9):
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000000000, got {text!r}")
    return int(text)


def _age(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- `vamp events` ---------------------------------------------------------------------------------------
def register(commands: Any) -> None:
    events = commands.add_parser("events", help="the platform's events (with --follow: and the live ones)",
                                 description="The events of `vamp run`, oldest first; --follow keeps printing "
                                             "new ones as they happen.")
    events.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="only events with this tag (repeat: with all of them); a:b also counts as a")
    events.add_argument("--type", help="only events of this type")
    events.add_argument("--since", metavar="TIME",
                        help="only events from TIME on: ISO 8601 (2026-11-25T15:30:00Z), seconds since the epoch, "
                             "or a duration ago (10m, 2h, 1d)")
    events.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                        help=f"the N newest (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})")
    events.add_argument("-f", "--follow", action="store_true",
                        help="then print new events as they happen, until Ctrl-C")
    add_server_options(events)
    events.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                        help="lines for people (default); json: a list (with --follow, one object per line); "
                             "yaml: a list (with --follow, one document per event)")
    events.set_defaults(func=command(_events))


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def since_moment(text: str, now: float | None = None) -> str:
    """--since as the API's `gte`: seconds since the epoch, or an ISO 8601 date-time as given."""
    text = text.strip()
    if _EPOCH.fullmatch(text):
        return text
    try:
        ago = parse_duration(text)
    except ValueError:
        ago = None
    if ago is not None:
        return repr((time.time() if now is None else now) - ago)
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since expects an ISO 8601 date-time (2026-11-25T15:30:00Z), seconds since the "
                           f"epoch or a duration ago (10m, 2h, 1d), got {text!r}", 2) from None
    return text


def _events(args: argparse.Namespace, client: AdminClient) -> None:
    query: list[tuple[str, str]] = [("tag", tag) for tag in args.tag]
    if args.type:
        query.append(("type", args.type))
    if args.since:
        query.append(("gte", since_moment(args.since)))
    listed = client.request("GET", f"{EVENTS}?{urllib.parse.urlencode([*query, ('per_page', str(args.limit))])}")
    recent = list(reversed(listed.data or []))
    if not args.follow:
        if args.output == "table":
            print("\n".join(event_line(event) for event in recent) if recent else "no events")
        elif args.output == "json":
            print(json.dumps(recent, indent=2, ensure_ascii=False))
        else:
            print(yaml.safe_dump(recent, sort_keys=False, allow_unicode=True).rstrip())
        return
    for event in recent:
        _print_followed(args.output, event)
    last = max((event["id"] for event in recent), default=0)
    try:
        for event in follow(client, query, last):
            _print_followed(args.output, event)
    except KeyboardInterrupt:
        return


def event_line(event: dict[str, Any]) -> str:
    """`2026-11-25T15:30:00.123Z  #42  deployments:sava synchronization:deployed  {"instances": 1}` (the type
    in brackets after the id when it is not "event")."""
    kind = f"  [{event.get('type')}]" if event.get("type", "event") != "event" else ""
    value = event.get("value")
    shown = "" if value is None else "  " + json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return f"{event.get('timestamp')}  #{event.get('id')}{kind}  {' '.join(event.get('tags') or ())}{shown}"


def _print_followed(output: str, event: dict[str, Any]) -> None:
    if output == "json":
        text = json.dumps(event, ensure_ascii=False)
    elif output == "yaml":
        text = "---\n" + yaml.safe_dump(event, sort_keys=False, allow_unicode=True).rstrip()
    else:
        text = event_line(event)
    print(text, flush=True)


def follow(client: AdminClient, query: list[tuple[str, str]], after: int) -> Iterator[dict[str, Any]]:
    """Every matching event with an id above `after`, as it is published; reconnects (resuming after the last
    one given) whenever the stream breaks or ends, until the caller stops."""
    delay = RECONNECT_FIRST
    while True:
        try:
            for event in stream_once(client, query, after):
                after = event["id"]
                delay = RECONNECT_FIRST
                yield event
            reason = "the stream ended (the platform stopped?)"
        except (OSError, http.client.HTTPException) as exc:
            reason = f"the stream broke ({getattr(exc, 'strerror', None) or exc or type(exc).__name__})"
        print(f"vamp: {reason}; reconnecting after event #{after} …", file=sys.stderr, flush=True)
        time.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX)


def stream_once(client: AdminClient, query: list[tuple[str, str]], after: int,
                silence_limit: float = SILENCE_LIMIT) -> Iterator[dict[str, Any]]:
    """One connection to the event stream, resuming after event `after`: its events as they come. Ends when the
    server ends the stream; OSError when the connection fails or stays silent for `silence_limit` seconds."""
    parts = urllib.parse.urlsplit(client.base_url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=silence_limit)
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    target = parts.path + STREAM + "?" + urllib.parse.urlencode([*query, ("heartbeat", repr(HEARTBEAT))])
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            raise CommandError(_refusal(client.base_url, response.status, response.read()),
                               2 if 400 <= response.status < 500 else 1)
        yield from read_server_sent(response)
    finally:
        connection.close()


def read_server_sent(response: Any) -> Iterator[dict[str, Any]]:
    """The events of a text/event-stream (each `data:` is one event's JSON); comments and other fields are
    skipped."""
    data: list[str] = []
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield json.loads("\n".join(data))
                data = []
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _refusal(base_url: str, status: int, body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("error"):
        field = f" (field: {document['field']})" if document.get("field") else ""
        return f"the event stream at {base_url} answered {status}: {document['error']}{field}"
    return f"the event stream at {base_url} answered {status}"
