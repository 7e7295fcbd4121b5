"""The exchange's state table and a client connection's flow control, as units (gateway/proxy/exchange.py,
gateway/proxy/flow.py). The protocols that use them are tested over sockets and fake transports elsewhere."""
from __future__ import annotations

from itertools import pairwise

import pytest

from gateway.proxy.request_head import read_request_head
from gateway.proxy.exchange import (CHECKED, COMPLETE, DONE, FAILED, RECEIVED, RESPONDING, ROUTED, SENT,
                                    STATE_NAMES, STREAMING, TRANSITIONS, TUNNEL, Exchange, InvalidTransition, check)
from gateway.proxy.flow import FlowControl
from gateway.proxy.wire import PAUSE_BUFFER, PAUSE_PIPELINE


def test_every_state_has_its_transitions_and_done_is_final():
    assert sorted(TRANSITIONS) == list(range(len(STATE_NAMES)))
    assert all(new in TRANSITIONS for targets in TRANSITIONS.values() for new in targets)
    assert TRANSITIONS[DONE] == frozenset()


@pytest.mark.parametrize("path", [
    (RECEIVED, ROUTED, SENT, RESPONDING, COMPLETE, DONE),             # a GET on a pooled connection
    (RECEIVED, ROUTED, STREAMING, RESPONDING, COMPLETE, DONE),        # a POST whose body had arrived
    (RECEIVED, ROUTED, SENT, ROUTED, SENT, RESPONDING, DONE),         # replayed; body ended by the close
    (RECEIVED, ROUTED, SENT, RESPONDING, COMPLETE, TUNNEL),           # a WebSocket
    (RECEIVED, DONE),                                                 # 404: no gateway for the Host
    (RECEIVED, ROUTED, SENT, RESPONDING, FAILED),                     # the backend reset mid-response
])
def test_the_lives_of_an_exchange_are_transitions_of_the_table(path):
    for old, new in pairwise(path):
        check(old, new)


@pytest.mark.parametrize("old, new", [(DONE, RESPONDING), (RECEIVED, SENT), (STREAMING, ROUTED),
                                      (RESPONDING, SENT), (TUNNEL, DONE)])
def test_a_move_the_table_does_not_allow_raises_and_names_both_states(old, new):
    with pytest.raises(InvalidTransition, match=f"{STATE_NAMES[old]} -> {STATE_NAMES[new]}"):
        check(old, new)


def _exchange(method: bytes = b"GET") -> Exchange:
    return Exchange(None, read_request_head(b"%s / HTTP/1.1\r\nHost: example.com\r\n\r\n" % method),  # type: ignore[arg-type]
                    b"", True, False)


def test_only_a_request_of_which_no_body_byte_went_upstream_is_replayed():
    ex = _exchange()
    ex.state = ROUTED
    ex.state = SENT
    assert ex.replayable
    ex.state = STREAMING
    assert not ex.replayable
    post = _exchange(b"POST")
    post.state = ROUTED
    post.state = SENT
    assert not post.replayable


@pytest.mark.skipif(not CHECKED, reason="the state table is enforced only when VAMP_CHECK_STATES is set "
                                        "(tests/conftest.py sets it)")
def test_with_checking_on_every_store_of_the_state_goes_through_the_table():
    ex = _exchange()
    assert ex.state == RECEIVED
    with pytest.raises(InvalidTransition, match="RECEIVED -> SENT"):
        ex.state = SENT
    assert ex.state == RECEIVED          # a refused move changes nothing
    for new in (ROUTED, SENT, RESPONDING, COMPLETE, DONE):
        ex.state = new
    assert ex.state == DONE


class _Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closing = False

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return self.closing


def test_reading_resumes_once_no_reason_to_pause_is_left():
    transport, resumed = _Transport(), []
    flow = FlowControl(transport, lambda: resumed.append(True))  # type: ignore[arg-type]
    flow.pause(PAUSE_PIPELINE)
    flow.pause(PAUSE_BUFFER)
    assert transport.calls == ["pause"]
    flow.resume(PAUSE_PIPELINE)
    flow.resume(PAUSE_PIPELINE)              # not in force any more: nothing happens
    assert transport.calls == ["pause"] and not resumed
    flow.resume(PAUSE_BUFFER)
    assert transport.calls == ["pause", "resume"] and resumed == [True]


def test_a_closing_connection_is_neither_paused_nor_resumed():
    transport = _Transport()
    flow = FlowControl(transport, lambda: None)  # type: ignore[arg-type]
    flow.pause(PAUSE_BUFFER)
    transport.closing = True
    flow.resume(PAUSE_BUFFER)
    flow.pause(PAUSE_PIPELINE)
    assert transport.calls == ["pause"]
    assert flow.mask == PAUSE_PIPELINE
