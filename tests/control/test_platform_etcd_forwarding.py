"""A follower's API (control.replicas.forwarding): it answers the store's reads and its status itself, forwards
everything else to the leader exactly as it came and streams the leader's answer back; with no leader, an
unreachable one, a request another replica forwarded already, or while it resumes as the new leader, it answers
503 with Retry-After and what it knows of the leader. The token is checked before anything is forwarded."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control.api import create_app
from control.replicas.forwarding import FORWARDED_BY, LEADER
from control.replicas.leadership import Replica
from control.store import Store
from tests.support import free_port

TOKEN = "s3cret-token"


class FakeLeadership:
    """What the election tells the API (control.replicas.leadership.Leadership), set by the test."""
    forwards = True
    ttl = 7

    def __init__(self) -> None:
        self.me = Replica(id="follower-1", pid=1, host="here", api_url="http://follower")
        self.role = "follower"
        self.ready = False
        self.leader: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        return {"store": "etcd://test/prefix", "id": self.me.id, "role": self.role, "ready": self.ready,
                "leader": self.leader}


async def leader_app(seen: list[dict]) -> web.Application:
    """A stand-in leader: echoes what it got; /api/v1/events/stream sends three chunks apart in time."""
    async def echo(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.raw_path, "body": (await request.read()).decode(),
                     "authorization": request.headers.get("Authorization"),
                     "forwarded_by": request.headers.get(FORWARDED_BY),
                     "content_type": request.headers.get("Content-Type")})
        return web.json_response({"answered": "by the leader"}, status=202, headers={"X-Extra": "kept"})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(3):
            await response.write(f"data: {index}\n\n".encode())
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response
    app = web.Application()
    app.router.add_get("/api/v1/events/stream", stream)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def setup(tmp_path):
    seen: list[dict] = []
    leader = TestServer(await leader_app(seen))
    await leader.start_server()
    store = Store(tmp_path / "vamp.db")
    store.put("breeds", "b:1", {"name": "b:1", "kind": "breeds"})
    leadership = FakeLeadership()
    follower = TestClient(TestServer(create_app(store, SimpleNamespace(), TOKEN, leadership=leadership)))
    await follower.start_server()
    leadership.leader = {"id": "leader-1", "api_url": str(leader.make_url("")).rstrip("/")}
    yield follower, leadership, seen
    await follower.close()
    await leader.close()
    store.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_write_goes_to_the_leader_as_it_came_and_its_answer_comes_back(setup):
    follower, _, seen = setup
    body = json.dumps({"name": "sava", "clusters": {}})
    answer = await follower.put("/api/v1/gateways/sava%2F9050?validate_only=true&x=a%26b", data=body,
                                headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status == 202 and await answer.json() == {"answered": "by the leader"}
    assert answer.headers["X-Extra"] == "kept" and answer.headers[LEADER] == "leader-1"
    assert seen == [{"method": "PUT", "path": "/api/v1/gateways/sava%2F9050?validate_only=true&x=a%26b", "body": body,
                     "authorization": f"Bearer {TOKEN}", "forwarded_by": "follower-1",
                     "content_type": "application/json"}]


async def test_reads_of_the_engine_go_to_the_leader_and_the_event_stream_streams(setup):
    follower, _, seen = setup
    for path in ("/api/v1/deployments", "/api/v1/gateways/a/b", "/api/v1/workflows", "/api/v1/metrics/gateways/g/all"):
        assert (await follower.get(path, headers=AUTH)).status == 202, path
    assert [call["path"] for call in seen] == ["/api/v1/deployments", "/api/v1/gateways/a/b", "/api/v1/workflows",
                                               "/api/v1/metrics/gateways/g/all"]
    stream = await follower.get("/api/v1/events/stream", headers=AUTH)
    chunks = []
    async for chunk in stream.content.iter_any():
        chunks.append(chunk)
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_the_stores_reads_and_the_status_are_answered_by_the_follower_itself(setup):
    follower, leadership, seen = setup
    leadership.leader = None                     # no leader: these still answer
    breeds = await follower.get("/api/v1/breeds", headers=AUTH)
    assert breeds.status == 200 and [b["name"] for b in await breeds.json()] == ["b:1"]
    assert (await follower.get("/api/v1/breeds/b:1", headers=AUTH)).status == 200
    assert (await follower.get("/api/v1/events", headers=AUTH)).status == 200
    status = await follower.get("/api/v1/status", headers=AUTH)
    assert await status.json() == {"store": "etcd://test/prefix", "id": "follower-1", "role": "follower",
                                   "ready": False, "leader": None}
    assert seen == []


async def test_without_a_leader_the_answer_is_503_with_retry_after(setup):
    follower, leadership, seen = setup
    leadership.leader = None
    answer = await follower.post("/api/v1/deployments", data="{}", headers=AUTH)
    assert answer.status == 503 and answer.headers["Retry-After"] == "7"
    assert "no replica leads" in (await answer.json())["error"] and seen == []


async def test_an_unreachable_leader_is_503_naming_it(setup):
    follower, leadership, _ = setup
    leadership.leader = {"id": "gone", "api_url": f"http://127.0.0.1:{free_port()}"}
    answer = await follower.delete("/api/v1/breeds/b:1", headers=AUTH)
    document = await answer.json()
    assert answer.status == 503 and answer.headers["Retry-After"] == "7"
    assert "cannot be reached" in document["error"] and document["leader"]["id"] == "gone"


async def test_a_request_forwarded_once_is_never_forwarded_again(setup):
    follower, _, seen = setup
    answer = await follower.post("/api/v1/events", data="{}", headers={**AUTH, FORWARDED_BY: "other"})
    assert answer.status == 503 and seen == []


async def test_a_new_leader_answers_503_until_it_has_resumed(setup):
    follower, leadership, seen = setup
    leadership.role = "leader"
    answer = await follower.get("/api/v1/deployments", headers=AUTH)
    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    assert "resuming" in (await answer.json())["error"] and seen == []


async def test_the_token_is_checked_before_anything_is_forwarded(setup):
    follower, _, seen = setup
    answer = await follower.post("/api/v1/deployments", data="{}")
    assert answer.status == 401 and seen == []
