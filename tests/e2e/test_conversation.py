"""Conversation features end to end: greetings, watchdog, DTMF, overrides, local turn taking and
barge-in, transcripts and CDR variables, session renewal and reconnects, tools.

``fsbridge serve`` runs as a subprocess against both simulators (``bridge``); where a test must reach
into a call (``call.digits``, ``call.say``) it runs the same ``Service`` in-process (``service``).
Everything is checked against the recorded truth: what the Realtime simulator received, what the
FreeSWITCH simulator recorded as commands and as audio written to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fsbridge.audio.wav import write_wav
from fsbridge.config import parse_config
from fsbridge.service import Service
from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import FunctionCallReply, RealtimeSim, Reply
from tests.audio_checks import aligned, best_lag, correlation, resample_ref
from tests.e2e.conftest import (
    Bridge,
    asset,
    base_config,
    start_bridge,
    stop_bridge,
    wait_ready,
    wait_until,
)
from tests.openai_schema import validate_client_event

pytestmark = pytest.mark.slow

PROMPT = "WATCHDOG PROMPT: ask whether the caller is still there."
GOODBYE = "WATCHDOG GOODBYE: say a short goodbye."
GREET = "GREETING: greet the caller."
ONE_PROMPT_WATCHDOG = {
    "silence_s": 0.5,
    "max_prompts": 1,
    "prompt": PROMPT,
    "goodbye_prompt": GOODBYE,
}


# -- set-up ----------------------------------------------------------------------------------------
def reply(seconds: float, text: str, name: str = "reply-en-short-24k.wav") -> Reply:
    pcm, _ = asset(name)
    return Reply(audio=pcm[: int(seconds * 24000)], transcript=text)


def caller_audio(seconds: float = 1.0, name: str = "caller-en-hello-8k.wav") -> np.ndarray:
    pcm, rate = asset(name)
    assert rate == 8000
    return pcm[: int(seconds * rate)]


def config(tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim, **profile: Any) -> dict[str, Any]:
    """The e2e base config, no greeting unless asked, a quick drain, admin on the main port."""
    cfg = base_config(tmp_path, fs, rt)
    cfg["admin"] = {"port": 0}
    cfg["service"] = {"drain_timeout_s": 0.0}
    prof = cfg["profiles"]["english"]
    prof.update(greeting=None, greeting_mode="none")
    prof["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 300}
    prof.update(profile)
    return cfg


async def stop(b: Bridge) -> int:
    """SIGTERM and wait without blocking the loop: the simulators live on it and must answer
    the bridge's last ESL commands while it drains."""
    if b.proc.poll() is None:
        b.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: b.proc.poll() is not None, 15, "fsbridge to exit")
    return await stop_bridge(b)  # kills it if it did not exit


@asynccontextmanager
async def bridge(tmp_path: Path, cfg: dict[str, Any]) -> AsyncIterator[Bridge]:
    b = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(b)
        yield b
    finally:
        code = await stop(b)
    assert code == 0, b.log()[-3000:]
    assert "sk-test-key-123" not in b.log()


