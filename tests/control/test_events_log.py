"""The event log (control.events.log) over each real store, SQLite and etcd: what its filters select (SQLite's SQL
and the etcd store's scan agree with `EventFilter.matches`), retention by count and age, ids that keep
increasing across restarts, and live delivery: in order, after commit only, resumed after an id, and for a
subscriber that falls behind, with a bounded queue and every event still kept delivered exactly once."""
from __future__ import annotations

import asyncio
import itertools

import pytest

from control.events.log import EventLog
from control.events.model import Event, EventFilter
from control.store import Store
from gateway.common.errors import Invalid
from tests.support.waiting import eventually_async

T0 = 1_800_000_000.0          # a fixed moment (2027-01-15), so that time filters are exact


@pytest.fixture
def store(control_stores):
    return control_stores.open()


@pytest.fixture
async def log(store):
    events = EventLog(store)
    yield events
    await events.close()


def publish_sample(log: EventLog) -> list[Event]:
    """Events of several tags, types and times: T0, T0+1, … in publishing order."""
    samples = [
        (["deployments:sava", "clusters:sava", "services:sava:1.0.0", "synchronization:deployed"], "event"),
        (["deployments:sava", "instances:sava/sava/sava:1.0.0#0", "instance:ready"], "event"),
        (["deployments:other", "synchronization:undeployed"], "event"),
        (["gateways:sava/9050", "gateway:updated", "routes:sava/sava/webport"], "event"),
        (["canary", "workflows:sava-canary"], "metrics"),
        (["services"], "event"),
    ]
    return [log.publish(tags, {"n": index}, type_, timestamp=T0 + index)
            for index, (tags, type_) in enumerate(samples)]


FILTERS = [
    EventFilter(),
    EventFilter(tags=("deployments",)),
    EventFilter(tags=("deployments:sava",)),
    EventFilter(tags=("deployments", "synchronization")),
    EventFilter(tags=("services",)),                       # implied by services:sava:1.0.0, and a tag itself
    EventFilter(tags=("services:sava",)),                  # implies nothing: no event has it
    EventFilter(tags=("instances",)),
    EventFilter(tags=("routes:sava/sava/webport", "gateways")),
    EventFilter(tags=("workflows", "canary")),
    EventFilter(tags=("deploy",)),                         # a prefix of a tag is not a tag
    EventFilter(type="metrics"),
    EventFilter(type="event", tags=("deployments",)),
    EventFilter(gt=T0 + 1),
    EventFilter(gte=T0 + 1),
    EventFilter(lt=T0 + 2),
    EventFilter(lte=T0 + 2),
    EventFilter(gte=T0 + 1, lt=T0 + 4, tags=("deployments",)),
]


@pytest.mark.parametrize("where", FILTERS, ids=str)
async def test_a_query_selects_exactly_what_the_filter_matches_newest_first(log, where):
    published = publish_sample(log)
    expected = [event for event in reversed(published) if where.matches(event)]
    assert log.query(where) == expected
    assert log.count(where) == len(expected)


async def test_the_implied_tags_and_time_bounds_select_as_documented(log):
    published = publish_sample(log)
    ids = [event.id for event in published]
    assert [e.id for e in log.query(EventFilter(tags=("services",)))] == [ids[5], ids[0]]
    assert log.query(EventFilter(tags=("services:sava",))) == []
    assert [e.id for e in log.query(EventFilter(gt=T0 + 1, lte=T0 + 3))] == [ids[3], ids[2]]
    assert [e.id for e in log.query(EventFilter(gte=T0 + 1, lt=T0 + 3))] == [ids[2], ids[1]]


async def test_pages_of_a_query(log):
    published = publish_sample(log)
    newest_first = [event.id for event in reversed(published)]
    assert [e.id for e in log.query(EventFilter(), 2, offset=0)] == newest_first[:2]
    assert [e.id for e in log.query(EventFilter(), 2, offset=4)] == newest_first[4:]
    assert log.query(EventFilter(), 2, offset=6) == []


