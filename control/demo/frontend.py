"""The frontend of VAMP's tutorial (sava 1.2 and 1.3): a sava page made of its backends' messages.

    python -m control.demo.sava --frontend --name sava-frontend --version 1.2.0

The blueprint wires it to its backends through its environment: every variable named `BACKEND` or
`BACKEND_<anything>` holds a backend's URL, as VAMP's tutorial writes them
(`BACKEND_1: http://$backend1.host:$backend1.ports.webport/api/message`; the platform puts the host and port of
cluster backend1's gateway in their place). Each page request (GET or HEAD, any path) calls them all at once and
answers a small HTML page naming the frontend, its version and instance, and each backend's message (the
`message` of its JSON answer, as sava's `/api/message` gives it, else its text), in the order of the variables'
names, with the headers `X-Version` and `X-Instance`. When a backend fails (no connection, no answer within
BACKEND_TIMEOUT seconds, a status other than 2xx) the page is a 502 naming the variable, the URL and what went
wrong. `/health` answers 200 "ok" without calling anyone. A variable that is not an http:// URL is an error
naming it, at start (exit status 2). SIGTERM or SIGINT stops it cleanly.
"""
from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Mapping

import aiohttp
import yarl
from aiohttp import web

from control.demo.sava import until_stopped

BACKEND_TIMEOUT = 5.0           # seconds a backend has to answer one call
MAX_MESSAGE = 500               # characters of a backend's answer shown


def backends_from(environment: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable, URL) of every backend in `environment`, by variable name; ValueError naming the variable when
    one is not an http:// URL, or when there is none."""
    found = sorted((name, value.strip()) for name, value in environment.items()
                   if name == "BACKEND" or name.startswith("BACKEND_"))
    if not found:
        raise ValueError("a frontend needs the URL of its backends in $BACKEND or $BACKEND_1, $BACKEND_2, …")
    for name, url in found:
        try:
            parsed = yarl.URL(url)
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme != "http" or not parsed.host:
            raise ValueError(f"{name} must be an http:// URL (http://HOST:PORT/PATH), got {url!r}")
    return found


async def _message(session: aiohttp.ClientSession, url: str) -> tuple[bool, str]:
    """(answered, the backend's message or what went wrong)."""
    try:
        async with session.get(url) as response:
            text = (await response.text(errors="replace"))[:MAX_MESSAGE]
            if not 200 <= response.status < 300:
                return False, f"answered {response.status}: {text.strip()}"
    except TimeoutError:
        return False, f"no answer within {BACKEND_TIMEOUT:g} s"
    except aiohttp.ClientError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    try:
        document = json.loads(text)
    except ValueError:
        return True, text.strip()
    message = document.get("message") if isinstance(document, dict) else None
    return True, message if isinstance(message, str) else text.strip()


def frontend_app(name: str, version: str, instance: str, backends: list[tuple[str, str]]) -> web.Application:
    headers = {"X-Version": version, "X-Instance": instance}
    title = html.escape(f"{name} {version}")
    sessions: list[aiohttp.ClientSession] = []

    async def open_session(_: web.Application) -> None:
        sessions.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BACKEND_TIMEOUT)))

    async def close_session(_: web.Application) -> None:
        await sessions[0].close()

    async def page(request: web.Request) -> web.Response:
        if request.path == "/health":
            return web.Response(text="ok\n", headers=headers)
        answers = await asyncio.gather(*(_message(sessions[0], url) for _, url in backends))
        failed = [(variable, url, said) for (variable, url), (ok, said) in zip(backends, answers) if not ok]
        if failed:
            text = "".join(f"{name} {version}: backend {variable} ({url}) {said}\n" for variable, url, said in failed)
            return web.Response(status=502, text=text, headers=headers)
        items = "".join(f"<li>{html.escape(variable)}: {html.escape(said)}</li>\n"
                        for (variable, _), (_, said) in zip(backends, answers))
        body = (f"<!doctype html>\n<title>{title}</title>\n<h1>{title}</h1>\n<p>instance {html.escape(instance)}</p>\n"
                f"<ul>\n{items}</ul>\n")
        return web.Response(text=body, content_type="text/html", headers=headers)

    app = web.Application()
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/{path:.*}", page)
    return app


async def start_frontend(host: str, port: int, name: str, version: str, instance: str,
                         backends: list[tuple[str, str]]) -> web.AppRunner:
    """Listen and serve (the caller cleans the runner up)."""
    runner = web.AppRunner(frontend_app(name, version, instance, backends), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


async def serve(host: str, port: int, name: str, version: str, instance: str,
                backends: list[tuple[str, str]]) -> None:
    """Serve until SIGTERM or SIGINT."""
    runner = await start_frontend(host, port, name, version, instance, backends)
    wired = ", ".join(f"{variable}={url}" for variable, url in backends)
    print(f"{name} {version} ({instance}) serving on http://{host}:{port}/, backends {wired}", flush=True)
    await until_stopped()
    await runner.cleanup()
    print(f"{name} {version} ({instance}) stopped", flush=True)
