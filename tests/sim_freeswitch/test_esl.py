"""The Event Socket server against the real client (greenswitch) and raw sockets for exact bytes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest

from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.fs_api import SHOW_CHANNEL_KEYS
from fsbridge.sim.fs_wire import url_decode
from tests.sim_freeswitch.gs_client import GsClient
from tests.sim_freeswitch.raw_esl import RawEsl, parse_plain

PREP = [
    "Event-Name", "Core-UUID", "FreeSWITCH-Hostname", "FreeSWITCH-Switchname", "FreeSWITCH-IPv4",
    "FreeSWITCH-IPv6", "Event-Date-Local", "Event-Date-GMT", "Event-Date-Timestamp",
    "Event-Calling-File", "Event-Calling-Function", "Event-Calling-Line-Number", "Event-Sequence",
]  # fmt: skip
GsFactory = Callable[..., Awaitable[GsClient]]


def names_for(gs: GsClient, uuid: str) -> list[str]:
    return [e["Event-Name"] for e in gs.events if e.get("Unique-ID") == uuid]


async def test_auth_and_api(gs: GsClient) -> None:
    out = await gs.api("status")
    assert out.startswith("UP 0 years, 0 days") and "is ready" in out


async def test_wrong_password_is_refused(gs_factory: GsFactory, sim: FreeSwitchSim) -> None:
    with pytest.raises(ValueError, match="Invalid password"):
        await gs_factory(password="wrong")
    raw = await RawEsl.connect(sim.esl_port, password=None)
    raw.send("auth wrong")
    h, _ = await raw.frame()
    assert h == {"Content-Type": "command/reply", "Reply-Text": "-ERR invalid"}
    h, body = await raw.frame()
    assert h["Content-Type"] == "text/disconnect-notice" and len(body) == 67
    assert await raw.reader.read() == b""  # closed
    await raw.close()
    assert "wrong" not in repr(sim.commands)  # secrets are never recorded


async def test_commands_before_auth_get_command_not_found(sim: FreeSwitchSim) -> None:
    raw = await RawEsl.connect(sim.esl_port, password=None)
    for cmd in ("api status", "event plain ALL", "bogus"):
        _, h = await raw.command(cmd)
        assert h["Reply-Text"] == "-ERR command not found"
    _, h = await raw.command("auth ClueCon")
    assert h["Reply-Text"] == "+OK accepted"
    body, h = await raw.command("api echo hi")
    assert h["Content-Type"] == "api/response" and body == b"hi"
    await raw.close()


async def test_originate_fires_the_dialplan_sequence(gs: GsClient, sim: FreeSwitchSim) -> None:
    uuid = await sim.originate(
        profile="default", variables={"x_note": "a b:c ü&%;=?", "sip_h_X-Id": "42"}
    )
    park = await gs.wait_event(lambda e: e.get("Event-Name") == "CHANNEL_PARK")
    assert names_for(gs, uuid) == [
        "CHANNEL_STATE", "CHANNEL_CREATE", "CHANNEL_CALLSTATE", "CHANNEL_STATE", "CHANNEL_STATE",
        "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE",  # set fsbridge_profile=default
        "CHANNEL_EXECUTE", "CHANNEL_ANSWER", "CHANNEL_CALLSTATE", "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_EXECUTE", "CHANNEL_PARK",
    ]  # fmt: skip
    apps = [e.get("Application") for e in gs.named("CHANNEL_EXECUTE", uuid)]
    assert apps == ["set", "answer", "park"]
    # greenswitch url-decodes values; the parsed headers carry the originals
    assert park["variable_x_note"] == "a b:c ü&%;=?"
    assert park["variable_fsbridge_profile"] == "default"
    assert park["Unique-ID"] == uuid and park["Answer-State"] == "answered"
    assert park["Caller-Caller-ID-Number"] == "1000" and park["Caller-Destination-Number"] == "5000"
    assert park["Channel-State"] == "CS_EXECUTE" and park["Channel-Call-State"] == "ACTIVE"
    assert abs(int(park["Event-Date-Timestamp"]) / 1e6 - time.time()) < 60
    # header order on the wire: outer frame, then prep_for_delivery, then channel data
    keys = list(park)
    assert keys[:2] == ["Content-Length", "Content-Type"]
    assert keys[2 : 2 + len(PREP)] == PREP
    assert keys[2 + len(PREP) : 2 + len(PREP) + 3] == [
        "Channel-State",
        "Channel-Call-State",
        "Channel-State-Number",
    ]
    create = gs.named("CHANNEL_CREATE", uuid)[0]
    assert create["Channel-State"] == "CS_INIT" and create["Answer-State"] == "ringing"
    assert "variable_fsbridge_profile" not in create  # set later, by the dialplan
    assert "variable_x_note" not in gs.named("CHANNEL_STATE", uuid)[0]  # not a verbose event


async def test_profile_none_sets_no_variable(gs: GsClient, sim: FreeSwitchSim) -> None:
    uuid = await sim.originate(profile=None)
    park = await gs.wait_event(lambda e: e.get("Event-Name") == "CHANNEL_PARK")
    assert park["Unique-ID"] == uuid and "variable_fsbridge_profile" not in park
    assert [e.get("Application") for e in gs.named("CHANNEL_EXECUTE", uuid)] == ["answer", "park"]


async def test_bgapi_reply_and_background_job(gs: GsClient, sim: FreeSwitchSim) -> None:
    r = await gs.send("bgapi status")
    job = r.headers["Job-UUID"]
    assert r.data == f"+OK Job-UUID: {job}"
    ev = await gs.wait_event(
        lambda e: e.get("Event-Name") == "BACKGROUND_JOB" and e.get("Job-UUID") == job
    )
    assert ev["Job-Command"] == "status" and "Job-Command-Arg" not in ev
    # greenswitch leaves the body inside its Content-Length header ("<len>\n\n<body>")
    assert ev["Content-Length"].split("\n\n", 1)[1].startswith("UP ")
    r = await gs.send("bgapi uuid_exists nosuch\nJob-UUID: my-job-1")
    assert r.headers["Job-UUID"] == "my-job-1" and r.data == "+OK Job-UUID: my-job-1"
    ev = await gs.wait_event(lambda e: e.get("Job-UUID") == "my-job-1")
    assert ev["Job-Command-Arg"] == "nosuch" and ev["Content-Length"].endswith("\n\nfalse")
    assert [c.kind for c in sim.commands if c.text.startswith("bgapi")] == ["bgapi", "bgapi"]


async def test_exact_error_texts(gs: GsClient, sim: FreeSwitchSim) -> None:
    assert await gs.api("foo bar") == "-ERR foo Command not found!\n"
    assert await gs.api("uuid_break nosuch") == "-ERR No such channel!\n"
    assert await gs.api("uuid_kill nosuch") == "-ERR No such channel!\n"
    assert await gs.api("uuid_getvar nosuch x") == "-ERR No such channel!\n"
    assert await gs.api("uuid_setvar nosuch x 1") == "-ERR No such channel!\n"
    assert await gs.api("uuid_transfer nosuch 9000") == "-ERR No such channel!\n"
    assert await gs.api("uuid_broadcast nosuch /x.wav aleg") == "-ERR invalid uuid\n"
    assert await gs.api("uuid_broadcast") == "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
    assert await gs.api("uuid_break") == "-USAGE: <uuid> [all]\n"
    assert await gs.api("uuid_exists nosuch") == "false"
    assert await gs.api("uuid_answer nosuch") == "-ERROR\n"
    r = await gs.send(
        "sendmsg nosuch\ncall-command: execute\nexecute-app-name: playback\nexecute-app-arg: /x.wav"
    )
    assert r.data == "-ERR invalid session id [nosuch]"
    r = await gs.send("blah blah")
    assert r.data == "-ERR command not found"
    r = await gs.send("linger")
    assert r.data == "-ERR not controlling a session"


async def test_show_channels_as_json(gs: GsClient, sim: FreeSwitchSim) -> None:
    assert await gs.api("show channels as json") == '{"row_count": 0}\n'
    uuid = await sim.originate(profile="default", caller_id_name="Bob Smith")
    out = await gs.api("show channels as json")
    assert not out.endswith("\n")
    doc = json.loads(out)
    assert doc["row_count"] == 1
    row = doc["rows"][0]
    assert list(row) == SHOW_CHANNEL_KEYS
    assert all(isinstance(v, str) for v in row.values())
    assert row["uuid"] == uuid and row["cid_name"] == "Bob Smith" and row["application"] == "park"
    assert row["state"] == "CS_EXECUTE" and row["callstate"] == "ACTIVE"
    await sim.hangup(uuid)
    assert await gs.api("show channels as json") == '{"row_count": 0}\n'
    assert (await gs.api("show channels")).endswith("\n\n0 total.\n")


async def test_uuid_dump_serializes_the_channel_data(gs: GsClient, sim: FreeSwitchSim) -> None:
    uuid = await sim.originate(
        profile="default", variables={"fsbridge_instructions": "Be brief: 50% shorter\nplease"}
    )
    out = await gs.api(f"uuid_dump {uuid}")
    assert out.endswith("\n\n")
    lines = dict(line.split(": ", 1) for line in out.strip("\n").split("\n"))
    assert lines["Event-Name"] == "CHANNEL_DATA" and lines["Unique-ID"] == uuid
    assert lines["variable_fsbridge_profile"] == "default"
    assert lines["variable_fsbridge_instructions"] == "Be%20brief%3A%2050%25%20shorter%0Aplease"
    plain = await gs.api(f"uuid_dump {uuid} plain")
    assert "variable_fsbridge_instructions: Be brief: 50% shorter\nplease\n" in plain
    assert await gs.api("uuid_dump nosuch") == "-ERR No Such Channel!\n"
    assert await gs.api("uuid_dump") == "-USAGE: <uuid> [format]\n"


async def test_variable_apis(gs: GsClient, sim: FreeSwitchSim) -> None:
    uuid = await sim.originate(profile="default")
    assert await gs.api(f"uuid_exists {uuid}") == "true"
    assert await gs.api(f"uuid_getvar {uuid} nothing_here") == "_undef_"
    assert await gs.api(f"uuid_setvar {uuid} greeting 'hello world'") == "+OK\n"
    assert await gs.api(f"uuid_getvar {uuid} greeting") == "hello world"
    assert await gs.api(f"uuid_setvar_multi {uuid} a=1;b=two") == "+OK\n"
    assert sim.channel(uuid).variables["a"] == "1" and sim.channel(uuid).variables["b"] == "two"
    assert await gs.api(f"uuid_setvar {uuid} greeting") == "+OK\n"  # no value: unset
    assert await gs.api(f"uuid_getvar {uuid} greeting") == "_undef_"
    assert await gs.api(f"uuid_getvar {uuid} fsbridge_profile") == "default"
    # uuid_send_dtmf prints nothing on success: ESL turns that into "-ERR no reply"
    assert await gs.api(f"uuid_send_dtmf {uuid} 12#") == "-ERR no reply\n"
    assert [d for _, d in sim.channel(uuid).truth.dtmf_sent] == ["1", "2", "#"]
    assert await gs.api("uuid_send_dtmf nosuch 1") == "-ERR Cannot locate session!\n"


async def test_hash_api(gs: GsClient) -> None:
    assert await gs.api("hash insert/realm/key/some value/with slash") == "+OK\n"
    assert await gs.api("hash select/realm/key") == "some value/with slash"
    assert await gs.api("hash select/realm/other") == "-ERR no reply\n"
    assert await gs.api("hash delete/realm/key") == "+OK\n"
    assert await gs.api("hash delete/realm/key") == "-ERR Not found\n"
    assert (await gs.api("hash bogus")).startswith("-ERR Usage: hash ")


async def test_hangup_sequence(gs: GsClient, sim: FreeSwitchSim) -> None:
    uuid = await sim.originate(profile="default")
    await gs.wait_event(lambda e: e.get("Event-Name") == "CHANNEL_PARK")
    n = len(names_for(gs, uuid))
    await sim.hangup(uuid, cause="USER_BUSY")
    await gs.wait_event(
        lambda e: e.get("Event-Name") == "CHANNEL_STATE" and e.get("Channel-State") == "CS_DESTROY"
    )
    assert names_for(gs, uuid)[n:] == [
        "CHANNEL_HANGUP", "CHANNEL_UNPARK", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_STATE",
        "CHANNEL_CALLSTATE", "CHANNEL_STATE", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY",
        "CHANNEL_STATE",
    ]  # fmt: skip
    hangup = gs.named("CHANNEL_HANGUP", uuid)[0]
    assert hangup["Hangup-Cause"] == "USER_BUSY" and hangup["Answer-State"] == "hangup"
    assert hangup["Channel-State-Number"] == "10"
    complete = gs.named("CHANNEL_HANGUP_COMPLETE", uuid)[0]
    assert (
        complete["Hangup-Cause"] == "USER_BUSY" and complete["variable_hangup_cause"] == "USER_BUSY"
    )
    assert "variable_billsec" in complete
    ch = sim.channel(uuid)
    assert ch.hung_up.is_set() and ch.state == "CS_DESTROY" and not ch.parked
    assert await gs.api(f"uuid_exists {uuid}") == "false"


async def test_uuid_kill_and_sendmsg_hangup(gs: GsClient, sim: FreeSwitchSim) -> None:
    a = await sim.originate(profile="default")
    b = await sim.originate(profile="default")
    assert await gs.api(f"uuid_kill {a} CALL_REJECTED") == "+OK\n"
    r = await gs.send(f"sendmsg {b}\ncall-command: hangup\nhangup-cause: NO_ANSWER")
    assert r.data == "+OK"
    await asyncio.wait_for(sim.channel(a).hung_up.wait(), 5)
    await asyncio.wait_for(sim.channel(b).hung_up.wait(), 5)
    assert sim.channel(a).hangup_cause == "CALL_REJECTED"
    assert sim.channel(b).hangup_cause == "NO_ANSWER"


async def test_api_blocks_event_delivery_on_that_connection(tmp_path: object) -> None:
    from fsbridge.sim.clock import SimClock

    async with FreeSwitchSim(clock=SimClock(10), api_delays={"status": 3.0}) as sim:
        raw = await RawEsl.connect(sim.esl_port)
        await raw.command("event plain ALL")
        other = await RawEsl.connect(sim.esl_port)
        await other.command("event plain CHANNEL_PARK")
        t0 = time.monotonic()
        raw.send("api status")
        await sim.wait_for(lambda: any(c.text == "api status" for c in sim.commands))
        uuid = await sim.originate(profile="default")  # events fire while the api runs
        h, _ = await other.frame()  # the other connection is not blocked
        assert h["Content-Type"] == "text/event-plain"
        assert time.monotonic() - t0 < 0.25
        h, body = await raw.frame()
        assert h["Content-Type"] == "api/response" and body.startswith(b"UP ")
        assert time.monotonic() - t0 >= 0.28  # 3 sim seconds at speed 10
        h, body = await raw.frame()
        assert h["Content-Type"] == "text/event-plain"
        assert dict(parse_plain(body))["Unique-ID"] == uuid
        await raw.close()
        await other.close()


async def test_several_clients_see_the_same_events(
    gs_factory: GsFactory, sim: FreeSwitchSim
) -> None:
    a, b = await gs_factory(), await gs_factory(subscribe="event plain CHANNEL_PARK")
    uuid = await sim.originate(profile="default")
    for client in (a, b):
        ev = await client.wait_event(lambda e: e.get("Event-Name") == "CHANNEL_PARK")
        assert ev["Unique-ID"] == uuid
    assert {e["Event-Name"] for e in b.events} == {"CHANNEL_PARK"}
    assert len({e["Event-Name"] for e in a.events}) > 3


async def test_filter_unique_id_hides_other_calls_and_jobs(
    gs: GsClient, sim: FreeSwitchSim
) -> None:
    a = await sim.originate(profile="default")
    r = await gs.send(f"filter Unique-ID {a}")
    assert r.data == f"+OK filter added. [Unique-ID]=[{a}]"
    start = len(gs.events)
    b = await sim.originate(profile="default")
    await gs.send("bgapi status")
    await gs.api(f"uuid_kill {b}")
    await gs.api(f"uuid_kill {a}")
    await gs.wait_event(lambda e: e.get("Event-Name") == "CHANNEL_DESTROY", start=start)
    later = gs.events[start:]
    assert later and all(e.get("Unique-ID") == a for e in later)
    r = await gs.send(f"filter delete Unique-ID {a}")
    assert r.data == f"+OK filter deleted. [Unique-ID][{a}]"


async def test_subscription_command_replies(sim: FreeSwitchSim) -> None:
    raw = await RawEsl.connect(sim.esl_port)
    expect = [
        ("event plain bogus", "-ERR no keywords supplied"),
        ("noevents", "-ERR not listening for events"),
        ("events PLAIN all", "+OK event listener enabled plain"),
        ("nixevent HEARTBEAT", "+OK events nixed"),
        ("nixevent bogus", "-ERR no keywords supplied"),
        ("filter Unique-ID", "-ERR invalid syntax"),
        ("filter add Event-Name CHANNEL_PARK", "+OK filter added. [Event-Name]=[CHANNEL_PARK]"),
        ("filter delete all", "+OK filter deleted. [all][]"),
        ("event plain CUSTOM mod_audio_fork::connect", "+OK event listener enabled plain"),
        ("noevents", "+OK no longer listening for events"),
        ("divert_events on", "-ERR not controlling a session."),
    ]
    for cmd, reply in expect:
        _, h = await raw.command(cmd)
        assert h["Reply-Text"] == reply, cmd
    await raw.close()


async def test_json_event_format(sim: FreeSwitchSim) -> None:
    raw = await RawEsl.connect(sim.esl_port)
    _, h = await raw.command("event json CHANNEL_PARK")
    assert h["Reply-Text"] == "+OK event listener enabled json"
    uuid = await sim.originate(profile="default", variables={"x": "a b:c"})
    h, body = await raw.frame()
    assert h["Content-Type"] == "text/event-json"
    ev = json.loads(body)
    assert ev["Event-Name"] == "CHANNEL_PARK" and ev["Unique-ID"] == uuid
    assert ev["variable_x"] == "a b:c"  # JSON values are not url-encoded
    await raw.close()


async def test_plain_values_are_url_encoded_on_the_wire(sim: FreeSwitchSim) -> None:
    raw = await RawEsl.connect(sim.esl_port)
    await raw.command("event plain CHANNEL_PARK")
    await sim.originate(profile="default", variables={"x": "a b:c ü"})
    _, body = await raw.frame()
    pairs = dict(parse_plain(body))
    assert pairs["variable_x"] == "a%20b%3Ac%20%C3%BC"
    assert url_decode(pairs["variable_x"]) == "a b:c ü"
    assert pairs["FreeSWITCH-IPv6"] == "%3A%3A1"
    await raw.close()


async def test_exit_says_bye_and_closes(sim: FreeSwitchSim) -> None:
    raw = await RawEsl.connect(sim.esl_port)
    raw.send("exit")
    h, _ = await raw.frame()
    assert h["Reply-Text"] == "+OK bye"
    h, body = await raw.frame()
    assert h["Content-Type"] == "text/disconnect-notice"
    assert body == b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    assert await raw.reader.read() == b""
    await raw.close()


async def test_api_event_and_dtmf_events(gs: GsClient, sim: FreeSwitchSim) -> None:
    await gs.api("status")
    ev = await gs.wait_event(lambda e: e.get("Event-Name") == "API")
    assert ev["API-Command"] == "status" and "API-Command-Argument" not in ev
    uuid = await sim.originate(profile="default")
    await sim.send_dtmf(uuid, "1#")
    await gs.wait_event(lambda e: e.get("Event-Name") == "DTMF" and e.get("DTMF-Digit") == "#")
    digits = [
        (e["DTMF-Digit"], e["DTMF-Duration"], e["DTMF-Source"]) for e in gs.named("DTMF", uuid)
    ]
    assert digits == [("1", "2000", "RTP"), ("#", "2000", "RTP")]


async def test_uuid_transfer_leaves_park(gs: GsClient, sim: FreeSwitchSim) -> None:
    uuid = await sim.originate(profile="default")
    await gs.wait_event(lambda e: e.get("Event-Name") == "CHANNEL_PARK")
    n = len(names_for(gs, uuid))
    assert await gs.api(f"uuid_transfer {uuid} 9000 XML agents") == "+OK\n"
    await gs.wait_event(
        lambda e: e.get("Event-Name") == "CHANNEL_STATE" and e.get("Caller-Destination-Number") == "9000"
        and e.get("Channel-State") == "CS_EXECUTE"
    )  # fmt: skip
    assert names_for(gs, uuid)[n:] == [
        "CHANNEL_UNPARK",
        "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_STATE",
        "CHANNEL_STATE",
    ]
    ch = sim.channel(uuid)
    assert not ch.parked and ch.transferred_to == "9000" and ch.context == "agents"
    assert ch.truth.transfer is not None and ch.truth.transfer["dest"] == "9000"
    last = gs.named("CHANNEL_STATE", uuid)[-1]
    assert last["Caller-Profile-Index"] == "2" and last["Caller-Channel-Transfer-Time"] != "0"
    assert (
        await gs.api(f"uuid_transfer {uuid}")
        == "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
    )


async def test_heartbeat_setting() -> None:
    from fsbridge.sim.clock import SimClock

    async with FreeSwitchSim(clock=SimClock(50), heartbeat_s=1.0) as sim:
        raw = await RawEsl.connect(sim.esl_port)
        await raw.command("event plain HEARTBEAT")
        _, body = await raw.frame()
        pairs = dict(parse_plain(body))
        assert pairs["Event-Name"] == "HEARTBEAT" and pairs["Event-Info"] == "System%20Ready"
        await raw.close()


def test_simulator_is_independent_of_the_service() -> None:
    import ast
    from pathlib import Path

    import fsbridge.sim

    forbidden = ("fsbridge.esl", "fsbridge.fork", "fsbridge.realtime", "fsbridge.audio.resample",
                 "fsbridge.call", "fsbridge.service")  # fmt: skip
    sim_dir = Path(fsbridge.sim.__file__).parent
    for path in [sim_dir / "freeswitch.py", *sim_dir.glob("fs_*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            assert not [n for n in names if n.startswith(forbidden)], path.name


async def test_garbage_arguments_get_replies_not_crashes(sim: FreeSwitchSim) -> None:
    from fsbridge.sim.fs_api import API_NAMES

    uuid = await sim.originate(profile="default")
    garbage = ["", " ", "'", "\\", "'unterminated", "^^", "^^|", "^^|||", uuid, f"{uuid} ", f"{uuid} '",
               f"{uuid} start", f"{uuid} start ws:// mono 0k", f"{uuid} start ws://x:99999999/ stereo 8k b {{",
               f"{uuid} =;=;;", f"{uuid} x", "a/b", "///", "insert//", "ü \x00 \t", "-bleg", f"{uuid} -both"]  # fmt: skip
    for name in sorted(API_NAMES):
        for arg in garbage:
            out = await sim.api(f"{name} {arg}")
            assert isinstance(out, str) and out, (name, arg)
            assert "simulator error" not in out, (name, arg, out)
    raw = await RawEsl.connect(sim.esl_port)
    for junk in (
        "sendmsg",
        "sendmsg \ncall-command: execute",
        "bgapi",
        "filter",
        "myevents",
        "event",
    ):
        _, h = await raw.command(junk)
        assert h["Content-Type"] == "command/reply"
    await raw.close()
