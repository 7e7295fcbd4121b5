"""The demo's backends and frontend (VAMP's tutorial, sava 1.2 and 1.3): a sava answers `/api/message` with
its name, version and instance; the frontend's page is made of the messages of the backends at the URLs in its
environment ($BACKEND, $BACKEND_*), a 502 naming the backend when one fails, and a bad URL stops it at start
naming the variable."""
from __future__ import annotations

import os
import subprocess
import sys

import aiohttp
import pytest

from control.demo.frontend import backends_from, start_frontend
from control.demo.sava import start_server
from tests.support import free_port


@pytest.fixture
async def services():
    """backend(name) -> its /api/message URL; frontend(backends) -> its base URL; all on loopback."""
    servers, runners = [], []

    async def backend(name: str) -> str:
        server = await start_server("127.0.0.1", 0, "1.2.0", f"{name}#0", name=name)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/message"

    async def frontend(backends: list[tuple[str, str]]) -> str:
        port = free_port()
        runners.append(await start_frontend("127.0.0.1", port, "sava-frontend", "1.2.0", "front#0", backends))
        return f"http://127.0.0.1:{port}"
    yield backend, frontend
    for runner in runners:
        await runner.cleanup()
    for server in servers:
        server.close()


async def test_a_backend_answers_its_message_as_json(services):
    backend, _ = services
    url = await backend("sava-backend1")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert (response.status, response.headers["X-Version"]) == (200, "1.2.0")
        assert await response.json() == {"message": "sava-backend1 1.2.0 (instance sava-backend1#0)",
                                         "name": "sava-backend1", "version": "1.2.0", "instance": "sava-backend1#0"}
    async with aiohttp.ClientSession() as session, session.get(url.replace("/api/message", "/")) as response:
        assert "<h1>sava-backend1 1.2.0</h1>" in await response.text()


async def test_the_frontend_page_carries_every_backends_message(services):
    backend, frontend = services
    backends = [("BACKEND_1", await backend("sava-backend1")), ("BACKEND_2", await backend("sava-backend2"))]
    base = await frontend(backends)
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/") as response:
            page = await response.text()
            assert (response.status, response.headers["X-Version"], response.headers["X-Instance"]) == \
                (200, "1.2.0", "front#0")
        assert "<h1>sava-frontend 1.2.0</h1>" in page
        assert "<li>BACKEND_1: sava-backend1 1.2.0 (instance sava-backend1#0)</li>" in page
        assert "<li>BACKEND_2: sava-backend2 1.2.0 (instance sava-backend2#0)</li>" in page
        async with session.get(base + "/health") as response:
            assert (response.status, await response.text()) == (200, "ok\n")


async def test_a_failing_backend_makes_the_page_a_502_naming_it(services):
    backend, frontend = services
    gone = f"http://127.0.0.1:{free_port()}/api/message"
    base = await frontend([("BACKEND_1", await backend("sava-backend1")), ("BACKEND_2", gone)])
    async with aiohttp.ClientSession() as session, session.get(base + "/") as response:
        assert response.status == 502
        text = await response.text()
    assert text.startswith(f"sava-frontend 1.2.0: backend BACKEND_2 ({gone}) ") and "BACKEND_1" not in text


def test_backends_come_from_backend_variables_in_order_of_name():
    environment = {"BACKEND_2": "http://127.0.0.1:2/api/message", "BACKEND": "http://b:1/", "PATH": "/bin",
                   "BACKEND_1": " http://127.0.0.1:1/api/message "}
    assert backends_from(environment) == [("BACKEND", "http://b:1/"), ("BACKEND_1", "http://127.0.0.1:1/api/message"),
                                          ("BACKEND_2", "http://127.0.0.1:2/api/message")]
    with pytest.raises(ValueError, match=r"\$BACKEND or \$BACKEND_1"):
        backends_from({"PATH": "/bin"})
    for bad in ("127.0.0.1:1/api/message", "https://x/", "http://", "http://:1/"):
        with pytest.raises(ValueError, match=f"^BACKEND_1 must be an http:// URL .*got '{bad}'$"):
            backends_from({"BACKEND_1": bad})


def test_a_frontend_without_good_backends_exits_2_at_start_naming_the_variable():
    environment = {key: value for key, value in os.environ.items() if not key.startswith("BACKEND")}
    result = subprocess.run([sys.executable, "-m", "control.demo.sava", "--frontend", "--version", "1.2.0",
                             "--port", "0"], env={**environment, "BACKEND_1": "http://$backend1.host:x/"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "BACKEND_1 must be an http:// URL" in result.stderr and result.stdout == ""
