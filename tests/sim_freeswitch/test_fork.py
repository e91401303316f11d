"""mod_audio_fork / mod_audio_stream client side against an aiohttp WebSocket server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.fs_events import SimEvent
from fsbridge.sim.fs_fork_api import FORK_SYNTAX, parse_fork_url
from tests.sim_freeswitch.conftest import ForkPeer, poll, ramp
from tests.sim_freeswitch.gs_client import GsClient

PeerFactory = Callable[..., Awaitable[ForkPeer]]
AUTH_VARS = {
    "MOD_AUDIO_BASIC_AUTH_USERNAME": "fork-user",
    "MOD_AUDIO_BASIC_AUTH_PASSWORD": "s3cret",
}
BASIC = "Basic " + base64.b64encode(b"fork-user:s3cret").decode()


def custom(sim: FreeSwitchSim, subclass: str) -> list[SimEvent]:
    return [e for e in sim.events if e.subclass == subclass]


async def test_fork_handshake_metadata_frames_and_close(
    gs: GsClient, sim: FreeSwitchSim, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory(auth=BASIC)
    speech = ramp(4000, 1)
    uuid = await sim.originate(
        profile="default", caller_audio=speech, caller_delay_s=0.2, variables=AUTH_VARS
    )
    ch = sim.channel(uuid)
    meta = '{"callId": "abc", "note": "two words"}'
    reply = await gs.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k fsbridge {meta}")
    assert reply == "+OK Success\n"
    s = await peer.session()
    assert s.protocol == "audio.drachtio.org"
    assert s.headers["Sec-WebSocket-Protocol"] == "audio.drachtio.org"
    assert s.headers["Authorization"] == BASIC
    await poll(lambda: len(s.binary()) > 40)
    assert s.messages[0][1:] == ("TEXT", meta)  # metadata first, verbatim (rest of the line)
    sizes = [len(d) for _, d in s.binary()]
    assert all(n % 320 == 0 for n in sizes) and sizes.count(320) >= len(sizes) - 2
    # the script starts caller_delay_s after connect, then silence: the line never stops
    await poll(lambda: len(s.audio()) > 12000)
    audio = s.audio()
    i = int(np.flatnonzero(audio)[0])
    assert np.array_equal(audio[i : i + 4000], speech) and not audio[i + 4000 :].any()
    fork = ch.truth.fork
    assert (
        fork is not None
        and fork.connected_t is not None
        and fork.subprotocol == "audio.drachtio.org"
    )
    t_first, n = ch.truth.utterances[0]
    scheduled = ch.tick_time(ch.truth.utterance_log[0].start_tick)  # on the drift-free tick grid
    assert 0.2 - 1e-6 <= scheduled - fork.connected_t <= 0.2 + 0.02
    assert n == 4000 and t_first is not None and scheduled - 1e-6 <= t_first < scheduled + 0.5
    connect = await gs.wait_event(lambda e: e.get("Event-Subclass") == "mod_audio_fork::connect")
    assert connect["Event-Name"] == "CUSTOM" and connect["Unique-ID"] == uuid
    assert (
        connect["variable_MOD_AUDIO_BASIC_AUTH_USERNAME"] == "fork-user"
    )  # CUSTOM carries all vars
    await sim.hangup(uuid)
    await asyncio.wait_for(s.closed.wait(), 5)
    assert s.close_code == 1000 and fork.close_code == 1000 and fork.closed_by == "us"
    assert custom(sim, "mod_audio_fork::disconnect") == []  # no event for a close we made
    assert ch.truth.caller_frames and all(b > 0 for _, b in ch.truth.caller_frames)


async def test_16k_fork_sends_640_byte_frames(
    sim: FreeSwitchSim, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory()
    uuid = await sim.originate(profile="default")
    assert (
        await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 16k") == "+OK Success\n"
    )
    s = await peer.session()
    await poll(lambda: len(s.binary()) > 10)
    sizes = [len(d) for _, d in s.binary()]
    assert all(n % 640 == 0 for n in sizes) and sizes.count(640) >= len(sizes) - 2
    assert s.texts() == []  # no metadata given: no text frame


async def test_stereo_fork_carries_caller_left_and_playback_right(
    sim: FreeSwitchSim, peer_factory: PeerFactory, wav_factory: Callable[..., str]
) -> None:
    peer = await peer_factory()
    uuid = await sim.originate(profile="default", caller_audio=ramp(8000, 1))
    await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} stereo 8k")
    s = await peer.session()
    await sim.api(f"uuid_broadcast {uuid} {wav_factory('p.wav', ramp(8000, 15001))} aleg")
    ch = sim.channel(uuid)
    await poll(lambda: len(ch.truth.heard) > 20 and len(s.binary()) > 40)
    assert all(len(d) % 640 == 0 for _, d in s.binary())
    inter = s.audio()
    left, right = inter[0::2], inter[1::2]
    assert left.any() and right.any()
    assert set(np.unique(right[right != 0])) <= set(range(15001, 23001))


async def test_connect_failed_on_401(sim: FreeSwitchSim, peer_factory: PeerFactory) -> None:
    peer = await peer_factory(auth="Basic nope")
    uuid = await sim.originate(profile="default", variables=AUTH_VARS)
    assert (
        await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k") == "+OK Success\n"
    )
    ev = await poll(lambda: custom(sim, "mod_audio_fork::connect_failed"))
    assert ev[0].body == '{"reason":"HS: ws upgrade unauthorized"}'
    fork = sim.channel(uuid).truth.fork
    assert fork is not None and fork.failed_reason and fork.connected_t is None
    assert custom(sim, "mod_audio_fork::connect") == []
    assert not peer.sessions


async def test_connect_failed_when_unreachable(sim: FreeSwitchSim) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uuid = await sim.originate(profile="default")
    await sim.api(f"uuid_audio_fork {uuid} start ws://127.0.0.1:{port}/fork/x mono 8k")
    ev = await poll(lambda: custom(sim, "mod_audio_fork::connect_failed"))
    assert json.loads(ev[0].body or "")["reason"].startswith("connect failed")
    assert sim.channel(uuid).truth.errors


def test_drachtio_url_parsing_quirk() -> None:
    assert parse_fork_url("ws://127.0.0.1/fork/x") == ("127.0.0.", 1, "/fork/x", False)
    assert parse_fork_url("ws://server1/x") == ("server", 1, "/x", False)
    assert parse_fork_url("ws://127.0.0.1:8080/fork?a=1") == ("127.0.0.1", 8080, "/fork?a=1", False)
    assert parse_fork_url("wss://example.com/x") == ("example.com", 443, "/x", True)
    assert parse_fork_url("ws://127.0.0.1/x", quirk=False) == ("127.0.0.1", 80, "/x", False)
    assert parse_fork_url("ftp://x/y") is None


async def test_buffer_overrun_fires_once_and_drops_the_buffer(peer_factory: PeerFactory) -> None:
    async with FreeSwitchSim(clock=SimClock(50), fork_buffer_secs=1) as sim:
        peer = ForkPeer(sim.clock, read=False, rcvbuf=4096)
        await peer.start()
        try:
            uuid = await sim.originate(profile="default", caller_audio=ramp(8000, 1))
            await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k")
            ch = sim.channel(uuid)
            fork = await poll(lambda: ch.truth.fork)
            await poll(lambda: fork.overruns >= 3, timeout=20)
            assert len(custom(sim, "mod_audio_fork::buffer_overrun")) == 1  # once per fork
            ev = custom(sim, "mod_audio_fork::buffer_overrun")[0]
            assert ev.get("Unique-ID") == uuid and ev.body is None
            sent = fork.bytes_sent
            peer.sessions[0].reading.set()  # the server reads again: streaming continues
            await poll(lambda: fork.bytes_sent > sent + 3200)
            assert len(custom(sim, "mod_audio_fork::buffer_overrun")) == 1
            # the buffer was dropped each time: nothing larger than it (1 s = 16000 B) ever went out
            assert max(n for _, n in ch.truth.caller_frames) <= 16000
            await sim.hangup(uuid)
        finally:
            await peer.stop()


async def test_server_messages_become_events(
    sim: FreeSwitchSim, peer_factory: PeerFactory, wav_factory: Callable[..., str]
) -> None:
    peer = await peer_factory()
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k")
    s = await peer.session()
    pcm = ramp(800, 1).astype("<i2").tobytes()
    await s.ws.send_str(
        json.dumps(
            {
                "type": "playAudio",
                "data": {
                    "audioContentType": "raw",
                    "sampleRate": 8000,
                    "audioContent": base64.b64encode(pcm).decode(),
                    "id": 7,
                },
            }
        )
    )
    ev = (await poll(lambda: custom(sim, "mod_audio_fork::play_audio")))[0]
    body = json.loads(ev.body or "")
    assert "audioContent" not in body and body["id"] == 7 and body["file"].endswith(".tmp.r8")
    assert (
        os.path.basename(body["file"]).startswith(uuid) and Path(body["file"]).read_bytes() == pcm
    )
    # killAudio stops the current file only: the queued one still plays
    a, b = wav_factory("a.wav", ramp(16000, 1)), wav_factory("b.wav", ramp(800, 1))
    await sim.api(f"uuid_broadcast {uuid} {a} aleg")
    await sim.api(f"uuid_broadcast {uuid} {b} aleg")
    await poll(lambda: len(ch.truth.heard) > 5)
    await s.ws.send_str('{"type":"killAudio"}')
    await poll(lambda: len(ch.truth.playbacks) == 2 and all(p.status for p in ch.truth.playbacks))
    assert [p.status for p in ch.truth.playbacks] == ["break", "done"]
    assert custom(sim, "mod_audio_fork::kill_audio")[0].body is None
    await s.ws.send_str('{"type":"transcription","data":{"text":"hi there","final":true}}')
    await s.ws.send_str('{"type":"disconnect","data":{"why":"done"}}')
    await s.ws.send_str('{"hello":"world"}')
    await s.ws.send_str('{"type":"mystery"}')
    await s.ws.send_str("not json")
    await s.ws.send_bytes(b"\x00\x01")  # discarded
    await poll(lambda: custom(sim, "mod_audio_fork::json"))
    assert (
        custom(sim, "mod_audio_fork::transcription")[0].body == '{"text":"hi there","final":true}'
    )
    assert custom(sim, "mod_audio_fork::disconnect")[0].body == '{"why":"done"}'
    assert custom(sim, "mod_audio_fork::json")[0].body == '{"hello":"world"}'
    assert any("mystery" in e for e in ch.truth.errors) and any(
        "unparseable" in e for e in ch.truth.errors
    )
    fork = ch.truth.fork
    assert fork is not None and fork.closed_t is None  # a "disconnect" message does not close
    await s.ws.close(code=4000)
    await poll(lambda: fork.closed_by == "server")
    assert fork.close_code == 4000 and len(custom(sim, "mod_audio_fork::disconnect")) == 2
    assert custom(sim, "mod_audio_fork::disconnect")[1].body is None
    await sim.hangup(uuid)
    assert not os.path.exists(body["file"])  # temp files go with the fork


async def test_stop_text_send_text_pause_resume_graceful(
    sim: FreeSwitchSim, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory()
    uuid = await sim.originate(profile="default", caller_audio=ramp(80000, 1))
    await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k")
    s = await peer.session()
    await poll(lambda: len(s.binary()) > 5)
    # two texts queued before the socket is writable go out glued (drachtio's appended string)
    assert await sim.api(f'uuid_audio_fork {uuid} send_text {{"a":1}}') == "+OK Success\n"
    assert await sim.api(f'uuid_audio_fork {uuid} send_text {{"b":2}}') == "+OK Success\n"
    await poll(lambda: s.texts())
    assert s.texts() == ['{"a":1}{"b":2}']
    await sim.api(f"uuid_audio_fork {uuid} pause")
    await asyncio.sleep(0.01)
    n = len(s.binary())
    await sim.wait_for(lambda: sim.channel(uuid).tick > 0)
    t = sim.channel(uuid).tick
    await sim.wait_for(lambda: sim.channel(uuid).tick > t + 10)
    assert len(s.binary()) <= n + 1  # nothing while paused
    await sim.api(f"uuid_audio_fork {uuid} resume")
    await poll(lambda: len(s.binary()) > n + 5)
    assert await sim.api(f"uuid_audio_fork {uuid} graceful-shutdown") == "+OK Success\n"
    await poll(lambda: any(len(d) == 0 for _, d in s.binary()))
    zero = next(i for i, (_, d) in enumerate(s.binary()) if len(d) == 0)
    await sim.wait_for(lambda: sim.channel(uuid).tick > t + 30)
    assert len(s.binary()) == zero + 1  # no audio after the zero-length frame
    assert await sim.api(f'uuid_audio_fork {uuid} stop {{"bye":true}}') == "+OK Success\n"
    await asyncio.wait_for(s.closed.wait(), 5)
    assert s.close_code == 1000 and s.texts()[-1] == '{"a":1}{"b":2}'  # no text after graceful


async def test_stop_with_final_text(sim: FreeSwitchSim, peer_factory: PeerFactory) -> None:
    peer = await peer_factory()
    uuid = await sim.originate(profile="default")
    await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k")
    s = await peer.session()
    await poll(lambda: len(s.binary()) > 3)
    assert await sim.api(f'uuid_audio_fork {uuid} stop {{"bye":true}}') == "+OK Success\n"
    await asyncio.wait_for(s.closed.wait(), 5)
    assert s.messages[-1][1:] == ("TEXT", '{"bye":true}') and s.close_code == 1000
    assert await sim.api(f"uuid_audio_fork {uuid} stop") == "-ERR Operation Failed\n"  # no bug left


async def test_fork_api_replies_and_argument_rules(
    gs: GsClient, sim: FreeSwitchSim, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory()
    uuid = await sim.originate(profile="default")
    url = peer.url(uuid)
    assert await gs.api(f"uuid_audio_fork {uuid} start {url}") == f"-USAGE: {FORK_SYNTAX}\n"
    assert await gs.api("uuid_audio_fork") == f"-USAGE: {FORK_SYNTAX}\n"
    assert await gs.api(f"uuid_audio_fork nosuch start {url} mono 8k") == "-ERR Operation Failed\n"
    assert (
        await gs.api(f"uuid_audio_fork {uuid} start {url} loud 8k") == "-ERR no reply\n"
    )  # prints nothing
    assert await gs.api(f"uuid_audio_fork {uuid} start {url} mono") == "-ERR Operation Failed\n"
    assert await gs.api(f"uuid_audio_fork {uuid} stop") == "-ERR Operation Failed\n"
    assert await gs.api(f"uuid_audio_fork {uuid} start {url} mono 8k") == "+OK Success\n"
    assert (
        await gs.api(f"uuid_audio_fork {uuid} start {url} mono 8k") == "-ERR Operation Failed\n"
    )  # attached
    meta = '{"a": "b c", "d": [1, 2]}'
    assert (
        await gs.api(f"uuid_audio_fork {uuid} start {url} mono 8k second {meta}") == "+OK Success\n"
    )
    ch = sim.channel(uuid)
    assert sorted(ch.forks) == ["audio_fork", "second"]
    await poll(lambda: len(peer.sessions) == 2 and len(peer.sessions[1].texts()) == 1)
    assert peer.sessions[1].texts() == [meta]
    assert await gs.api(f"uuid_audio_fork {uuid} stop second") == "+OK Success\n"
    assert sorted(ch.forks) == ["audio_fork"]


async def test_say_adds_caller_audio_from_the_next_frame(
    sim: FreeSwitchSim, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory()
    uuid = await sim.originate(profile="default")
    await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k")
    s = await peer.session()
    await poll(lambda: len(s.binary()) > 3)
    ch = sim.channel(uuid)
    t_say = sim.now()
    await sim.say(uuid, ramp(1600, 7), rate=8000)
    await poll(lambda: ch.truth.utterances and ch.truth.utterances[0][0])
    t_first, n = ch.truth.utterances[0]
    assert n == 1600 and 0 <= t_first - t_say < 0.1
    await poll(lambda: len(s.audio()) and np.flatnonzero(s.audio()).size >= 1600)
    audio = s.audio()
    i = int(np.flatnonzero(audio)[0])
    assert np.array_equal(audio[i : i + 1600], ramp(1600, 7))


async def test_mod_audio_stream_variant(sim: FreeSwitchSim, peer_factory: PeerFactory) -> None:
    peer = await peer_factory(protocols=())
    uuid = await sim.originate(
        profile="default",
        variables={"STREAM_EXTRA_HEADERS": '{"Authorization": "Bearer tok", "X-Call": "1"}'},
    )
    meta = '{"stream": "meta data"}'
    assert (
        await sim.api(f"uuid_audio_stream {uuid} start {peer.url(uuid)} mono 8k {meta}")
        == "+OK Success\n"
    )
    s = await peer.session()
    assert s.headers["Authorization"] == "Bearer tok" and s.headers["X-Call"] == "1"
    assert "Sec-WebSocket-Protocol" not in s.headers and s.protocol is None
    await poll(lambda: s.texts())
    kinds = [k for _, k, _ in s.messages]
    assert kinds[:3] == ["BINARY", "BINARY", "TEXT"]  # metadata after the first audio frames
    assert s.texts() == [meta] and all(len(d) == 320 for _, d in s.binary())
    assert custom(sim, "mod_audio_stream::connect")[0].body == '{"status":"connected"}'
    pcm = ramp(160, 1).astype("<i2").tobytes()
    await s.ws.send_str(
        json.dumps(
            {
                "type": "streamAudio",
                "data": {
                    "audioDataType": "raw",
                    "sampleRate": 8000,
                    "audioData": base64.b64encode(pcm).decode(),
                },
            }
        )
    )
    await s.ws.send_str("free text")
    await poll(lambda: custom(sim, "mod_audio_stream::json"))
    play = json.loads(custom(sim, "mod_audio_stream::play")[0].body or "")
    assert "audioData" not in play and Path(play["file"]).read_bytes() == pcm
    assert custom(sim, "mod_audio_stream::json")[0].body == "free text"
    assert await sim.api(f"uuid_audio_stream {uuid} graceful-shutdown") == "-ERR Operation Failed\n"
    await s.ws.close(code=1000, message=b"bye")
    ev = await poll(lambda: custom(sim, "mod_audio_stream::disconnect"))
    assert json.loads(ev[0].body or "") == {
        "status": "disconnected",
        "message": {"code": 1000, "reason": "bye"},
    }


async def test_mod_audio_stream_connect_error(sim: FreeSwitchSim) -> None:
    uuid = await sim.originate(profile="default")
    assert (
        await sim.api(f"uuid_audio_stream {uuid} start http://x/y mono 8k")
        == "-ERR Operation Failed\n"
    )
    assert (
        await sim.api(f"uuid_audio_stream {uuid} start ws://127.0.0.1:1/y mono 8k")
        == "+OK Success\n"
    )
    ev = await poll(lambda: custom(sim, "mod_audio_stream::error"))
    body = json.loads(ev[0].body or "")
    assert body["status"] == "error" and body["message"]["code"] == 6
    assert "audio_stream" not in sim.channel(uuid).forks  # on error the bug is closed


@pytest.mark.parametrize("backlog", [True, False])
async def test_connect_backlog_setting(backlog: bool) -> None:
    async with FreeSwitchSim(clock=SimClock(10), fork_connect_backlog=backlog) as sim:
        peer = ForkPeer(sim.clock, accept_delay=0.05)  # ~25 ticks read while connecting
        await peer.start()
        try:
            uuid = await sim.originate(profile="default")
            ch = sim.channel(uuid)
            await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k")
            await sim.wait_for(lambda: ch.truth.caller_frames)
            first = ch.truth.caller_frames[0][1]
            assert first >= 320 * 10 if backlog else first == 320
        finally:
            await peer.stop()
