"""The workflows' own endpoints of the control plane API (docs/workflows.md, "Status and actions"):

    GET /api/v1/workflows/{name}/status     {name, status, reason, runs, last_run}             200 · 404
    PUT /api/v1/workflows/{name}/status     a status or an action, as one word or an object    202 · 400 · 404 · 409

A PUT body is one word, as JSON (`"suspended"`) or YAML (`suspended`): `running`, `suspended` or `restarting`
ask for that status; any other word is an action for the built-in's run in progress (`promote`, `abort`). The
same as an object: `{"status": "suspended"}` or `{"action": "promote"}`. The answer is the status document as
it stands when the change has begun (`stopping` on the way to `suspended`); with `?validate_only=true`, 200 and
nothing changes (an action is then checked only for a run in progress to take it: the built-in itself judges
the word when it is handed over). An action a built-in does not take is 400, an action for a workflow with no
run in progress 409 (a script takes none: 400).
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from control.workflows.runner import REQUESTS, WorkflowRunner
from gateway.common.errors import Invalid
from gateway.common.httpapi import read_body, respond, validate_only_requested

STATUS_PATH = "/api/v1/workflows/{name}/status"
_WORD = "a status (running, suspended, restarting) or an action of the workflow, like promote"


def add_routes(router: web.UrlDispatcher, runner: WorkflowRunner) -> None:
    async def get_status(request: web.Request) -> web.Response:
        return respond(request, runner.status(request.match_info["name"]))

    async def put_status(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        validate_only = validate_only_requested(request)
        key, word = read_request(await read_body(request))
        if key == "status":
            document = runner.request(name, word, validate_only=validate_only)
        else:
            document = runner.command(name, word, validate_only=validate_only)
        return respond(request, document, 200 if validate_only else 202)

    router.add_get(STATUS_PATH, get_status)
    router.add_put(STATUS_PATH, put_status)


def read_request(body: Any) -> tuple[str, str]:
    """("status", word) or ("action", word) of a PUT body."""
    if isinstance(body, str):
        word = body.strip()
        key = "status" if word in REQUESTS else "action"
        field = None
    elif isinstance(body, dict) and len(body) == 1 and next(iter(body)) in ("status", "action"):
        (key, word), = body.items()
        field = f"/{key}"
    else:
        raise Invalid(f"expected {_WORD}: one word, or {{status: WORD}} or {{action: WORD}}")
    if not isinstance(word, str) or not word.strip() or any(character.isspace() for character in word.strip()):
        raise Invalid(f"expected {_WORD}, got {word!r}", field)
    word = word.strip()
    if key == "status" and word not in REQUESTS:
        raise Invalid(f"expected a status, one of {', '.join(REQUESTS)}, got {word!r} (an action goes as "
                      "{action: WORD})", field)
    return key, word
