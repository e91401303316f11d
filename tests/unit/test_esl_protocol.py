"""The pure ESL core: wire parser (fuzzed), replies, command formatting, greenswitch quirks."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from greenswitch.esl import ESLEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.esl import (
    EslCommandError,
    EslEvent,
    EslFrame,
    EslParser,
    EslProtocolError,
    check_reply,
    event_from_headers,
    sendmsg_text,
)
from fsbridge.esl.protocol import (
    MAX_HEADER_BYTES,
    bgapi_text,
    check_command,
    parse_channel_dump,
    parse_plain_event,
    subscribe_text,
)

FS_SAFE = ",/.-_!$'()*~"


def plain_event(headers: list[tuple[str, str]], body: str | None = None) -> bytes:
    """An event frame exactly as FreeSWITCH writes it (§1.5): Content-Length first."""
    lines = "".join(f"{k}: {quote(v, safe=FS_SAFE)}\n" for k, v in headers)
    if body:
        payload = (lines + f"Content-Length: {len(body.encode())}\n\n").encode() + body.encode()
    else:
        payload = (lines + "\n").encode()
    return f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload


def api_response(body: str) -> bytes:
    data = body.encode()
    return f"Content-Type: api/response\nContent-Length: {len(data)}\n\n".encode() + data


def command_reply(text: str, extra: str = "") -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n{extra}\n".encode()


BG_BODY = "UP 0 years, 0 days, 1 hour\nready: x: y\n"
STREAM = b"".join(
    [
        b"Content-Type: auth/request\n\n",
        command_reply("+OK accepted"),
        command_reply("+OK Job-UUID: 7f4d", "Job-UUID: 7f4d\n"),
        api_response("+OK Message sent\n"),
        api_response("türkçe çıktı\n"),
        plain_event(
            [
                ("Event-Name", "CHANNEL_PARK"),
                ("Unique-ID", "u-1"),
                ("Event-Date-Local", "2015-01-19 12:06:19"),
                ("variable_fsbridge_profile", "support"),
                ("variable_note", "a: b\n100%"),
                ("Hangup-Cause", "NORMAL_CLEARING"),
                ("Hangup-Cause", "SECOND"),
            ]
        ),
        plain_event(
            [("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", "7f4d"), ("Job-Command", "status")],
            BG_BODY,
        ),
        plain_event(
            [
                ("Event-Name", "CUSTOM"),
                ("Event-Subclass", "mod_audio_fork::connect_failed"),
                ("Unique-ID", "u-1"),
            ],
            '{"reason":"HS: %41 nope"}',
        ),
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
        b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n",
    ]
)


def test_parses_every_frame_type() -> None:
    frames = EslParser().feed(STREAM)
    assert [f.content_type for f in frames] == [
        "auth/request",
        "command/reply",
        "command/reply",
        "api/response",
        "api/response",
        "text/event-plain",
        "text/event-plain",
        "text/event-plain",
        "text/disconnect-notice",
    ]
    assert frames[0].body is None
    assert frames[1].headers["Reply-Text"] == "+OK accepted"
    assert frames[2].headers["Job-UUID"] == "7f4d"
    assert frames[3].body == "+OK Message sent\n"
    assert frames[4].body == "türkçe çıktı\n"  # Content-Length counts bytes

    park = frames[5].event()
    assert isinstance(park, EslEvent)
    assert park.name == "CHANNEL_PARK" and park.uuid == "u-1" and park.subclass is None
    assert park.headers["Event-Date-Local"] == "2015-01-19 12:06:19"
    assert park.variable("fsbridge_profile") == "support"
    assert park.variable("note") == "a: b\n100%"  # greenswitch would cut this at ': '
    assert park.variable("missing") is None
    assert park.headers["Hangup-Cause"] == "NORMAL_CLEARING"  # first wins, like FS lookups
    assert park.body is None

    job = frames[6].event()
    assert job is not None and job.name == "BACKGROUND_JOB"
    assert job.body == BG_BODY
    custom = frames[7].event()
    assert custom is not None and custom.name == "CUSTOM"
    assert custom.subclass == "mod_audio_fork::connect_failed"
    assert custom.body == '{"reason":"HS: %41 nope"}'  # body is never url-decoded

    assert frames[8].event() is None
    assert frames[8].body is not None and frames[8].body.startswith("Disconnected")


def test_byte_at_a_time() -> None:
    parser = EslParser()
    frames: list[EslFrame] = []
    for i in range(len(STREAM)):
        frames += parser.feed(STREAM[i : i + 1])
    assert frames == EslParser().feed(STREAM)
    assert parser.buffered == 0


def test_json_event() -> None:
    payload = b'{"Event-Name":"CUSTOM","Event-Subclass":"a::b","Arr":["x","y"],"_body":"hi"}'
    frame = f"Content-Length: {len(payload)}\nContent-Type: text/event-json\n\n".encode() + payload
    (f,) = EslParser().feed(frame)
    ev = f.event()
    assert ev is not None and ev.subclass == "a::b" and ev.body == "hi"
    assert ev.headers["Arr"] == "ARRAY::x|:y"


def test_stray_newlines_between_frames_are_ignored() -> None:
    frames = EslParser().feed(b"\n\n" + command_reply("+OK") + b"\n" + command_reply("+OK bye"))
    assert [f.headers["Reply-Text"] for f in frames] == ["+OK", "+OK bye"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"Content-Type: api/response\nContent-Length: x1\n\n", "Content-Length"),
        (b"Content-Type: api/response\nContent-Length: -4\n\n", "Content-Length"),
        (b"no colon here\n\n", "malformed"),
        (b"Reply-Text: +OK\n\n", "without Content-Type"),
        (b"Content-Type: a\xff\n\n", "UTF-8"),
        (b"Content-Type: api/response\nContent-Length: 99999999999\n\n", "exceeds"),
        (
            b"Content-Length: 40\nContent-Type: text/event-plain\n\n"
            b"Event-Name: X\nContent-Length: 500\n\nshort...",
            "body",
        ),
    ],
)
def test_garbage_raises_protocol_error(data: bytes, message: str) -> None:
    parser = EslParser()
    with pytest.raises(EslProtocolError, match=message):
        parser.feed(data)
    # The parser stays failed: a broken stream cannot be resynchronised.
    with pytest.raises(EslProtocolError):
        parser.feed(command_reply("+OK"))


def test_endless_header_block_is_bounded() -> None:
    parser = EslParser()
    chunk = b"X-Filler: " + b"a" * 1000 + b"\n"
    with pytest.raises(EslProtocolError, match="header block"):
        for _ in range(MAX_HEADER_BYTES // len(chunk) + 2):
            parser.feed(chunk)


# ------------------------------------------------------------------------------- fuzzing

_header_names = st.sampled_from(
    ["Unique-ID", "Event-Sequence", "variable_x", "Caller-Caller-ID-Name", "Application-Data"]
)
_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
_bodies = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@st.composite
def frames_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["reply", "api", "event", "event_body"]))
    if kind == "reply":
        text = draw(st.text(alphabet="+-OKERabc :[]", min_size=1, max_size=20)).strip() or "+OK"
        return command_reply(text)
    if kind == "api":
        return api_response(draw(_bodies))
    headers = [("Event-Name", draw(st.sampled_from(["CHANNEL_PARK", "DTMF", "CUSTOM"])))]
    headers += draw(st.lists(st.tuples(_header_names, _values), max_size=5))
    body = draw(_bodies) if kind == "event_body" else None
    return plain_event(headers, body or None)


@settings(max_examples=150, deadline=None)
@given(st.lists(frames_bytes(), min_size=1, max_size=8), st.data())
def test_random_splits_give_the_same_frames(chunks: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(chunks)
    expected = EslParser().feed(stream)
    assert len(expected) == len(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    parser = EslParser()
    got: list[EslFrame] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += parser.feed(stream[prev:cut])
        prev = cut
    assert got == expected
    assert parser.buffered == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_header_names, _values), max_size=6), _bodies)
def test_event_values_round_trip(headers: list[tuple[str, str]], body: str) -> None:
    frame = plain_event([("Event-Name", "CHANNEL_EXECUTE"), *headers], body or None)
    (parsed,) = EslParser().feed(frame)
    ev = parsed.event()
    assert ev is not None
    first: dict[str, str] = {}
    for k, v in headers:
        first.setdefault(k, v)
    for k, v in first.items():
        assert ev.headers[k] == v
    assert ev.body == (body or None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_garbage_never_crashes_otherwise(data: bytes, step: int) -> None:
    parser = EslParser()
    try:
        for i in range(0, len(data), step):
            for frame in parser.feed(data[i : i + step]):
                assert isinstance(frame.content_type, str)
                frame.event()
    except EslProtocolError as exc:
        assert str(exc)


# ------------------------------------------------------------------------------- replies


def test_check_reply() -> None:
    assert check_reply("+OK Message sent\n") == "+OK Message sent\n"
    assert check_reply("true") == "true"
    assert check_reply("_undef_") == "_undef_"
    for bad in ("-ERR invalid uuid\n", "-USAGE: <uuid> [all]\n", "-ERROR\n"):
        with pytest.raises(EslCommandError) as info:
            check_reply(bad)
        assert info.value.reply == bad


def test_command_error_names_only_the_command() -> None:
    err = EslCommandError("-ERR No such channel!\n", "uuid_kill")
    assert str(err) == "uuid_kill: -ERR No such channel!"


# ------------------------------------------------------------------------------- commands


def test_sendmsg_text() -> None:
    text = sendmsg_text(
        "u-1",
        {
            "call-command": "execute",
            "execute-app-name": "playback",
            "execute-app-arg": "/tmp/a b.wav",
            "event-lock": "true",
        },
    )
    assert text == (
        "sendmsg u-1\ncall-command: execute\nexecute-app-name: playback\n"
        "execute-app-arg: /tmp/a b.wav\nevent-lock: true"
    )


@pytest.mark.parametrize(
    ("uuid", "headers"),
    [
        ("u 1", {}),
        ("", {}),
        ("u-1", {"bad:name": "x"}),
        ("u-1", {"execute-app-arg": "x\n\nexit"}),
        ("u-1", {"a b": "x"}),
    ],
)
def test_sendmsg_text_rejects_injection(uuid: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        sendmsg_text(uuid, headers)


def test_bgapi_and_command_checks() -> None:
    assert bgapi_text("status", "j-1") == "bgapi status\nJob-UUID: j-1"
    for bad in ("", "   ", "a\nb", "a\rb"):
        with pytest.raises(ValueError):
            check_command(bad)


def test_subscribe_text_puts_subclasses_after_custom() -> None:
    text = subscribe_text(["CUSTOM", "mod_audio_fork::connect", "CHANNEL_PARK", "DTMF"])
    assert text == "event plain CHANNEL_PARK DTMF CUSTOM mod_audio_fork::connect"
    assert subscribe_text(["a::b"]) == "event plain CUSTOM a::b"
    with pytest.raises(ValueError):
        subscribe_text([])
    with pytest.raises(ValueError):
        subscribe_text(["TWO WORDS"])


# ------------------------------------------------------------------------------- greenswitch


def greenswitch_headers(frame: bytes) -> dict[str, str]:
    """What greenswitch 0.0.19 puts in ESLEvent.headers for one event frame (§4.2)."""
    head, _, payload = frame.partition(b"\n\n")
    event = ESLEvent(head.decode() + "\n")
    event.parse_data(payload.decode())
    return event.headers


def test_event_from_greenswitch_headers_splits_body() -> None:
    frame = plain_event(
        [("Event-Name", "BACKGROUND_JOB"), ("Job-UUID", "j-9"), ("Job-Command", "status")],
        "UP 0 years\nsecond line\n",
    )
    headers = greenswitch_headers(frame)
    assert "\n\n" in headers["Content-Length"]  # the quirk this works around
    ev = event_from_headers(headers)
    assert ev.name == "BACKGROUND_JOB"
    assert ev.headers["Job-UUID"] == "j-9"
    assert ev.headers["Content-Length"] == str(len(b"UP 0 years\nsecond line\n"))
    assert ev.body == "UP 0 years\nsecond line"  # greenswitch strips the trailing newline


def test_event_from_greenswitch_headers_custom_without_body() -> None:
    frame = plain_event(
        [
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "mod_audio_fork::connect"),
            ("Unique-ID", "u-2"),
            ("Caller-Caller-ID-Name", "Ali Veli"),
        ]
    )
    ev = event_from_headers(greenswitch_headers(frame))
    assert (ev.name, ev.subclass, ev.uuid, ev.body) == (
        "CUSTOM",
        "mod_audio_fork::connect",
        "u-2",
        None,
    )
    assert ev.headers["Caller-Caller-ID-Name"] == "Ali Veli"


def test_event_from_headers_keeps_an_explicit_body() -> None:
    ev = event_from_headers({"Event-Name": "X", "Content-Length": "3"}, "abc")
    assert ev.body == "abc" and ev.headers["Content-Length"] == "3"


def test_event_repr_hides_headers_and_body() -> None:
    ev = event_from_headers(
        {"Event-Name": "CUSTOM", "variable_MOD_AUDIO_BASIC_AUTH_PASSWORD": "hunter2"}, "secret"
    )
    assert "hunter2" not in repr(ev) and "secret" not in repr(ev)
    with pytest.raises(TypeError):
        ev.headers["x"] = "y"  # type: ignore[index]


def test_parse_plain_event_without_trailing_blank_line() -> None:
    headers, body = parse_plain_event(b"Event-Name: DTMF\nDTMF-Digit: 5")
    assert headers == {"Event-Name": "DTMF", "DTMF-Digit": "5"} and body is None


def test_channel_dump_reads_uuid_dumps_default_format() -> None:
    text = (
        "Event-Name: CHANNEL_DATA\nUnique-ID: 4f1c\nCaller-Caller-ID-Number: 1001\n"
        "variable_fsbridge_profile: sales\n"
        "variable_fsbridge_instructions: Be%20brief%3A%2050%25%0Aplease\n\n"
    )
    channel = parse_channel_dump(text)
    assert channel["Unique-ID"] == "4f1c" and channel["variable_fsbridge_profile"] == "sales"
    assert channel["variable_fsbridge_instructions"] == "Be brief: 50%\nplease"
    with pytest.raises(EslProtocolError, match="not a channel dump"):
        parse_channel_dump("Event-Name: CHANNEL_DATA\n\n")
    with pytest.raises(EslProtocolError, match="malformed ESL header line"):
        parse_channel_dump("no colon here\n\n")