async def test_a_published_event_is_stored_as_json_with_sorted_unique_tags(log):
    event = log.publish(["b", "a:x", "b"], {"weights": (90, 10)}, type="canary")
    assert event.tags == ("a:x", "b") and event.type == "canary" and event.value == {"weights": [90, 10]}
    assert log.query(EventFilter()) == [event]
    assert event.as_json()["timestamp"].endswith("Z")


@pytest.mark.parametrize("tags, type_, field", [([], "event", "/tags"), ([""], "event", "/tags"),
                                                (["a", 3], "event", "/tags"), (["a"], "", "/type")])
async def test_an_event_needs_tags_and_a_type(log, tags, type_, field):
    with pytest.raises(Invalid) as refused:
        log.publish(tags, type=type_)
    assert refused.value.field == field
    assert log.count(EventFilter()) == 0


# -- retention ------------------------------------------------------------------------------------------
async def test_retention_keeps_the_newest_max_count_events(store):
    log = EventLog(store, max_count=4)
    published = [log.publish(["n"], index) for index in range(10)]
    assert log.prune() == 6
    assert [e.id for e in log.query(EventFilter())] == [e.id for e in reversed(published[-4:])]
    assert log.prune() == 0


async def test_retention_drops_events_older_than_max_age(store):
    log = EventLog(store, max_age=3600)
    old = log.publish(["n"], timestamp=T0 - 3601)
    edge = log.publish(["n"], timestamp=T0 - 3600)
    new = log.publish(["n"], timestamp=T0)
    assert log.prune(now=T0) == 1
    assert log.query(EventFilter()) == [new, edge]
    assert old not in log.query(EventFilter())


async def test_the_log_prunes_when_it_starts_and_then_periodically(store):
    for index in range(5):
        store.add_event(["n"], index)
    log = EventLog(store, max_count=3, prune_interval=0.05)
    log.start()
    try:
        assert log.count(EventFilter()) == 3
        for index in range(3):
            log.publish(["m"], index)
        await eventually_async(lambda: log.count(EventFilter()) == 3, 10, "pruned back to 3 events",
                               context=lambda: log.count(EventFilter()))
        assert [e.tags for e in log.query(EventFilter())] == [("m",)] * 3
    finally:
        await log.close()


async def test_ids_keep_increasing_after_pruning_and_a_restart(tmp_path):
    store = Store(tmp_path / "vamp.db")
    log = EventLog(store, max_count=1)
    last = [log.publish(["n"], index) for index in range(3)][-1]
    assert log.prune() == 2
    store.prune_events(older_than=T0 * 2)          # every event gone
    assert log.count(EventFilter()) == 0
    store.close()
    reopened = Store(tmp_path / "vamp.db")
    try:
        assert EventLog(reopened).publish(["n"]).id > last.id
    finally:
        reopened.close()


@pytest.mark.parametrize("arguments", [{"max_count": 0}, {"max_age": 0}, {"prune_interval": 0},
                                       {"queue_limit": 0}])
def test_retention_settings_must_be_positive(store, arguments):
    with pytest.raises(ValueError):
        EventLog(store, **arguments)


# -- live delivery ----------------------------------------------------------------------------------------
async def take(subscription, count: int, timeout: float = 5.0) -> list[Event]:
    taken = []
    for _ in range(count):
        event = await subscription.next(timeout)
        assert event is not None, f"only {len(taken)} of {count} events arrived"
        taken.append(event)
    return taken


async def test_a_subscriber_gets_matching_events_as_they_are_published_in_order(log):
    subscription = log.subscribe(EventFilter(tags=("deployments",)))
    before_nothing = await subscription.next(timeout=0.01)
    first = log.publish(["deployments:a"], 1)
    log.publish(["other"], 2)
    second = log.publish(["deployments:b"], 3)
    assert before_nothing is None
    assert await take(subscription, 2) == [first, second]
    assert await subscription.next(timeout=0.01) is None and not subscription.finished
    subscription.close()
    assert log.subscribers == 0