@asynccontextmanager
async def service(cfg: dict[str, Any]) -> AsyncIterator[Service]:
    svc = Service(parse_config(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        await asyncio.wait_for(svc.ready.wait(), 10)
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def summaries(b: Bridge) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in b.log().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("msg") == "call summary"]


def received(rt: RealtimeSim, index: int, kind: str) -> list[tuple[float, dict[str, Any]]]:
    return [(t, e) for t, e in rt.sessions[index].received if e.get("type") == kind]


def creates(rt: RealtimeSim, index: int = 0) -> list[dict[str, Any]]:
    return [e for _, e in received(rt, index, "response.create")]


def commands(fs: FreeSwitchSim, uuid: str, prefix: str) -> list[Any]:
    """The API commands (api or bgapi) on this channel that start with ``prefix``."""
    out = []
    for c in fs.channel(uuid).truth.commands:
        if c.kind in ("api", "bgapi") and c.text.split(" ", 1)[-1].startswith(prefix):
            out.append(c)
    return out


def reply_frames(fs: FreeSwitchSim, uuid: str, b_chunks: Path) -> list[Any]:
    return [f for f in fs.channel(uuid).truth.heard if str(b_chunks) in (f.source or "")]


def trimmed_wav(tmp_path: Path, name: str, seconds: float) -> tuple[str, np.ndarray]:
    pcm, rate = asset(name)
    cut = pcm[: int(seconds * rate)]
    path = tmp_path / f"short-{name}"
    write_wav(path, cut, rate)
    return str(path), cut


async def hang_up(fs: FreeSwitchSim, b: Bridge, uuid: str) -> None:
    """The caller hangs up; returns once the bridge has logged the call's summary."""
    await fs.hangup(uuid)
    await wait_until(lambda: any(x["uuid"] == uuid for x in summaries(b)), 10, "the summary")


async def heard_for(fs: FreeSwitchSim, uuid: str, chunk_dir: Path, seconds: float) -> None:
    """Until the caller has heard ``seconds`` of the model's audio."""
    rate = fs.channel(uuid).rate
    n = seconds * rate
    await wait_until(
        lambda: sum(len(f.samples) for f in reply_frames(fs, uuid, chunk_dir)) >= n, 10, "audio"
    )


def hung_up(fs: FreeSwitchSim, uuid: str) -> Callable[[], bool]:
    return lambda: fs.channel(uuid).truth.hangup_t is not None


# -- greetings ---------------------------------------------------------------------------------------
async def test_model_greeting_is_asked_for_as_soon_as_the_session_is_ready(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    async with RealtimeSim(clock=fs.clock, replies=[reply(1.0, "Hello!")]) as rt:
        cfg = config(tmp_path, fs, rt, greeting_mode="model", greeting_prompt=GREET)
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            await wait_until(lambda: reply_frames(fs, uuid, b.chunk_dir), 10, "the greeting heard")
            session = rt.sessions[0]
            first = creates(rt)[0]
            validate_client_event(first)
            assert first["response"]["instructions"] == GREET
            updated_t = next(t for t, e in session.sent if e["type"] == "session.updated")
            create_t = received(rt, 0, "response.create")[0][0]
            print(
                f"\nsession.updated -> greeting response.create: {(create_t - updated_t) * 1000:.0f} ms"
            )
            assert 0 <= create_t - updated_t < 0.3  # at once, give or take a loaded machine
            assert session.responses[0].trigger == "client"
            assert not received(rt, 0, "input_audio_buffer.commit")
            await hang_up(fs, b, uuid)


@pytest.mark.parametrize("interruptible", [False, True])
async def test_greeting_interruptible_or_not(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim, interruptible: bool
) -> None:
    greeting, samples = trimmed_wav(tmp_path, "greeting-en-8k.wav", 2.0)
    cfg = config(
        tmp_path, fs, rt, greeting=greeting, greeting_mode="file",
        greeting_interruptible=interruptible,
    )  # fmt: skip
    async with bridge(tmp_path, cfg) as b:
        uuid = await fs.originate(
            profile="english", caller_audio=caller_audio(0.8), caller_delay_s=0.3
        )
        ch = fs.channel(uuid)
        greet = lambda: next(p for p in ch.truth.playbacks if p.path.endswith(greeting))  # noqa: E731
        await wait_until(
            lambda: ch.truth.playbacks and greet().stop_t is not None, 10, "greeting end"
        )
        await wait_until(
            lambda: rt.sessions and rt.sessions[0].responses, 10, "the caller answered"
        )
        heard = len(ch.truth.heard_from(greet().path))
        breaks = [c for c in commands(fs, uuid, "uuid_break") if c.t < greet().stop_t + 0.001]
        print(f"\ninterruptible={interruptible}: greeting heard {heard / len(samples):.2f}")
        if interruptible:
            assert breaks and greet().status == "break"
            assert heard < 0.8 * len(samples)
        else:
            assert not breaks and greet().status == "done"
            assert heard == len(samples)
            await wait_until(lambda: reply_frames(fs, uuid, b.chunk_dir), 10, "the reply after it")
        await hang_up(fs, b, uuid)


async def test_model_greeting_not_interruptible(tmp_path: Path, fs: FreeSwitchSim) -> None:
    pcm, _ = asset("reply-en-short-24k.wav")
    greeting = pcm[: 2 * 24000]
    replies = [Reply(audio=greeting, transcript="Hello!"), reply(0.5, "Yes?")]
    async with RealtimeSim(clock=fs.clock, replies=replies) as rt:
        cfg = config(tmp_path, fs, rt, greeting_mode="model", greeting_interruptible=False)
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            await _greeting_reply_playing(fs, uuid, b.chunk_dir)
            await heard_for(fs, uuid, b.chunk_dir, 0.8)  # all of it has been generated by now
            await fs.say(uuid, caller_audio(0.8, "caller-en-interrupt-8k.wav"))
            session = rt.sessions[0]
            await wait_until(lambda: len(session.responses) == 2, 10, "the caller answered")
            await wait_until(lambda: session.responses[1].status == "completed", 10, "reply 2")
            assert not commands(fs, uuid, "uuid_break")
            assert not session.truncations
            # the greeting, then the answer, each in full
            want = (2.0 + 0.5) * 8000 * 0.97
            await wait_until(
                lambda: len(reply_frames(fs, uuid, b.chunk_dir)) * 160 >= want, 10, "all"
            )
            assert not commands(fs, uuid, "uuid_break")
            await hang_up(fs, b, uuid)


# -- the no-input watchdog -------------------------------------------------------------------------
async def test_watchdog_prompts_then_ends_the_call_after_the_goodbye_was_heard(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    replies = [reply(0.6, "Are you still there?"), reply(0.8, "Goodbye!")]
    async with RealtimeSim(clock=fs.clock, replies=replies) as rt:
        cfg = config(tmp_path, fs, rt, watchdog=ONE_PROMPT_WATCHDOG)
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            ch = fs.channel(uuid)
            await wait_until(hung_up(fs, uuid), 15, "the watchdog to end the call")
            asked = [e["response"]["instructions"] for e in creates(rt)]
            assert asked == [PROMPT, GOODBYE]
            prompt_t, bye_t = (t for t, _ in received(rt, 0, "response.create"))
            fork_t = ch.truth.fork.connected_t
            assert fork_t is not None and prompt_t - fork_t >= 0.5
            frames = reply_frames(fs, uuid, b.chunk_dir)
            first_reply_end = max(f.t for f in frames if f.t < bye_t)
            assert bye_t - first_reply_end >= 0.5 - 0.05  # silence counted after the prompt played
            last_heard = frames[-1].t + len(frames[-1].samples) / ch.rate
            kill = commands(fs, uuid, "uuid_kill")
            assert kill and kill[0].t >= last_heard - 0.03  # the goodbye was heard to its end
            heard_ms = sum(len(f.samples) for f in frames) / ch.rate * 1000
            assert heard_ms >= 0.95 * (600 + 800)
        (summary,) = summaries(b)
        assert summary["outcome"] == "no_input" and summary["prompts"] == 1


async def test_a_call_ending_keeps_its_outcome_when_the_service_stops_meanwhile(
    tmp_path: Path,
) -> None:
    # FreeSWITCH is slow to answer the final uuid_kill: SIGTERM arrives while the call hangs up.
    async with (
        FreeSwitchSim(password="ClueCon", api_delays={"uuid_kill": 3.0}) as fs,
        RealtimeSim(clock=fs.clock, replies=[reply(0.6, "Still there?"), reply(0.6, "Bye.")]) as rt,
    ):
        cfg = config(tmp_path, fs, rt, watchdog=ONE_PROMPT_WATCHDOG)
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            await wait_until(lambda: commands(fs, uuid, "uuid_kill"), 15, "the final uuid_kill")
            b.proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: summaries(b), 10, "the summary")
        (summary,) = summaries(b)
        assert summary["outcome"] == "no_input"


async def test_a_call_stopped_while_it_cleans_up_still_ends_cleanly(tmp_path: Path) -> None:
    # Someone transfers the channel away; FreeSWITCH is slow to stop the fork; SIGTERM (no drain
    # time) cancels the call in the middle of its cleanup. The cleanup still runs to its end and the
    # drain leaves the transferred channel alone.
    async with (
        FreeSwitchSim(password="ClueCon", api_delays={"uuid_audio_fork": 1.0}) as fs,
        RealtimeSim(clock=fs.clock) as rt,
    ):
        cfg = config(tmp_path, fs, rt)
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            ch = fs.channel(uuid)
            await wait_until(lambda: ch.truth.fork is not None, 15, "the fork")
            ch.request_transfer("1000", "XML", "default")
            stop_cmd = f"uuid_audio_fork {uuid} stop"
            await wait_until(lambda: commands(fs, uuid, stop_cmd), 10, "the fork stop")
            b.proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: summaries(b), 10, "the summary")
        (summary,) = summaries(b)
        assert summary["outcome"] == "transferred"
        assert rt.sessions[0].closed.is_set()
        assert not ch.hung_up.is_set()
        assert not commands(fs, uuid, "uuid_kill") and not commands(fs, uuid, "uuid_broadcast")
        assert not (tmp_path / "chunks" / uuid).exists()


async def test_server_idle_timeout_counts_as_a_prompt(tmp_path: Path, fs: FreeSwitchSim) -> None:
    # "Hm?" is long, so that the goodbye's response.cancel always finds it still going
    replies = [reply(0.5, "Hi!"), reply(0.5, "Still there?"), reply(3.0, "Hm?"), reply(0.6, "Bye!")]
    async with RealtimeSim(clock=fs.clock, replies=replies) as rt:
        cfg = config(
            tmp_path, fs, rt, greeting_mode="model", greeting_prompt=GREET,
            turn_detection={"type": "server_vad", "silence_duration_ms": 300, "idle_timeout_ms": 400},
            watchdog={"silence_s": None, "max_prompts": 1, "goodbye_prompt": GOODBYE},
        )  # fmt: skip
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            await wait_until(hung_up(fs, uuid), 15, "the goodbye to end the call")
            session = rt.sessions[0]
            kinds = [e["type"] for _, e in session.sent]
            assert kinds.count("input_audio_buffer.timeout_triggered") == 2
            triggers = [r.trigger for r in session.responses]
            assert triggers == ["client", "idle", "idle", "client"]
            # the second idle reply was cancelled in favour of the goodbye
            assert session.responses[2].status == "cancelled"
            assert received(rt, 0, "response.cancel")
            assert creates(rt)[-1]["response"]["instructions"] == GOODBYE
            assert session.responses[3].status == "completed"
        (summary,) = summaries(b)
        assert summary["outcome"] == "no_input" and summary["prompts"] == 1


async def test_max_turns_ends_with_a_goodbye(tmp_path: Path, fs: FreeSwitchSim) -> None:
    async with RealtimeSim(clock=fs.clock, replies=[reply(0.6, "Sure."), reply(0.6, "Bye.")]) as rt:
        bye = "TURN LIMIT: thank the caller and say goodbye."
        cfg = config(tmp_path, fs, rt, max_turns=1, max_turns_goodbye_prompt=bye)
        async with bridge(tmp_path, cfg):
            uuid = await fs.originate(profile="english", caller_audio=caller_audio(0.8))
            await wait_until(hung_up(fs, uuid), 15, "the turn limit to end the call")
            session = rt.sessions[0]
            assert [r.trigger for r in session.responses] == ["vad", "client"]
            assert creates(rt)[-1]["response"]["instructions"] == bye
            assert creates(rt)[-1]["response"]["metadata"] == {"fsbridge": "goodbye"}


# -- DTMF -------------------------------------------------------------------------------------------
async def test_dtmf_goes_to_the_model_and_stays_on_the_call(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    async with service(config(tmp_path, fs, rt)) as svc:
        uuid = await fs.originate(profile="english")
        await wait_until(
            lambda: uuid in svc.calls and svc.calls[uuid]._stream is not None, 10, "fork"
        )
        await fs.send_dtmf(uuid, "5")
        await wait_until(lambda: creates(rt), 5, "a response to the key")
        await fs.send_dtmf(uuid, "12")  # two keys at once: one message
        await wait_until(
            lambda: len(received(rt, 0, "conversation.item.create")) >= 2, 5, "2 items"
        )
        texts = [
            e["item"]["content"][0]["text"] for _, e in received(rt, 0, "conversation.item.create")
        ]
        assert texts == ["The caller pressed 5", "The caller pressed 1 2"]
        items = received(rt, 0, "conversation.item.create")
        first_create = received(rt, 0, "response.create")[0][0]
        assert items[0][0] <= first_create
        assert svc.calls[uuid].digits == "512"
        await wait_until(lambda: len(creates(rt)) == 2, 10, "a response to the second burst")
        await fs.hangup(uuid)


async def test_dtmf_not_forwarded_when_the_profile_says_so(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = config(tmp_path, fs, rt, dtmf={"forward": False})
    async with service(cfg) as svc:
        uuid = await fs.originate(profile="english")
        await wait_until(
            lambda: uuid in svc.calls and svc.calls[uuid]._stream is not None, 10, "fork"
        )
        await fs.send_dtmf(uuid, "9#")
        await wait_until(lambda: svc.calls[uuid].digits == "9#", 5, "the keys on the call")
        await asyncio.sleep(0.5)  # DTMF_GROUP_S has passed: a forwarded key would be out by now
        assert not received(rt, 0, "conversation.item.create") and not creates(rt)
        await fs.hangup(uuid)


async def test_say_adds_a_text_item_and_asks_for_a_reply(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    async with service(config(tmp_path, fs, rt)) as svc:
        uuid = await fs.originate(profile="english")
        await wait_until(
            lambda: uuid in svc.calls and svc.calls[uuid]._stream is not None, 10, "fork"
        )
        call = svc.calls[uuid]
        await call.say("The caller is a VIP.", role="system", respond=False)
        await call.say("Tell me the opening hours.")
        await wait_until(lambda: creates(rt), 5, "the reply")
        items = [e["item"] for _, e in received(rt, 0, "conversation.item.create")]
        assert [(i["role"], i["content"][0]["text"]) for i in items] == [
            ("system", "The caller is a VIP."),
            ("user", "Tell me the opening hours."),
        ]
        assert len(creates(rt)) == 1
        await fs.hangup(uuid)
        await wait_until(lambda: uuid not in svc.calls, 10, "the call to end")
        with pytest.raises(RuntimeError, match="no live Realtime session"):
            await call.say("hello?")


# -- profile overrides ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variables", "voice", "instructions"),
    [
        (
            {"fsbridge_voice": "cedar", "fsbridge_instructions": "Be a pirate."},
            "cedar",
            "Be a pirate.",
        ),
        ({"fsbridge_voice": "nova"}, "marin", "You are a test assistant."),  # invalid: ignored
    ],
)
async def test_channel_variables_override_the_profile(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim,
    variables: dict[str, str], voice: str, instructions: str,
) -> None:  # fmt: skip
    cfg = config(tmp_path, fs, rt, allow_overrides=True)
    async with bridge(tmp_path, cfg) as b:
        uuid = await fs.originate(
            profile="english", variables=variables, caller_audio=caller_audio(0.8)
        )
        await wait_until(lambda: reply_frames(fs, uuid, b.chunk_dir), 10, "the call to work")
        (update,) = [e for _, e in received(rt, 0, "session.update")]
        assert update["session"]["audio"]["output"]["voice"] == voice
        assert update["session"]["instructions"] == instructions
        await hang_up(fs, b, uuid)
    if voice == "marin":
        assert "fsbridge_voice ignored" in b.log()


async def test_a_call_parked_before_the_bridge_started_is_claimed_with_its_overrides(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = config(tmp_path, fs, rt, allow_overrides=True)
    variables = {"fsbridge_voice": "cedar", "fsbridge_instructions": "Be brief: 50% shorter."}
    parked = await fs.originate(
        profile="english", variables=variables, caller_audio=caller_audio(0.8)
    )
    stranger = await fs.originate(profile=None)  # parked, but not for us
    async with bridge(tmp_path, cfg) as b:
        await wait_until(lambda: reply_frames(fs, parked, b.chunk_dir), 10, "the parked call")
        (update,) = [e for _, e in received(rt, 0, "session.update")]
        assert update["session"]["audio"]["output"]["voice"] == "cedar"
        assert update["session"]["instructions"] == "Be brief: 50% shorter."
        assert commands(fs, parked, "uuid_dump")
        await hang_up(fs, b, parked)
        assert fs.channel(stranger).truth.fork is None and len(rt.sessions) == 1
    (summary,) = summaries(b)
    assert summary["uuid"] == parked and summary["outcome"] == "hangup"


# -- turn taking without server VAD ------------------------------------------------------------------
async def test_no_server_vad_local_end_of_speech_commits_the_turn(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = config(
        tmp_path, fs, rt, turn_detection={"type": "none"},
        local_barge_in={"end_silence_ms": 400, "threshold_db": -35.0},
    )  # fmt: skip
    async with bridge(tmp_path, cfg) as b:
        uuid = await fs.originate(
            profile="english", caller_audio=caller_audio(1.0), caller_delay_s=0.2
        )
        ch = fs.channel(uuid)
        await wait_until(lambda: reply_frames(fs, uuid, b.chunk_dir), 10, "the reply")
        ((commit_t, _),) = received(rt, 0, "input_audio_buffer.commit")
        create_t = received(rt, 0, "response.create")[0][0]
        speech_end = ch.truth.utterances[0][0] + 1.0
        print(f"\nend of speech -> commit: {(commit_t - speech_end) * 1000:.0f} ms")
        assert 0.4 - 0.05 <= commit_t - speech_end <= 0.4 + 0.25
        assert commit_t <= create_t
        assert rt.sessions[0].responses[0].trigger == "client"
        assert not [
            e for _, e in rt.sessions[0].sent if e["type"].startswith("input_audio_buffer.speech")
        ]
        await hang_up(fs, b, uuid)


async def test_no_server_vad_commit_key_ends_the_turn(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = config(
        tmp_path, fs, rt, turn_detection={"type": "none"},
        local_barge_in={"end_silence_ms": 5000}, dtmf={"commit_key": "#"},
    )  # fmt: skip
    async with bridge(tmp_path, cfg) as b:
        uuid = await fs.originate(
            profile="english", caller_audio=caller_audio(1.0), caller_delay_s=0.2
        )
        ch = fs.channel(uuid)
        await wait_until(lambda: ch.truth.utterances and ch.truth.utterances[0][0], 10, "speech")
        await wait_until(lambda: fs.now() > ch.truth.utterances[0][0] + 1.2, 5, "speech end")
        assert not received(rt, 0, "input_audio_buffer.commit")
        await fs.send_dtmf(uuid, "#")
        await wait_until(lambda: reply_frames(fs, uuid, b.chunk_dir), 10, "the reply")
        ((commit_t, _),) = received(rt, 0, "input_audio_buffer.commit")
        assert commit_t - ch.truth.dtmf_received[0][0] < 0.2
        assert not received(rt, 0, "conversation.item.create")  # the commit key is not forwarded
        await hang_up(fs, b, uuid)


# -- local barge-in ----------------------------------------------------------------------------------
async def _greeting_reply_playing(fs: FreeSwitchSim, uuid: str, chunk_dir: Path) -> float:
    ch = fs.channel(uuid)

    def started() -> list[Any]:
        return [p for p in ch.truth.playbacks if str(chunk_dir) in p.path and p.first_write_t]

    await wait_until(started, 10, "the model's greeting to play")
    return started()[0].first_write_t


async def test_local_barge_in_breaks_before_the_server_vad(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    # a slow server VAD (300 ms of speech before speech_started), so the race is clear
    async with RealtimeSim(
        clock=fs.clock, replies=[reply(3.0, "A long greeting.")], vad_min_speech_ms=300
    ) as rt:
        cfg = config(
            tmp_path, fs, rt, greeting_mode="model",
            local_barge_in={"enabled": True, "min_speech_ms": 60, "threshold_db": -35.0},
        )  # fmt: skip
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            await _greeting_reply_playing(fs, uuid, b.chunk_dir)
            await heard_for(fs, uuid, b.chunk_dir, 0.3)
            await fs.say(uuid, caller_audio(1.0, "caller-en-interrupt-8k.wav"))
            speech_t = fs.now()
            session = rt.sessions[0]
            await wait_until(
                lambda: any(e["type"] == "input_audio_buffer.speech_started" for _, e in session.sent),
                10, "the server's VAD",
            )  # fmt: skip
            await wait_until(lambda: session.truncations, 10, "the truncate")
            vad_t = next(
                t for t, e in session.sent if e["type"] == "input_audio_buffer.speech_started"
            )
            breaks = commands(fs, uuid, "uuid_break")
            assert breaks
            # (a re-break within ms of the first is the playout's lost-break guard, not the VAD)
            late = [c for c in breaks if c.t >= vad_t]
            assert not late, "the server's speech_started must not break a second time"
            print(f"\nspeech -> local break {(breaks[0].t - speech_t) * 1000:.0f} ms, "
                  f"-> server speech_started {(vad_t - speech_t) * 1000:.0f} ms")  # fmt: skip
            assert breaks[0].t < vad_t
            assert breaks[0].t - speech_t < 0.25
            await hang_up(fs, b, uuid)
        (summary,) = summaries(b)
        assert summary["local_barge_ins"] == 1 and summary["barge_ins"] == 1


async def test_our_own_echo_does_not_barge_in(tmp_path: Path, fs: FreeSwitchSim) -> None:
    pcm, _ = asset("reply-en-short-24k.wav")
    played = pcm[: 2 * 24000]
    # server VAD deaf to the echo level (-20 dBFS needed), so only the local gate could break
    async with RealtimeSim(clock=fs.clock, replies=[Reply(audio=played, transcript="Hi.")]) as rt:
        cfg = config(
            tmp_path, fs, rt, greeting_mode="model",
            turn_detection={"type": "server_vad", "threshold": 1.0, "silence_duration_ms": 300},
            local_barge_in={"enabled": True, "min_speech_ms": 60, "threshold_db": -40.0},
        )  # fmt: skip
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            await _greeting_reply_playing(fs, uuid, b.chunk_dir)
            echo = (0.3 * resample_ref(played, 24000, 8000)).astype(np.int16)  # -30 dBFS back
            await fs.say(uuid, echo)
            ch = fs.channel(uuid)
            ref = resample_ref(played, 24000, 8000)

            def heard_samples() -> int:
                return sum(len(f.samples) for f in reply_frames(fs, uuid, b.chunk_dir))

            # the whole reply, not merely "every file so far has stopped" (the next may be late)
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: heard_samples() >= 0.97 * len(ref), 10, "the reply")
            await wait_until(
                lambda: ch.truth.playbacks and all(p.status for p in ch.truth.playbacks),
                10,
                "the end",
            )
            assert not commands(fs, uuid, "uuid_break")
            heard = np.concatenate([f.samples for f in reply_frames(fs, uuid, b.chunk_dir)])
            s, r = aligned(
                heard.astype(np.float64), ref, best_lag(heard.astype(np.float64), ref, 800)
            )
            assert len(s) >= 0.97 * len(ref) and correlation(s, r) > 0.9
            await hang_up(fs, b, uuid)
        (summary,) = summaries(b)
        assert summary["local_barge_ins"] == 0


# -- transcripts, usage, CDR variables -------------------------------------------------------------
def expected_cost(usages: list[dict[str, Any]]) -> float:
    """Default gpt-realtime prices (USD / 1M): text 4 / 0.4 / 16, audio 32 / 0.4 / 64."""
    total = 0.0
    for u in usages:
        d, o = u["input_token_details"], u["output_token_details"]
        c = d["cached_tokens_details"]
        total += (d["text_tokens"] - c["text_tokens"]) * 4.0 + c["text_tokens"] * 0.4
        total += (d["audio_tokens"] - c["audio_tokens"]) * 32.0 + c["audio_tokens"] * 0.4
        total += o["text_tokens"] * 16.0 + o["audio_tokens"] * 64.0
    return total / 1e6


async def test_transcript_file_and_cdr_variables(tmp_path: Path, fs: FreeSwitchSim) -> None:
    async with RealtimeSim(
        clock=fs.clock, replies=[reply(0.8, "We open at nine.")],
        input_transcripts=["When do you open?"],
    ) as rt:  # fmt: skip
        cfg = config(tmp_path, fs, rt, transcription={"model": "gpt-4o-mini-transcribe"})
        cfg["transcripts"] = {"dir": str(tmp_path / "transcripts")}
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english", caller_audio=caller_audio(1.0))
            ch = fs.channel(uuid)
            await wait_until(
                lambda: (
                    rt.sessions and rt.sessions[0].responses and rt.sessions[0].responses[0].usage
                ),
                10,
                "the reply",
            )
            final = str(rt.sessions[0].responses[0].usage["input_tokens"])
            await wait_until(  # set after the response and after the transcription, in any order
                lambda: (
                    ch.variables.get("fsbridge_tokens_in") == final
                    and "fsbridge_transcription_cost_usd" in ch.variables
                ),
                5,
                "CDR variables",
            )
            setvars = commands(fs, uuid, "uuid_setvar_multi")
            assert any("fsbridge_turns=1" in c.text for c in setvars)
            await hang_up(fs, b, uuid)
            assert all(c.t < ch.truth.hangup_t for c in setvars)  # set while the channel was up
            path = tmp_path / "transcripts" / f"{uuid}.jsonl"
            await wait_until(path.exists, 10, "the transcript file")
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert [(x["role"], x["text"]) for x in lines] == [
            ("user", "When do you open?"),
            ("assistant", "We open at nine."),
        ]
        assert lines[0]["item_id"] == rt.sessions[0].items[0]["id"]
        assert lines[0]["start_s"] <= lines[1]["start_s"]
        usage = rt.sessions[0].responses[0].usage
        assert ch.variables["fsbridge_transcript"] == str(path)
        assert ch.variables["fsbridge_turns"] == "1"
        assert ch.variables["fsbridge_tokens_in"] == str(usage["input_tokens"])
        assert ch.variables["fsbridge_tokens_out"] == str(usage["output_tokens"])
        (asr_usage,) = [
            e["usage"]
            for _, e in rt.sessions[0].sent
            if e["type"] == "conversation.item.input_audio_transcription.completed"
        ]
        # gpt-4o-mini-transcribe, USD / 1M: audio in 3, text in 1.25, text out 5
        details = asr_usage["input_token_details"]
        asr = details["audio_tokens"] * 3.0 + details["text_tokens"] * 1.25
        asr = (asr + asr_usage["output_tokens"] * 5.0) / 1e6
        assert asr > 0
        cost = expected_cost([usage]) + asr
        assert float(ch.variables["fsbridge_cost_usd"]) == pytest.approx(cost, abs=1e-6)
        assert float(ch.variables["fsbridge_transcription_cost_usd"]) == pytest.approx(
            asr, abs=1e-6
        )
        (summary,) = summaries(b)
        assert summary["cost_usd"] == pytest.approx(cost, abs=1e-6)
        assert summary["transcription_cost_usd"] == pytest.approx(asr, abs=1e-6)
        assert summary["transcription"]["items"] == 1
        assert summary["transcription"]["audio_in"] == details["audio_tokens"]
        assert summary["transcript"] == str(path) and summary["transcript_turns"] == 2


async def test_transcript_keeps_what_the_caller_heard_of_an_interrupted_reply(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    text = "We are open from nine in the morning until six in the evening on Saturdays."
    async with RealtimeSim(clock=fs.clock, replies=[reply(4.3, text)]) as rt:
        cfg = config(tmp_path, fs, rt, greeting_mode="model")
        cfg["transcripts"] = {"dir": str(tmp_path / "t")}
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english")
            await _greeting_reply_playing(fs, uuid, b.chunk_dir)
            await heard_for(fs, uuid, b.chunk_dir, 1.5)
            await fs.say(uuid, caller_audio(0.8, "caller-en-interrupt-8k.wav"))
            session = rt.sessions[0]
            await wait_until(lambda: session.truncations, 10, "the truncate")
            await hang_up(fs, b, uuid)
            path = tmp_path / "t" / f"{uuid}.jsonl"
            await wait_until(path.exists, 10, "the transcript")
        item_id = session.truncations[0][1]
        kept = next(i for i in session.items if i["id"] == item_id)["content"][0]["transcript"]
        (line,) = [json.loads(x) for x in path.read_text().splitlines() if '"assistant"' in x]
        print(f"\nheard: {line['text']!r} (server kept {kept!r})")
        assert line["truncated"] is True and 0 < len(line["text"]) < len(text)
        assert line["text"] == kept


# -- long calls: renewal and reconnects ------------------------------------------------------------
def _words(rt: RealtimeSim, index: int) -> list[tuple[str, str]]:
    out = []
    for _, e in received(rt, index, "conversation.item.create"):
        item = e["item"]
        out.append((item["role"], item["content"][0]["text"]))
    return out


async def test_session_renewed_at_a_turn_boundary_without_a_gap(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    async with RealtimeSim(
        clock=fs.clock, replies=[reply(0.8, "We open at nine."), reply(0.8, "You're welcome.")],
        input_transcripts=lambda session, i: "When do you open?" if session.index == 0 else "Thanks!",
        session_max_s=4.0,
    ) as rt:  # fmt: skip
        cfg = config(tmp_path, fs, rt, transcription={"model": "gpt-4o-mini-transcribe"})
        cfg["realtime"]["session_renew_s"] = 2.0
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english", caller_audio=caller_audio(0.8))
            ch = fs.channel(uuid)
            await wait_until(lambda: len(rt.sessions) == 2, 10, "the renewal")
            s0, s1 = rt.sessions
            await wait_until(lambda: s0.closed.is_set(), 5, "the old session closed")
            assert s0.close_code == 1000  # closed by us, before the server's limit
            assert "error" not in s0.sent_types()
            assert _words(rt, 1) == [
                ("user", "When do you open?"),
                ("assistant", "We open at nine."),
            ]
            for _, e in s1.received:
                validate_client_event(e)
            await fs.say(uuid, caller_audio(0.8, "caller-en-interrupt-8k.wav"))
            await wait_until(
                lambda: s1.responses and s1.responses[0].status == "completed", 10, "reply 2"
            )
            await wait_until(lambda: len(reply_frames(fs, uuid, b.chunk_dir)) > 0 and
                             all(p.status for p in ch.truth.playbacks), 10, "reply 2 heard")  # fmt: skip

            # no gap: the fork's audio reached one session or the other, all of it
            def missing_ms() -> float:  # the fork goes on sending: read both at one moment
                sent = sum(len(s.input_audio) for s in rt.sessions)  # a slow run may renew again
                return (ch.truth.fork.bytes_sent * 3 - sent) / 48

            with contextlib.suppress(AssertionError):  # the assert below says by how much
                await wait_until(lambda: missing_ms() < 100, 5, "the uplink to catch up")
            missing = missing_ms()
            print(f"\nuplink across the switch: {missing:.0f} ms not appended (negative: replayed)")
            assert missing < 100  # at most the batch in flight and the resampler's delay
            await hang_up(fs, b, uuid)
        (summary,) = summaries(b)
        used = len(rt.sessions)  # 2, or 3 when this run was slow enough to renew once more
        assert summary["sessions"] == used and summary["renewals"] == used - 1
        assert summary["outcome"] == "hangup"


@pytest.mark.parametrize("how", ["drop", "expiry"])
async def test_reconnect_after_a_drop_or_expiry(
    tmp_path: Path, fs: FreeSwitchSim, how: str
) -> None:
    async with RealtimeSim(
        clock=fs.clock, replies=[reply(0.6, "We open at nine."), reply(0.6, "Sure.")],
        input_transcripts=["When do you open?", "And on Sunday?"],
        session_max_s=3.5 if how == "expiry" else 3600.0,
    ) as rt:  # fmt: skip
        cfg = config(tmp_path, fs, rt, transcription={"model": "gpt-4o-mini-transcribe"})
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english", caller_audio=caller_audio(0.8))
            ch = fs.channel(uuid)
            await wait_until(
                lambda: rt.sessions and rt.sessions[0].responses and rt.sessions[0].responses[0].usage,
                10, "reply 1",
            )  # fmt: skip
            if how == "drop":
                rt.inject_fault(0, "drop")
            await wait_until(lambda: len(rt.sessions) == 2, 10, "the reconnect")
            s0, s1 = rt.sessions
            if how == "expiry":
                assert any(e.get("error", {}).get("code") == "session_expired" for _, e in s0.sent)
            await wait_until(lambda: len(_words(rt, 1)) >= 2, 5, "the seed (both turns)")
            assert _words(rt, 1)[:2] == [
                ("user", "When do you open?"),
                ("assistant", "We open at nine."),
            ]
            await fs.say(uuid, caller_audio(0.8, "caller-en-interrupt-8k.wav"))
            await wait_until(
                lambda: s1.responses and s1.responses[0].status == "completed", 10, "reply 2"
            )
            assert not any("apology" in (p.path or "") for p in ch.truth.playbacks)
            assert ch.truth.hangup_t is None
            await hang_up(fs, b, uuid)
        (summary,) = summaries(b)
        # a slow run may see the second session expire too before the hangup
        assert summary["reconnects"] == len(rt.sessions) - 1 >= 1
        assert summary["outcome"] == "hangup"


@pytest.mark.parametrize("attempts", [None, 3])
async def test_failed_reconnect_apologises_and_hangs_up(
    tmp_path: Path, fs: FreeSwitchSim, attempts: int | None
) -> None:
    async with RealtimeSim(clock=fs.clock, replies=[reply(0.6, "Hi.")]) as rt:
        for index in (1, 2, 3, 4, 5):
            rt.inject_fault(index, "drop")  # every new session dies at once
        apology, _ = trimmed_wav(tmp_path, "apology-en-8k.wav", 1.0)
        cfg = config(tmp_path, fs, rt, apology=apology)
        if attempts is not None:
            cfg["realtime"].update(reconnect_attempts=attempts, reconnect_backoff_s=0.1)
        async with bridge(tmp_path, cfg):
            uuid = await fs.originate(profile="english")
            ch = fs.channel(uuid)
            await wait_until(lambda: rt.sessions, 10, "the session")
            await wait_until(lambda: ch.truth.fork and ch.truth.fork.connected_t, 10, "the fork")
            rt.inject_fault(0, "drop")
            await wait_until(hung_up(fs, uuid), 15, "the hangup")
            assert len(rt.sessions) == 1 + (attempts or 2)  # the first, then the attempts
            apology = [p for p in ch.truth.playbacks if "apology" in p.path]
            assert apology and apology[0].status == "done"


# -- tools -------------------------------------------------------------------------------------------
async def test_end_call_tool_hangs_up_after_the_goodbye_was_heard(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    replies = [FunctionCallReply(name="end_call", arguments={"reason": "done"}), reply(0.8, "Bye!")]
    async with RealtimeSim(clock=fs.clock, replies=replies) as rt:
        cfg = config(tmp_path, fs, rt, builtin_tools=["end_call"])
        async with bridge(tmp_path, cfg) as b:
            uuid = await fs.originate(profile="english", caller_audio=caller_audio(0.8))
            ch = fs.channel(uuid)
            await wait_until(hung_up(fs, uuid), 15, "the tool to end the call")
            session = rt.sessions[0]
            (update,) = [e for _, e in received(rt, 0, "session.update")]
            assert [t["name"] for t in update["session"]["tools"]] == ["end_call"]
            outputs = [e for _, e in received(rt, 0, "conversation.item.create")
                       if e["item"]["type"] == "function_call_output"]  # fmt: skip
            assert len(outputs) == 1  # once per call_id, not per .done event
            out_t = next(t for t, e in received(rt, 0, "conversation.item.create"))
            create_t = received(rt, 0, "response.create")[0][0]
            fc_done = session.responses[0].done_t
            assert out_t <= create_t and create_t >= fc_done  # after the tool's response ended
            frames = reply_frames(fs, uuid, b.chunk_dir)
            last_heard = frames[-1].t + len(frames[-1].samples) / ch.rate
            (kill,) = commands(fs, uuid, "uuid_kill")
            assert kill.t >= last_heard - 0.03
        (summary,) = summaries(b)
        assert summary["outcome"] == "end_call"
