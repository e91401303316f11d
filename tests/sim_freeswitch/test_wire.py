"""The simulator's sans-I/O ESL wire code: framing, url-encoding, FreeSWITCH argument splitting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsbridge.sim.fs_events import SimEvent, Subscription
from fsbridge.sim.fs_wire import (
    CommandParser,
    api_response,
    command_reply,
    disconnect_notice,
    event_frame,
    separate_string,
    serialize_event,
    url_decode,
    url_encode,
)


def test_url_encode_matches_freeswitch_fixtures() -> None:
    # values captured from a real FreeSWITCH (greenswitch fixtures)
    assert url_encode("2015-01-19 12:06:19") == "2015-01-19%2012%3A06%3A19"
    assert url_encode("::1") == "%3A%3A1"
    assert url_encode("System Ready") == "System%20Ready"
    assert url_encode("a,b/c.d-e_f!$'()*~") == "a,b/c.d-e_f!$'()*~"
    assert (
        url_encode('#%&+:;<=>?@[\\]^`{|}"')
        == "%23%25%26%2B%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E%60%7B%7C%7D%22"
    )
    assert url_encode("ü\n") == "%C3%BC%0A"


def test_url_encode_does_not_double_encode() -> None:
    assert url_encode("%20") == "%20"
    assert url_encode("%2a") == "%252a"  # lowercase hex is not an escape for FreeSWITCH


@given(st.text())
def test_url_encoding_round_trips(s: str) -> None:
    enc = url_encode(s)
    assert all(0x20 < ord(c) < 0x7F for c in enc)
    if "%" not in s:
        assert url_decode(enc) == s


def test_disconnect_notice_is_67_bytes() -> None:
    notice = disconnect_notice()
    head, body = notice.split(b"\n\n", 1)
    assert head == b"Content-Type: text/disconnect-notice\nContent-Length: 67"
    assert len(body) == 67


def test_reply_frames() -> None:
    assert (
        command_reply("+OK accepted")
        == b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    )
    assert (
        command_reply("+OK Job-UUID: x", [("Job-UUID", "x")])
        == b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: x\nJob-UUID: x\n\n"
    )
    assert api_response("ü\n") == b"Content-Type: api/response\nContent-Length: 3\n\n\xc3\xbc\n"


def test_event_frame_content_length_first_and_inner_body() -> None:
    frame = event_frame([("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", "j")], "+OK done\n")
    head, payload = frame.split(b"\n\n", 1)
    assert head.split(b"\n") == [
        b"Content-Length: %d" % len(payload),
        b"Content-Type: text/event-plain",
    ]
    assert payload == b"Event-Name: BACKGROUND_JOB\nJob-UUID: j\nContent-Length: 9\n\n+OK done\n"
    bare = event_frame([("Event-Name", "HEARTBEAT"), ("Empty", "")], None)
    assert bare.endswith(b"Event-Name: HEARTBEAT\n\n")  # empty headers are never written


def test_json_event_keeps_duplicate_headers_and_body() -> None:
    text = serialize_event([("Hangup-Cause", "A"), ("Hangup-Cause", "A")], "x", "json")
    assert text == '{"Hangup-Cause":"A","Hangup-Cause":"A","Content-Length":"1","_body":"x"}'


def test_parser_frames_commands_and_bodies() -> None:
    p = CommandParser()
    cmds = p.feed(
        b"\r\n\nauth ClueCon\r\n\r\nsendmsg u\ncall-command: execute\n  execute-app-arg:  /a b\n\n"
    )
    assert [c.line for c in cmds] == ["auth ClueCon", "sendmsg u"]
    assert cmds[1].header("CALL-COMMAND") == "execute"
    assert cmds[1].header("execute-app-arg") == "/a b"
    cmds = p.feed(b"sendevent CUSTOM\nContent-Length: 5\n\nhel")
    assert cmds == []
    cmds = p.feed(b"loapi status\n\n")
    assert cmds[0].body == b"hello" and cmds[1].line == "api status"


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_parser_is_split_invariant(cuts: list[int]) -> None:
    stream = (
        b"auth x\n\nevent plain ALL\n\nsendmsg u\nContent-Length: 4\ncontent-type: text/plain\n\nbody"
        b"\r\napi uuid_break u all\r\n\r\nbgapi status\nJob-UUID: j1\n\n"
    )
    whole = CommandParser().feed(stream)
    p, got, pos = CommandParser(), [], 0
    for c in cuts:
        got += p.feed(stream[pos : pos + c])
        pos += c
    got += p.feed(stream[pos:])
    assert got == whole
    assert [c.line for c in whole] == [
        "auth x",
        "event plain ALL",
        "sendmsg u",
        "api uuid_break u all",
        "bgapi status",
    ]


def test_separate_string_freeswitch_rules() -> None:
    assert separate_string("a  b   c d e", 3) == [
        "a",
        "b",
        "c d e",
    ]  # rest of line in the last slot
    assert separate_string("u start 'ws://h:1/x y' mono", 7) == [
        "u",
        "start",
        "ws://h:1/x y",
        "mono",
    ]
    assert separate_string(r"a\nb c\\d \q", 5) == ["a\nb", "c\\d", "\\q"]
    assert separate_string("^^|a||b|", 10) == ["a", "", "b"]
    assert separate_string("insert/r/k/v/w", 4, "/") == ["insert", "r", "k", "v/w"]
    meta = separate_string('u start ws://h:1/ mono 8k bug {"a": "b c"}', 7)
    assert meta[5:] == ["bug", '{"a": "b c"}']


@given(
    st.lists(st.text(alphabet="abcxyz019:/.{}=", min_size=1, max_size=8), min_size=1, max_size=6)
)
def test_separate_string_splits_plain_words(words: list[str]) -> None:
    assert separate_string(" ".join(words), 10) == words


def _ev(name: str, subclass: str | None = None, **headers: str) -> SimEvent:
    hs = [("Event-Name", name)] + ([("Event-Subclass", subclass)] if subclass else [])
    return SimEvent(
        name, hs + [(k.replace("_", "-"), v) for k, v in headers.items()], None, subclass
    )


def test_subscription_all_custom_and_nix() -> None:
    s = Subscription()
    assert not s.enable(["bogus"])
    assert s.enable(["ALL"])
    assert s.wants(_ev("CUSTOM", "mod_audio_fork::connect"))
    s.nix(["HEARTBEAT"])
    assert not s.wants(_ev("HEARTBEAT")) and s.wants(_ev("CHANNEL_PARK"))
    c = Subscription()
    c.enable(["CHANNEL_PARK", "CUSTOM", "mod_audio_fork::connect"])
    assert c.wants(_ev("CUSTOM", "mod_audio_fork::connect"))
    assert not c.wants(_ev("CUSTOM", "mod_audio_fork::disconnect"))
    assert c.enable(["switch_event_dtmf"]) and c.wants(_ev("DTMF"))


def test_filters_positive_negative_and_missing_header() -> None:
    s = Subscription()
    s.enable(["ALL"])
    s.add_filter("Unique-ID", "u1")
    assert s.wants(_ev("CHANNEL_PARK", Unique_ID="u1"))
    assert not s.wants(_ev("CHANNEL_PARK", Unique_ID="u2"))
    assert not s.wants(_ev("BACKGROUND_JOB"))  # lacks the header: dropped
    s.add_filter("Event-Name", "BACKGROUND_JOB")
    assert s.wants(_ev("BACKGROUND_JOB"))
    s.add_filter("Event-Name", "-CHANNEL_PARK")
    assert not s.wants(_ev("CHANNEL_PARK", Unique_ID="u1"))
    s.delete_filter("all", None)
    assert s.wants(_ev("CHANNEL_PARK", Unique_ID="u2"))
