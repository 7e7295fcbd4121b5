"""The pieces of `vamp events` (control.events.cli) that need no server: reading a text/event-stream as the
standard says (comments skipped, `data:` lines joined, CRLF line ends), `--since` in its three forms, and how
an event is printed for people. The command against a real `vamp run` is tested in test_events_platform.py."""
from __future__ import annotations

import io

import pytest

from control.events.cli import event_line, read_server_sent, since_moment
from gateway.common.cli import CommandError


def test_a_server_sent_stream_gives_each_events_json_and_skips_the_rest():
    body = (b": events\n\n"
            b"id: 1\nevent: event\ndata: {\"id\": 1, \"tags\": [\"a\"]}\n\n"
            b": heartbeat\n\n"
            b"retry: 1000\r\nid: 2\r\ndata: {\"id\": 2,\r\ndata:  \"tags\": [\"b\"]}\r\n\r\n"
            b"id: 3\ndata: {\"id\": 3}")                     # cut off before its end: not an event
    assert list(read_server_sent(io.BytesIO(body))) == [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": ["b"]}]


@pytest.mark.parametrize("given, expected", [("1800000000", "1800000000"), ("1800000000.5", "1800000000.5"),
                                             ("2026-11-25T15:30:00Z", "2026-11-25T15:30:00Z"),
                                             ("10m", repr(1_800_000_000.0 - 600)),
                                             ("2h", repr(1_800_000_000.0 - 7200)),
                                             ("1d", repr(1_800_000_000.0 - 86400))])
def test_since_takes_an_epoch_an_iso_time_or_a_duration_ago(given, expected):
    assert since_moment(given, now=1_800_000_000.0) == expected


@pytest.mark.parametrize("given", ["yesterday", "10 parsecs", "2026-13-01", ""])
def test_a_bad_since_is_bad_input(given):
    with pytest.raises(CommandError) as refused:
        since_moment(given)
    assert refused.value.exit_code == 2 and "--since" in str(refused.value)


def test_an_event_line_shows_time_id_type_tags_and_value():
    event = {"id": 7, "timestamp": "2026-11-25T15:30:00.000Z", "type": "metrics", "tags": ["a:b", "c"],
             "value": {"n": 1}}
    assert event_line(event) == '2026-11-25T15:30:00.000Z  #7  [metrics]  a:b c  {"n":1}'
    assert event_line({**event, "type": "event", "value": None}) == "2026-11-25T15:30:00.000Z  #7  a:b c"
