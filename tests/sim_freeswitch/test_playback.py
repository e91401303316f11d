"""Playback semantics: queueing, lead-in, nesting, breaks (and the lost-break windows), truth."""

from __future__ import annotations

import struct
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim, SimChannel
from tests.sim_freeswitch.conftest import load, ramp
from tests.sim_freeswitch.gs_client import GsClient

FRAME = 0.02
WavFactory = Callable[..., str]
GsFactory = Callable[..., Awaitable[GsClient]]


@pytest.fixture
def speed() -> float:
    return 20.0


def ticks(t: float, ch: SimChannel) -> int:
    return round((t - ch.t_base) / FRAME)


def source_runs(ch: SimChannel) -> list[str]:
    """Heard sources with consecutive repeats collapsed: [A, B, A] for a nested playback."""
    runs: list[str] = []
    for f in ch.truth.heard:
        if not runs or runs[-1] != f.source:
            runs.append(f.source)
    return runs


def last_tick(ch: SimChannel, source: str) -> int:
    return max(ticks(f.t, ch) for f in ch.truth.heard if f.source == source)


def first_tick(ch: SimChannel, source: str) -> int:
    return min(ticks(f.t, ch) for f in ch.truth.heard if f.source == source)


async def sendmsg(
    gs: GsClient, uuid: str, path: str, *, lock: bool = True, event_uuid: str | None = None
) -> str:
    eu = event_uuid or str(uuidlib.uuid4())
    lines = [
        f"sendmsg {uuid}",
        "call-command: execute",
        "execute-app-name: playback",
        f"execute-app-arg: {path}",
    ]
    if lock:
        lines.append("event-lock: true")
    lines.append(f"Event-UUID: {eu}")
    r = await gs.send("\n".join(lines))
    assert r.data == "+OK"
    return eu


async def all_done(sim: FreeSwitchSim, ch: SimChannel, n: int, timeout: float = 10.0) -> None:
    await sim.wait_for(
        lambda: len(ch.truth.playbacks) >= n and all(p.status for p in ch.truth.playbacks), timeout
    )


async def test_broadcasts_play_in_order_each_after_its_lead_in(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(16000, 1))
    b = wav_factory("b.wav", ramp(2400, 10001))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    for path in (a, b):
        assert await gs.api(f"uuid_broadcast {uuid} {path} aleg") == "+OK Message sent\n"
    await all_done(sim, ch, 2)
    assert source_runs(ch) == [a, b]
    assert np.array_equal(ch.truth.heard_from(a)[:16000], load(a)[0])
    assert np.array_equal(ch.truth.heard_from(b)[:2400], load(b)[0])
    # between the files: exactly the lead-in (5 frames read, nothing written)
    assert first_tick(ch, b) - last_tick(ch, a) - 1 == 5
    pa, pb = ch.truth.playbacks
    assert (
        pa.status == pb.status == "done" and pa.method == "broadcast" and pb.lead_in_t is not None
    )
    await gs.wait_event(
        lambda e: e.get("Event-Name") == "PRIVATE_COMMAND" and e.get("execute-app-arg") == b
    )
    seq = [
        (e["Event-Name"], e.get("Application-Response") or e.get("Playback-Status") or "")
        for e in gs.events
        if e.get("Unique-ID") == uuid
        and e["Event-Name"] in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "PLAYBACK_START", "PLAYBACK_STOP", "PRIVATE_COMMAND")
        and (e.get("Application") == "playback" or e["Event-Name"].startswith(("PLAYBACK", "PRIVATE")))
    ]  # fmt: skip
    one = [("CHANNEL_EXECUTE", ""), ("PLAYBACK_START", ""), ("PLAYBACK_STOP", "done"),
           ("CHANNEL_EXECUTE_COMPLETE", "FILE PLAYED"), ("PRIVATE_COMMAND", "")]  # fmt: skip
    assert seq == one + one
    start = gs.named("PLAYBACK_START", uuid)[0]
    assert start["Playback-File-Path"] == a and start["variable_current_application"] == "playback"
    private = gs.named("PRIVATE_COMMAND", uuid)[0]
    assert private["call-command"] == "execute" and private["event-lock"] == "true"
    assert private["lead-frames"] == "5" and private["Event-Name"] == "PRIVATE_COMMAND"


