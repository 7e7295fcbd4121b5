"""`vamp workflows …`: the workflows of `vamp run` through its API (docs/cli.md, docs/workflows.md).

    vamp workflows list                     one line per workflow: what it runs, its schedule and status
    vamp workflows status NAME              its status, runs and last run (and state, with -o yaml|json: all)
    vamp workflows suspend|resume|restart NAME
    vamp workflows promote|abort NAME       a manual action for a built-in's run in progress (the canary's)

Each takes `--api URL`, `--token` and `-o table|json|yaml` as every API command does (gateway/common/cli.py).
"""
from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from gateway import AdminClient, api_command as command
from gateway.common.cli import LIST_QUERY, OUTPUTS, add_server_options, emit, render_table

API = "/api/v1/workflows"
REQUESTS = {"suspend": "suspended", "resume": "running", "restart": "restarting"}
ACTIONS = ("promote", "abort")


def register(commands: Any) -> None:
    """Adds `workflows` and its verbs to the subcommands of a `vamp` parser."""
    common = argparse.ArgumentParser(add_help=False)
    add_server_options(common)
    common.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                        help="table for people (default); json or yaml: what the API answered, for scripts")
    workflows = commands.add_parser("workflows", help="list the workflows of `vamp run`, see how one runs, "
                                                      "suspend, resume or restart it, promote or abort a canary")
    verbs = workflows.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: Any, help_text: str, *, named: bool = True) -> None:
        parser = verbs.add_parser(name, parents=[common], help=help_text, description=help_text)
        if named:
            parser.add_argument("name", metavar="NAME")
        parser.set_defaults(func=command(handler))

    verb("list", _list, "one line per workflow: what it runs, its schedule, its status", named=False)
    verb("status", _status, "a workflow's status, its runs and how the last one went")
    verb("suspend", _request, "stop a workflow; it stays stopped (also across restarts) until resumed")
    verb("resume", _request, "start a suspended (or finished) workflow again, from its state")
    verb("restart", _request, "stop a workflow and start it over: its state and run count cleared")
    verb("promote", _action, "promote: the built-in's manual action (the canary: its canary gets 100%%)")
    verb("abort", _action, "abort: the built-in's manual action (the canary: roll back)")


def _list(args: argparse.Namespace, client: AdminClient) -> None:
    items = client.request("GET", API + LIST_QUERY).data or []
    rows = [[item.get("name"), _runs(item), _schedule(item.get("schedule")), item.get("status", "?"),
             item.get("reason") or ""] for item in items]
    emit(args, items, lambda: render_table(("NAME", "RUNS", "SCHEDULE", "STATUS", "REASON"), rows)
         if rows else "no workflows stored (`vamp apply -f FILE` stores them)")


def _status(args: argparse.Namespace, client: AdminClient) -> None:
    data = client.request("GET", _path(args.name)).data or {}
    emit(args, data, lambda: _status_text(data))


def _request(args: argparse.Namespace, client: AdminClient) -> None:
    data = client.request("PUT", _path(args.name), REQUESTS[args.verb]).data or {}
    emit(args, data, lambda: f"workflow {args.name}: {data.get('status')}")


def _action(args: argparse.Namespace, client: AdminClient) -> None:
    data = client.request("PUT", _path(args.name), {"action": args.verb}).data or {}
    emit(args, data, lambda: f"workflow {args.name}: {args.verb} handed to its run ({data.get('status')})")


def _path(name: str) -> str:
    return f"{API}/{quote(name, safe=':')}/status"


def _runs(item: dict[str, Any]) -> str:
    """What the workflow runs: its script's breed, or `built-in NAME`."""
    if item.get("workflow"):
        return f"built-in {item['workflow']}"
    breed = item.get("breed")
    name = breed.get("name") or breed.get("reference") if isinstance(breed, dict) else breed
    return f"script {name}"


def _schedule(schedule: Any) -> str:
    if not isinstance(schedule, dict):
        return str(schedule)
    if "event" in schedule:
        return "event " + ",".join((schedule["event"] or {}).get("tags", []))
    time = schedule.get("time") or {}
    text = f"every {time.get('period')} from {time.get('start') or 'now'}"
    return text + (f", {time['repeat']} times" if time.get("repeat") else "")


def _status_text(data: dict[str, Any]) -> str:
    lines = [f"workflow {data.get('name')}: {data.get('status')}"]
    if data.get("reason"):
        lines.append(f"  reason    {data['reason']}")
    lines.append(f"  runs      {data.get('runs', 0)}")
    last = data.get("last_run")
    if last:
        ended = f", ended {last['ended']}: {last.get('outcome')}" if last.get("ended") else ", still running"
        lines.append(f"  last run  started {last['started']}{ended}")
    return "\n".join(lines)
