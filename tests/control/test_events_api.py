"""The events API (control.api) served by aiohttp's test server on loopback over a real store and event log:
`GET /api/v1/events` filtered by tags, type and time range with 400s naming the parameter, and the
Server-Sent Event stream `GET /api/v1/events/stream` — live delivery, heartbeats, filters, resuming after
`Last-Event-ID` with exactly the missed events, the end of the stream when the platform stops, the token, and
a client that goes away being forgotten."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from control.api import create_app
from control.events.log import EventLog
from control.store import Store
from tests.control.test_control_api import FakeEngine
from tests.support.waiting import eventually_async

T0 = 1_800_000_000.0            # 2027-01-15T08:00:00Z
T0_ISO = "2027-01-15T08:00:00Z"
TOKEN = "s3cret"
WAIT = 5.0                      # seconds any one stream message may take


@dataclass
class Api:
    client: TestClient
    log: EventLog

    async def get(self, path: str, *, headers: dict | None = None, **query: Any) -> tuple[int, Any]:
        async with self.client.get("/api/v1" + path, params=_params(query), headers=headers) as response:
            return response.status, await response.json()

    async def post(self, body: dict) -> dict:
        async with self.client.post("/api/v1/events", json=body) as response:
            assert response.status == 201, await response.text()
            return await response.json()

    async def stream(self, *, headers: dict | None = None, **query: Any) -> Stream:
        response = await self.client.get("/api/v1/events/stream", params=_params(query), headers=headers)
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        stream = Stream(response)
        assert (await stream.message()).comments == ["events"]      # subscribed: what is published now arrives
        return stream


def _params(query: dict) -> list[tuple[str, str]]:
    return [(key, str(item)) for key, value in query.items() for item in (value if isinstance(value, list)
                                                                          else [value])]


@dataclass
class Message:
    """One message of a text/event-stream: its fields, and its comment lines."""
    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return json.loads(self.fields["data"])


class Stream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def message(self, timeout: float = WAIT) -> Message:
        """The next message; AssertionError at the end of the stream."""
        message = Message()
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            assert line, "the stream ended"
            text = line.decode().rstrip("\n")
            if not text:
                return message
            if text.startswith(":"):
                message.comments.append(text[1:].strip())
            else:
                name, _, value = text.partition(":")
                assert name not in message.fields, f"field {name} twice in one message"
                message.fields[name] = value.removeprefix(" ")

    async def event(self, timeout: float = WAIT) -> Message:
        """The next message that is an event (heartbeats skipped)."""
        while True:
            message = await self.message(timeout)
            if message.fields:
                return message

    async def ids(self, count: int) -> list[int]:
        return [int((await self.event()).fields["id"]) for _ in range(count)]

    async def ended(self, timeout: float = WAIT) -> bool:
        """Whether the stream ends (after nothing but heartbeats) within `timeout` seconds."""
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            if not line:
                return True
            assert line.startswith(b":") or line == b"\n", f"an event after the end was due: {line!r}"

    def close(self) -> None:
        self.response.close()


async def start(tmp_path, token: str | None = None) -> tuple[Api, Store]:
    store = Store(tmp_path / "vamp.db")
    log = EventLog(store)
    app = create_app(store, FakeEngine(store), token=token, events=log)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return Api(client, log), store


@pytest.fixture
async def api(tmp_path):
    started, store = await start(tmp_path)
    yield started
    await started.log.close()
    await started.client.close()
    store.close()


def publish(api: Api, count: int, *tags: str) -> list[int]:
    return [api.log.publish(list(tags or ("r",)), index).id for index in range(count)]


# -- GET /events -----------------------------------------------------------------------------------------
async def test_events_are_filtered_by_every_tag_type_and_time_newest_first_in_pages(api):
    sava = api.log.publish(["deployments:sava", "services:sava:1.0.0", "synchronization:deployed"],
                           timestamp=T0).id
    ready = api.log.publish(["deployments:sava", "instances:sava/sava/sava:1.0.0#0", "instance:ready"],
                            timestamp=T0 + 60).id
    other = api.log.publish(["deployments:other", "synchronization:deployed"], timestamp=T0 + 120).id
    judged = api.log.publish(["canary", "workflows:c"], {"requests": 120}, "metrics", timestamp=T0 + 180).id

    async def ids(**query: Any) -> list[int]:
        status, found = await api.get("/events", **query)
        assert status == 200, found
        return [event["id"] for event in found]
    assert await ids() == [judged, other, ready, sava]
    assert await ids(tag="deployments") == [other, ready, sava]
    assert await ids(tag=["deployments", "synchronization:deployed"]) == [other, sava]
    assert await ids(tag=["services"]) == [sava]
    assert await ids(tag=["services:sava"]) == []
    assert await ids(type="metrics") == [judged]
    assert await ids(gte=T0_ISO, lt=T0 + 120) == [ready, sava]
    assert await ids(gt="2027-01-15T09:00:00+01:00", lte=str(T0 + 120)) == [other, ready]
    assert await ids(gt="2027-01-15T08:00:00") == [judged, other, ready]        # UTC unless it says
    status, found = await api.get("/events", tag="workflows")
    assert found == [{"id": judged, "tags": ["canary", "workflows:c"], "value": {"requests": 120},
                      "type": "metrics", "timestamp": "2027-01-15T08:03:00.000Z"}]
    async with api.client.get("/api/v1/events", params={"per_page": "3", "page": "2"}) as response:
        assert [event["id"] for event in await response.json()] == [sava]
        assert response.headers["X-Total-Count"] == "4"


@pytest.mark.parametrize("query, field", [
    ({"gt": "yesterday"}, "gt"), ({"gte": "2027-13-01T00:00:00Z"}, "gte"), ({"lt": "nan"}, "lt"),
    ({"lte": "1e30"}, "lte"), ({"tag": ""}, "tag"), ({"tag": ["a", ""]}, "tag"), ({"type": ""}, "type"),
])
async def test_a_bad_filter_is_a_400_naming_the_parameter(api, query, field):
    for path in ("/events", "/events/stream"):
        status, answer = await api.get(path, **query)
        assert (status, answer["field"]) == (400, field), answer
        assert field in answer["error"]


@pytest.mark.parametrize("query, headers, field", [
    ({"heartbeat": "0"}, {}, "heartbeat"), ({"heartbeat": "2h"}, {}, "heartbeat"),
    ({"heartbeat": "soon"}, {}, "heartbeat"), ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
    ({"last_event_id": "-1"}, {}, "last_event_id"), ({"last_event_id": "1.5"}, {}, "last_event_id"),
])
async def test_a_bad_stream_parameter_is_a_400_naming_it(api, query, headers, field):
    status, answer = await api.get("/events/stream", headers=headers, **query)
    assert (status, answer["field"]) == (400, field), answer
    assert api.log.subscribers == 0


# -- GET /events/stream ----------------------------------------------------------------------------------
async def test_the_stream_delivers_a_posted_event_live_as_id_type_and_json(api):
    stream = await api.stream()
    posted = await api.post({"tags": ["deployments:sava", "canary"], "value": {"weight": 10}, "type": "canary"})
    message = await stream.event()
    assert message.fields == {"id": str(posted["id"]), "event": "canary", "data": message.fields["data"]}
    assert message.data == posted
    stream.close()


async def test_heartbeats_arrive_while_nothing_happens(api):
    stream = await api.stream(heartbeat="0.05")
    for _ in range(3):
        message = await stream.message()
        assert (message.fields, message.comments) == ({}, ["heartbeat"])
    stream.close()


async def test_the_stream_sends_only_what_matches_its_filters(api):
    stream = await api.stream(tag=["deployments:sava", "synchronization"], type="event", gte=T0_ISO)
    api.log.publish(["deployments:other", "synchronization:deployed"], timestamp=T0)
    api.log.publish(["deployments:sava", "synchronization:deployed"], type="metrics", timestamp=T0)
    api.log.publish(["deployments:sava", "synchronization:deployed"], timestamp=T0 - 1)
    wanted = api.log.publish(["deployments:sava", "synchronization:deployed"], timestamp=T0)
    assert await stream.ids(1) == [wanted.id]
    stream.close()


async def test_a_reconnect_with_last_event_id_gets_exactly_the_missed_events(api):
    stream = await api.stream(tag="r")
    first = publish(api, 2, "r")
    assert await stream.ids(2) == first
    stream.close()                                         # the connection drops
    missed = publish(api, 3, "r")
    publish(api, 2, "elsewhere")
    resumed = await api.stream(tag="r", heartbeat="0.2", headers={"Last-Event-ID": str(first[-1])})
    assert await resumed.ids(3) == missed
    live = publish(api, 1, "r")
    assert await resumed.ids(1) == live
    assert (await resumed.message()).comments == ["heartbeat"]      # and nothing a second time before it
    resumed.close()


async def test_the_header_wins_over_the_query_parameter_which_resumes_clients_without_headers(api):
    ids = publish(api, 4)
    by_query = await api.stream(last_event_id=ids[1])
    assert await by_query.ids(2) == ids[2:]
    by_query.close()
    both = await api.stream(last_event_id=ids[0], headers={"Last-Event-ID": str(ids[2])})
    assert await both.ids(1) == ids[3:]
    both.close()
    everything = await api.stream(headers={"Last-Event-ID": "0"})
    assert await everything.ids(4) == ids
    everything.close()


async def test_the_stream_ends_when_the_platform_stops(api):
    stream = await api.stream(heartbeat="0.2")
    queued = publish(api, 1)
    await api.log.close()
    assert await stream.ids(1) == queued
    assert await stream.ended()


async def test_a_client_that_goes_away_is_forgotten(api):
    stream = await api.stream(heartbeat="0.05")
    assert api.log.subscribers == 1
    stream.close()
    await eventually_async(lambda: api.log.subscribers == 0, WAIT, "the subscription removed")


async def test_the_stream_needs_the_token_when_one_is_set(tmp_path):
    api, store = await start(tmp_path, token=TOKEN)
    try:
        status, answer = await api.get("/events/stream")
        assert status == 401 and api.log.subscribers == 0
        stream = await api.stream(headers={"Authorization": f"Bearer {TOKEN}"})
        event = api.log.publish(["with-token"])
        assert await stream.ids(1) == [event.id]
        stream.close()
    finally:
        await api.log.close()
        await api.client.close()
        store.close()


async def test_a_client_that_stops_reading_is_cut_off_and_holds_no_subscription(api, monkeypatch):
    monkeypatch.setattr("control.api.STREAM_WRITE_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.client.port)
    writer.write(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: test\r\n\r\n")    # and never read a byte
    await writer.drain()
    await eventually_async(lambda: api.log.subscribers == 1, WAIT, "the stream subscribed")
    big = "x" * 8192
    for _ in range(40):                    # 32 MB: far more than the socket buffers hold
        with api.log.store.transaction():
            for _ in range(100):
                api.log.publish(["flood"], big)
        await asyncio.sleep(0)             # the stream handler writes what it can
    await eventually_async(lambda: api.log.subscribers == 0, WAIT, "the stuck client cut off")
    writer.close()
