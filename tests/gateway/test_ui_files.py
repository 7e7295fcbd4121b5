"""The web UI's files (gateway/ui, docs/ui.md) as both APIs serve them: the page and every file under /ui/ without
the token (they hold no data) while the API still needs it, with a policy that allows nothing from elsewhere, and
the page told its mode."""
from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import add_ui_routes
from gateway.common.httpapi import api_middleware
from gateway.ui import files

TOKEN = "secret"


async def serving(mode: str) -> TestClient:
    app = web.Application(middlewares=[api_middleware(TOKEN)])

    async def data(_: web.Request) -> web.Response:
        return web.json_response({"data": True})
    app.router.add_get("/api/v1/gateways", data)
    add_ui_routes(app.router, mode)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.mark.parametrize("mode", ["platform", "gateway"])
async def test_every_file_is_served_without_the_token_and_the_api_still_needs_it(mode):
    client = await serving(mode)
    try:
        page = await client.get("/ui/")
        assert page.status == 200 and page.content_type == "text/html"
        assert f'data-mode="{mode}"' in await page.text()
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        for name in set(files()) - {"index.html"}:                 # the page itself is /ui/
            answer = await client.get(f"/ui/{name}")
            assert answer.status == 200, name
        assert (await client.get("/ui", allow_redirects=False)).headers["Location"] == "/ui/"
        assert (await client.get("/api/v1/gateways")).status == 401
        assert (await client.get("/api/v1/gateways", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
        assert (await client.get("/ui-not/x")).status == 401          # only /ui and what is under /ui/ is open
    finally:
        await client.close()


def test_the_files_are_ours_and_fetch_nothing_from_elsewhere():
    names = set(files())
    assert {"index.html", "style.css", "js/app.js", "js/api.js", "js/gateway.js", "js/chart.js"} <= names
    for name, path in files().items():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in text, name


def test_a_mode_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="platform, gateway"):
        add_ui_routes(web.Application().router, "everything")