async def test_sendmsg_with_event_lock_has_no_lead_in(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(16000, 1))  # whole frames: no padding between files
    b = wav_factory("b.wav", ramp(1600, 20001))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    ea = await sendmsg(gs, uuid, a)
    await sendmsg(gs, uuid, b)
    await all_done(sim, ch, 2)
    assert source_runs(ch) == [a, b]
    assert first_tick(ch, b) == last_tick(ch, a) + 1  # the 20 ms cadence just continues
    assert all(p.lead_in_t is None and p.method == "sendmsg" for p in ch.truth.playbacks)
    ex = await gs.wait_event(
        lambda e: (
            e.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application-Data") == a
        )
    )
    assert ex["Application-UUID"] == ea and ex["Application-Response"] == "FILE PLAYED"
    assert gs.named("CHANNEL_EXECUTE", uuid)[-2]["Application-UUID"] == ea


async def test_sendmsg_without_event_lock_nests_and_resumes(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(24000, 1))
    b = wav_factory("b.wav", ramp(1600, 20001))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await sendmsg(gs, uuid, a, lock=False)
    await sim.wait_for(lambda: len(ch.truth.heard) >= 10)
    await sendmsg(gs, uuid, b, lock=False)
    await all_done(sim, ch, 2)
    assert source_runs(ch) == [a, b, a]  # a pauses, b plays, a resumes where it was
    assert np.array_equal(ch.truth.heard_from(a)[:24000], load(a)[0])
    pa, pb = ch.truth.playbacks
    assert pb.nested_in == pa.app_uuid and pa.status == pb.status == "done"
    assert pb.stop_t is not None and pa.stop_t is not None and pb.stop_t < pa.stop_t


async def test_locked_playback_is_not_interrupted_by_unlocked_sendmsg(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(16000, 1))
    b = wav_factory("b.wav", ramp(1600, 20001))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await gs.api(f"uuid_broadcast {uuid} {a} aleg")  # broadcasts are event-locked
    await sim.wait_for(lambda: len(ch.truth.heard) >= 5)
    await sendmsg(gs, uuid, b, lock=False)
    await all_done(sim, ch, 2)
    assert source_runs(ch) == [a, b]


async def test_break_during_lead_in_is_lost(gs_factory: GsFactory, wav_factory: WavFactory) -> None:
    async with FreeSwitchSim(clock=SimClock(10), lead_in_frames=25) as sim:
        gs = GsClient("127.0.0.1", sim.esl_port, "ClueCon")
        await gs.start()
        try:
            a = wav_factory("a.wav", ramp(2400, 1))
            uuid = await sim.originate(profile="default")
            ch = sim.channel(uuid)
            await gs.api(f"uuid_broadcast {uuid} {a} aleg")
            rec = await sim.wait_for(lambda: ch.truth.playbacks and ch.truth.playbacks[0])
            await sim.wait_for(lambda: rec.lead_in_t is not None)
            assert rec.start_t is None
            assert await gs.api(f"uuid_break {uuid} all") == "+OK\n"
            await all_done(sim, ch, 1)
            assert rec.status == "done" and rec.offset_pos == 2400  # played in full
            assert len(ch.truth.heard_from(a)) >= 2400
        finally:
            await gs.stop()


async def test_break_between_sendmsg_files_is_lost(wav_factory: WavFactory) -> None:
    # the pop -> exec window is tiny in FreeSWITCH; widened here so the test can hit it
    async with FreeSwitchSim(clock=SimClock(10), exec_window_s=1.0) as sim:
        a = wav_factory("a.wav", ramp(800, 1))
        b = wav_factory("b.wav", ramp(1600, 20001))
        uuid = await sim.originate(profile="default")
        ch = sim.channel(uuid)
        for path in (a, b):
            await sim.api(f"uuid_setvar {uuid} x 1")
            ch.queue_private(_sendmsg_private(ch, path))
        pa, pb = ch.truth.playbacks
        await sim.wait_for(
            lambda: pa.status == "done" and pb.start_t is None and not ch.private_queue
        )
        assert await sim.api(f"uuid_break {uuid} all") == "+OK\n"
        await all_done(sim, ch, 2)
        assert pb.status == "done" and pb.offset_pos == 1600


def _sendmsg_private(ch: SimChannel, path: str):  # type: ignore[no-untyped-def]
    from fsbridge.sim.fs_apps import PrivateMsg, new_playback_record

    app_uuid = str(uuidlib.uuid4())
    rec = new_playback_record(ch, path, "sendmsg", app_uuid, True)
    return PrivateMsg(
        [], "execute", app="playback", arg=path, event_lock=True, app_uuid=app_uuid, record=rec
    )


