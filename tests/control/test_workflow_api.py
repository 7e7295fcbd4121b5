"""The API of workflows (control/workflows/api.py and the artifact paths): a workflow's document shows its status,
reason and state; `PUT …/status` takes a word or an object, refuses what it cannot do with the field at fault and
changes nothing with `validate_only`; every way of writing a workflow (one document, many, a delete) reaches the
runner."""
from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from control.api import create_app
from control.orchestrator.local import LocalOrchestrator
from control.store import Store
from control.events.log import EventLog
from control.metrics.model import NoMetrics
from control.workflows.runner import WorkflowRunner
from tests.control.test_control_api import FakeEngine
from tests.support.waiting import eventually_async

ALIVE = {"schedule": "daemon", "workflow": "heartbeat", "parameters": {"interval": "1h"}}
SCRIPT = {"schedule": "daemon", "breed": {"name": "sleeper", "cmd": "python -c \"import time; time.sleep(300)\""}}
WAIT = 15.0


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def __call__(self, method: str, path: str, body: Any = None, *, yaml_text: str | None = None,
                       **query: str) -> tuple[int, Any]:
        if yaml_text is not None:
            data, kind = yaml_text, "application/x-yaml"
        else:
            data, kind = json.dumps(body), "application/json"
        headers = {"Content-Type": kind} if body is not None or yaml_text is not None else {}
        async with self.client.request(method, "/api/v1" + path, data=data if headers else None, headers=headers,
                                       params=query) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def status_is(self, name: str, status: str) -> bool:
        return (await self("GET", f"/workflows/{name}/status"))[1]["status"] == status


@pytest.fixture
async def api(tmp_path):
    store = Store(tmp_path / "vamp.db")
    orchestrator = LocalOrchestrator(tmp_path / "logs", stop_grace=5.0)
    workflows = WorkflowRunner(store, orchestrator, FakeEngine(store), NoMetrics(), EventLog(store),
                               api_url="http://127.0.0.1:1", token=None)
    client = TestClient(TestServer(create_app(store, FakeEngine(store), workflows=workflows), host="127.0.0.1"))
    await client.start_server()
    await workflows.start()
    yield Api(client)
    await workflows.close()
    await orchestrator.close()
    await client.close()
    store.close()


async def test_a_workflow_document_shows_its_status_reason_and_state(api):
    assert (await api("PUT", "/workflows/alive", ALIVE))[0] == 201
    await eventually_async(lambda: api.status_is("alive", "running"), WAIT, "running")
    status, document = await api("GET", "/workflows/alive")
    assert status == 200 and (document["status"], document["reason"], document["state"]) == ("running", None, None)
    status, listed = await api("GET", "/workflows")
    assert [(item["name"], item["status"]) for item in listed] == [("alive", "running")]
    status, answer = await api("GET", "/workflows/alive/status")
    assert answer["runs"] == 1 and answer["last_run"]["outcome"] is None


async def test_status_requests_as_words_or_objects(api):
    await api("PUT", "/workflows/alive", ALIVE)
    await eventually_async(lambda: api.status_is("alive", "running"), WAIT, "running")
    status, answer = await api("PUT", "/workflows/alive/status", yaml_text="suspended")
    assert status == 202 and answer["status"] in ("stopping", "suspended")
    await eventually_async(lambda: api.status_is("alive", "suspended"), WAIT, "suspended")
    status, answer = await api("PUT", "/workflows/alive/status", {"status": "running"}, validate_only="true")
    assert (status, answer["status"]) == (200, "suspended")
    status, answer = await api("PUT", "/workflows/alive/status", {"action": "promote"})
    assert status == 409 and "no run in progress" in answer["error"]
    status, _ = await api("PUT", "/workflows/alive/status", "running")
    assert status == 202
    await eventually_async(lambda: api.status_is("alive", "running"), WAIT, "running again")
    status, answer = await api("PUT", "/workflows/alive/status", "promote")
    assert status == 400 and "takes no action 'promote'" in answer["error"]


@pytest.mark.parametrize("body, field", [
    ({"status": "paused"}, "/status"),
    ({"action": "two words"}, "/action"),
    ({"status": "running", "action": "promote"}, None),
    (["running"], None),
    ("", None),
])
async def test_a_bad_status_request_is_refused_naming_the_field(api, body, field):
    await api("PUT", "/workflows/alive", ALIVE)
    status, answer = await api("PUT", "/workflows/alive/status", body)
    assert (status, answer["field"]) == (400, field), answer


async def test_status_of_a_missing_workflow_is_404_and_a_script_takes_no_actions(api):
    assert (await api("GET", "/workflows/nothing/status"))[0] == 404
    assert (await api("PUT", "/workflows/nothing/status", "suspended"))[0] == 404
    await api("PUT", "/workflows/sleeper", SCRIPT)
    await eventually_async(lambda: api.status_is("sleeper", "running"), WAIT, "the script running")
    status, answer = await api("PUT", "/workflows/sleeper/status", {"action": "abort"})
    assert (status, answer["field"]) == (400, "/action") and "is a script" in answer["error"]


async def test_workflows_in_a_multi_document_body_run_and_a_deleted_one_stops(api):
    status, _ = await api("PUT", "", [{"kind": "workflows", "name": "one", **ALIVE},
                                      {"kind": "workflows", "name": "two", **ALIVE}])
    assert status == 200
    for name in ("one", "two"):
        await eventually_async(lambda name=name: api.status_is(name, "running"), WAIT, f"{name} running")
    assert (await api("DELETE", "/workflows/one"))[0] == 204
    assert (await api("GET", "/workflows/one/status"))[0] == 404
    status, answer = await api("PUT", "/workflows/bad", {**ALIVE, "parameters": {"interval": "soon"}})
    assert (status, answer["field"]) == (400, "/parameters/interval")