async def test_follow_resumes_after_an_id_with_the_kept_events_then_goes_live(log):
    published = [log.publish(["n"], index) for index in range(5)]
    seen: list[Event] = []

    async def consume() -> None:
        async for event in log.follow(EventFilter(tags=("n",)), after=published[1].id):
            seen.append(event)
            if len(seen) == 4:
                return
    consumer = asyncio.create_task(consume())
    await eventually_async(lambda: len(seen) == 3, 5, "the three kept events after the id")
    live = log.publish(["n"], "live")
    await asyncio.wait_for(consumer, 5)
    assert seen == [*published[2:], live]
    assert log.subscribers == 0                    # leaving the loop ends the subscription


async def test_an_event_is_delivered_only_once_its_transaction_commits(log, store):
    subscription = log.subscribe(EventFilter())
    with pytest.raises(RuntimeError), store.transaction():
        log.publish(["rolled-back"])
        raise RuntimeError("the write fails")
    assert await subscription.next(timeout=0.05) is None
    assert log.count(EventFilter()) == 0
    with store.transaction():
        kept = log.publish(["committed"])
        assert await subscription.next(timeout=0.01) is None      # not before the commit
    assert await subscription.next(timeout=5) == kept
    subscription.close()


async def test_a_subscriber_that_falls_behind_holds_a_bounded_queue_and_misses_nothing(store):
    log = EventLog(store, queue_limit=3)
    subscription = log.subscribe(EventFilter(tags=("n",)))
    published = [log.publish(["n"], index) for index in range(50)]
    log.publish(["other"])
    assert subscription.queued <= 3
    assert await take(subscription, 50) == published
    later = log.publish(["n"], "later")
    assert await take(subscription, 1) == [later]
    assert await subscription.next(timeout=0.01) is None
    await log.close()


async def test_a_subscriber_behind_pruning_gets_every_event_still_kept_once(store):
    log = EventLog(store, queue_limit=2, max_count=10)
    subscription = log.subscribe(EventFilter())
    published = [log.publish(["n"], index) for index in range(30)]
    log.prune()
    delivered = []
    while (event := await subscription.next(timeout=0.05)) is not None:
        delivered.append(event)
    ids = [event.id for event in delivered]
    assert ids == sorted(set(ids))                                   # in order, none twice
    assert set(published[-10:]) <= set(delivered)                    # every event still kept
    await log.close()


async def test_an_event_published_from_another_thread_reaches_the_subscriber(log):
    subscription = log.subscribe(EventFilter())
    event = await asyncio.to_thread(log.publish, ["threaded"])
    assert await subscription.next(timeout=5) == event
    subscription.close()


async def test_closing_the_log_ends_subscriptions_after_what_they_have_queued(log):
    subscription = log.subscribe(EventFilter())
    queued = log.publish(["n"])
    waiting = asyncio.create_task(log.subscribe(EventFilter(tags=("never",))).next())
    await log.close()
    assert await subscription.next() == queued
    assert await subscription.next() is None and subscription.finished
    assert await asyncio.wait_for(waiting, 5) is None
    late = log.subscribe(EventFilter())
    assert await late.next() is None and late.finished
    log.publish(["after-close"])                                 # still recorded
    assert log.count(EventFilter(tags=("after-close",))) == 1


async def test_many_subscribers_each_get_what_they_match(log):
    tags = ["a", "b", "c"]
    subscriptions = {tag: log.subscribe(EventFilter(tags=(tag,))) for tag in tags}
    published = [log.publish([tag]) for tag in itertools.islice(itertools.cycle(tags), 9)]
    for tag, subscription in subscriptions.items():
        assert await take(subscription, 3) == [event for event in published if event.tags == (tag,)]
        subscription.close()