async def _three_queued(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> tuple[SimChannel, list[str]]:
    paths = [wav_factory(f"f{i}.wav", ramp(16000, 1 + 5000 * i)) for i in range(3)]
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    for p in paths:
        await gs.api(f"uuid_broadcast {uuid} {p} aleg")
    await sim.wait_for(lambda: len(ch.truth.heard) >= 8)
    return ch, paths


async def test_uuid_break_stops_only_the_current_file(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    ch, paths = await _three_queued(gs, sim, wav_factory)
    assert await gs.api(f"uuid_break {ch.uuid}") == "+OK\n"
    await all_done(sim, ch, 3)
    assert [p.status for p in ch.truth.playbacks] == ["break", "done", "done"]
    assert source_runs(ch) == paths
    stop = await gs.wait_event(lambda e: e.get("Event-Name") == "PLAYBACK_STOP")
    assert stop["Playback-Status"] == "break"
    done = await gs.wait_event(
        lambda e: (
            e.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE" and e.get("Application") == "playback"
        )
    )
    assert done["Application-Response"] == "FILE PLAYED"  # also after a break


async def test_uuid_break_all_flushes_the_queue(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    ch, paths = await _three_queued(gs, sim, wav_factory)
    assert await gs.api(f"uuid_break {ch.uuid} all") == "+OK\n"
    await all_done(sim, ch, 3)
    assert [p.status for p in ch.truth.playbacks] == ["break", "flushed", "flushed"]
    assert source_runs(ch) == paths[:1]
    assert all(p.start_t is None for p in ch.truth.playbacks[1:])


async def test_offset_pos_and_block_semantics_after_break(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    short = wav_factory("short.wav", ramp(16000, 1))  # 2 s < one 16384-sample block
    long = wav_factory("long.wav", ramp(40000, 1))  # 5 s
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    for path, frames in ((short, 8), (long, 20)):
        start = len(ch.truth.heard)
        await sendmsg(gs, uuid, path)
        await sim.wait_for(lambda start=start, frames=frames: len(ch.truth.heard) - start >= frames)
        await gs.api(f"uuid_break {uuid}")
        stop = await gs.wait_event(
            lambda e, path=path: (
                e.get("Event-Name") == "PLAYBACK_STOP" and e.get("Playback-File-Path") == path
            )
        )
        heard = len(ch.truth.heard_from(path))
        assert stop["Playback-Status"] == "break"
        assert (
            int(stop["variable_playback_last_offset_pos"])
            == heard
            == ch.truth.playbacks[-1].offset_pos
        )
        assert heard < (16000 if path == short else 40000)
        if path == short:  # read from the file: the whole block, even though it was cut short
            assert (
                stop["variable_playback_samples"] == "16000"
                and stop["variable_playback_ms"] == "2000"
            )
        else:
            assert (
                stop["variable_playback_samples"] == "16384"
                and stop["variable_playback_ms"] == "2048"
            )


async def test_unplayable_files_complete_with_file_not_found(
    gs: GsClient, sim: FreeSwitchSim, tmp_path: Path
) -> None:
    text = tmp_path / "text.wav"
    text.write_text("not a wav at all")
    pcm8 = tmp_path / "pcm8.wav"
    pcm8.write_bytes(
        struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF",
            36 + 4,
            b"WAVE",
            b"fmt ",
            16,
            1,
            1,
            8000,
            8000,
            1,
            8,
            b"data",
            4,
        )
        + b"\x80\x80\x80\x80"
    )
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    cases = [str(tmp_path / "missing.wav"), str(text), str(pcm8)]
    ids = [await sendmsg(gs, uuid, p) for p in cases]
    await all_done(sim, ch, 3)
    for eu in ids:
        ev = await gs.wait_event(
            lambda e, eu=eu: (
                e.get("Event-Name") == "CHANNEL_EXECUTE_COMPLETE"
                and e.get("Application-UUID") == eu
            )
        )
        assert ev["Application-Response"] == "FILE NOT FOUND"
    assert gs.named("PLAYBACK_START", uuid) == [] and gs.named("PLAYBACK_STOP", uuid) == []
    assert [p.status for p in ch.truth.playbacks] == ["not_found"] * 3
    errors = [p.error or "" for p in ch.truth.playbacks]
    assert "No such file" in errors[0] and "RIFF" in errors[1] and "16" in errors[2]
    assert len(ch.truth.errors) == 3 and ch.truth.heard == []


async def test_params_prefix_is_echoed_and_playback_app_prefix(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(800, 1))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    arg = "{chunk_id=R7-3,turn=2}" + a
    await gs.api(f"uuid_broadcast {uuid} playback::{arg} aleg")
    await all_done(sim, ch, 1)
    stop = await gs.wait_event(lambda e: e.get("Event-Name") == "PLAYBACK_STOP")
    start = gs.named("PLAYBACK_START", uuid)[0]
    for ev in (start, stop):
        assert ev["chunk_id"] == "R7-3" and ev["turn"] == "2" and ev["Playback-File-Path"] == arg
    assert ch.truth.playbacks[0].params == {"chunk_id": "R7-3", "turn": "2"}
    assert ch.truth.playbacks[0].path == a and ch.truth.heard_from(a).size >= 800


async def test_relative_path_uses_the_sound_prefix(
    gs: GsClient, sim: FreeSwitchSim, tmp_path: Path, wav_factory: WavFactory
) -> None:
    wav_factory("hello.wav", ramp(800, 1))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await gs.api(f"uuid_broadcast {uuid} hello.wav")
    await all_done(sim, ch, 1)
    start = await gs.wait_event(lambda e: e.get("Event-Name") == "PLAYBACK_START")
    assert start["Playback-File-Path"] == f"{tmp_path}/hello.wav"
    assert start["variable_current_application_data"] == "hello.wav"
    execute = gs.named("CHANNEL_EXECUTE", uuid)[-1]
    assert execute["Application"] == "playback" and execute["Application-Data"] == "hello.wav"
    assert ch.truth.playbacks[0].status == "done"


async def test_other_rate_files_are_resampled(
    gs: GsClient, sim: FreeSwitchSim, assets: Path
) -> None:
    path = str(assets / "reply-en-short-24k.wav")
    samples, rate = load(path)
    uuid = await sim.originate(profile="default", channel_rate=8000)
    ch = sim.channel(uuid)
    await sendmsg(gs, uuid, path)
    await all_done(sim, ch, 1)
    expect = round(len(samples) * 8000 / rate)
    assert ch.truth.playbacks[0].offset_pos == expect
    assert abs(len(ch.truth.heard_from(path)) - expect) < 160


async def test_hangup_during_playback(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(16000, 1))
    b = wav_factory("b.wav", ramp(800, 1))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await gs.api(f"uuid_broadcast {uuid} {a} aleg")
    await gs.api(f"uuid_broadcast {uuid} {b} aleg")
    await sim.wait_for(lambda: len(ch.truth.heard) >= 5)
    n = len([e for e in gs.events if e.get("Unique-ID") == uuid])
    await sim.hangup(uuid)
    await gs.wait_event(lambda e: e.get("Event-Name") == "CHANNEL_DESTROY")
    names = [e["Event-Name"] for e in gs.events if e.get("Unique-ID") == uuid][n:]
    assert names[:6] == [
        "CHANNEL_HANGUP", "PLAYBACK_STOP", "CHANNEL_EXECUTE_COMPLETE", "PRIVATE_COMMAND",
        "CHANNEL_UNPARK", "CHANNEL_EXECUTE_COMPLETE",
    ]  # fmt: skip
    assert (
        gs.named("PLAYBACK_STOP", uuid)[0]["Playback-Status"] == "done"
    )  # cut by hangup: still done
    assert [p.status for p in ch.truth.playbacks] == ["done", "dropped"]


async def test_broadcast_app_with_hangup_cause(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(800, 1))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await gs.api(f"uuid_broadcast {uuid} playback!user_busy::{a} aleg")
    await sim.wait_for(lambda: ch.hung_up.is_set())
    assert ch.hangup_cause == "USER_BUSY" and ch.truth.playbacks[0].status == "done"


async def test_dtmf_terminator_stops_playback(
    gs: GsClient, sim: FreeSwitchSim, wav_factory: WavFactory
) -> None:
    a = wav_factory("a.wav", ramp(16000, 1))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await sendmsg(gs, uuid, a)
    await sim.wait_for(lambda: len(ch.truth.heard) >= 5)
    await sim.send_dtmf(uuid, "5*")
    await all_done(sim, ch, 1)
    assert ch.truth.playbacks[0].status == "break"
    assert ch.variables["playback_terminator_used"] == "*"


async def test_heard_audio_timeline_and_wav(
    sim: FreeSwitchSim, wav_factory: WavFactory, tmp_path: Path
) -> None:
    a = wav_factory("a.wav", ramp(1600, 1))
    uuid = await sim.originate(profile="default")
    ch = sim.channel(uuid)
    await sim.api(f"uuid_broadcast {uuid} {a} aleg")
    await all_done(sim, ch, 1)
    line = ch.truth.heard_audio()
    first = ch.truth.heard[0]
    pos = round((first.t - ch.truth.answer_t) * 8000)
    assert not line[:pos].any()  # silence until the first written frame
    assert np.array_equal(line[pos : pos + 1600], load(a)[0])
    out = tmp_path / "heard.wav"
    ch.truth.write_heard_wav(out)
    assert np.array_equal(load(out)[0], line)
