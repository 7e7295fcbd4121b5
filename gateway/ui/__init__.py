"""The web UI (docs/ui.md): HTML, CSS and JavaScript written in this project, shipped as package data in
`static/`, and `add_routes`, which serves them under `/ui/` of an aiohttp application. Both servers use it: the
control plane's API (`vamp run`, mode `platform`: deployments, gateways, canaries, events, charts) and the
gateway's admin API (`vamp gateway`, mode `gateway`: its gateways only). Nothing is built and nothing is
fetched from elsewhere at run time; the page talks to the API of the server that serves it, with the same token
rules (the files themselves need no token: they hold no data, and the page asks for the token).
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.common.httpapi import Handler

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/ui"
MODES = ("platform", "gateway")
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# Only this origin: no script, style, image or connection anywhere else, and no inline script.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
           "Referrer-Policy": "no-referrer"}


def files() -> dict[str, Path]:
    """The UI's files by their path under /ui/ (`index.html`, `js/app.js`, ...)."""
    return {path.relative_to(STATIC).as_posix(): path for path in sorted(STATIC.rglob("*"))
            if path.is_file() and path.suffix in TYPES}


def add_routes(router: web.UrlDispatcher, mode: str) -> None:
    """`/ui` (a redirect), `/ui/` (the page, telling the scripts its `mode`) and each static file."""
    if mode not in MODES:
        raise ValueError(f"the UI's mode is one of {', '.join(MODES)}, not {mode!r}")
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{mode}}", mode)

    async def redirect(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(PREFIX + "/")

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=HEADERS)

    router.add_get(PREFIX, redirect)
    router.add_get(PREFIX + "/", index)
    for name, path in files().items():
        if name == "index.html":
            continue
        router.add_get(f"{PREFIX}/{name}", _file_handler(path))


def _file_handler(path: Path) -> Handler:
    body = path.read_bytes()
    content_type = TYPES[path.suffix]

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)
    return handler
