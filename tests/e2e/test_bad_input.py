"""Bad input gets a clear error, ends only the affected call, and the service keeps serving."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import RealtimeSim, Reply
from tests.e2e.conftest import (
    asset,
    base_config,
    free_port,
    start_bridge,
    stop_bridge,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.slow


def fork_connected(ch) -> bool:
    fork = ch.truth.fork
    return fork is not None and fork.connected_t is not None


def heard_from(ch, name: str) -> int:
    return sum(len(f.samples) for f in ch.truth.heard if name in (f.source or ""))


async def test_wrong_esl_password_is_reported_and_not_ready(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    cfg = base_config(tmp_path, fs, None)
    cfg["freeswitch"]["password"] = "WrongPass123"
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge, status=503)
        await wait_until(lambda: "rejected the ESL password" in bridge.log(), 10, "the auth error")
        assert bridge.proc.poll() is None  # keeps running, retrying
    finally:
        assert await stop_bridge(bridge) == 0
    assert "WrongPass123" not in bridge.log()


async def test_unreachable_realtime_plays_apology_and_hangs_up(
    tmp_path: Path, fs: FreeSwitchSim
) -> None:
    cfg = base_config(tmp_path, fs, None)
    cfg["realtime"]["url"] = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    cfg["profiles"]["english"]["greeting"] = None
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        uuid = await fs.originate(profile="english")
        ch = fs.channel(uuid)
        await asyncio.wait_for(ch.hung_up.wait(), 20)
        apology, _ = asset("apology-en-8k.wav")
        assert heard_from(ch, "apology") >= 0.95 * len(apology)
        assert "realtime session could not start" in bridge.log()
        # the service is still serving: another call is claimed too
        uuid2 = await fs.originate(profile="english")
        await asyncio.wait_for(fs.channel(uuid2).hung_up.wait(), 20)
    finally:
        assert await stop_bridge(bridge) == 0


async def test_realtime_rejects_key_apology_no_key_in_log(
    tmp_path: Path, fs: FreeSwitchSim, clock
) -> None:
    reply, _ = asset("reply-en-short-24k.wav")
    async with RealtimeSim(
        clock=clock, api_key="sk-the-right-one", replies=[Reply(audio=reply)]
    ) as rt:
        cfg = base_config(tmp_path, fs, rt)
        cfg["profiles"]["english"]["greeting"] = None
        bridge = start_bridge(tmp_path, cfg)
        try:
            await wait_ready(bridge)
            uuid = await fs.originate(profile="english")
            await asyncio.wait_for(fs.channel(uuid).hung_up.wait(), 20)
            assert heard_from(fs.channel(uuid), "apology") > 0
        finally:
            assert await stop_bridge(bridge) == 0
    log = bridge.log()
    assert "401" in log or "unauthor" in log.lower()
    assert "sk-test-key-123" not in log and "sk-the-right-one" not in log


async def test_unknown_profile_rejects_only_that_call(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = base_config(tmp_path, fs, rt)
    cfg["profiles"]["english"]["greeting"] = None
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        bad = await fs.originate(profile="no-such-profile")
        good = await fs.originate(profile="english")
        await asyncio.wait_for(fs.channel(bad).hung_up.wait(), 10)
        assert any(f"uuid_kill {bad} CALL_REJECTED" in c.text for c in fs.commands)
        await wait_until(lambda: fork_connected(fs.channel(good)), 10, "good call's fork")
        assert not fs.channel(good).hung_up.is_set()
        assert "unknown profile 'no-such-profile'" in bridge.log()
        await fs.hangup(good)
    finally:
        assert await stop_bridge(bridge) == 0


async def test_missing_greeting_is_logged_and_call_goes_on(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = base_config(tmp_path, fs, rt)
    cfg["profiles"]["english"]["greeting"] = str(tmp_path / "nope.wav")
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        caller, rate = asset("caller-en-interrupt-8k.wav")
        uuid = await fs.originate(
            profile="english", caller_audio=caller, caller_rate=rate, caller_delay_s=0.3
        )
        await wait_until(
            lambda: rt.sessions and rt.sessions[0].responses, 20, "a reply to the caller"
        )
        assert "cannot play greeting" in bridge.log()
        await fs.hangup(uuid)
    finally:
        assert await stop_bridge(bridge) == 0


async def test_fork_with_wrong_credentials_or_unknown_call_gets_401(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = base_config(tmp_path, fs, rt)
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        uuid = await fs.originate(profile="english")
        await wait_until(lambda: fork_connected(fs.channel(uuid)), 10, "fork")
        url = f"ws://127.0.0.1:{bridge.port}/fork/{uuid}"
        async with aiohttp.ClientSession() as http:
            wrong = {"Authorization": aiohttp.encode_basic_auth("x", "y")}
            for target, headers in ((url, wrong), (url.replace(uuid, "unknown"), {})):
                with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                    await http.ws_connect(
                        target, protocols=("audio.drachtio.org",), headers=headers
                    )
                assert exc.value.status in (401, 409)
        assert not fs.channel(uuid).hung_up.is_set()  # the real call is unaffected
        await fs.hangup(uuid)
    finally:
        assert await stop_bridge(bridge) == 0


async def test_dead_realtime_session_does_not_touch_other_calls(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = base_config(tmp_path, fs, rt)
    cfg["profiles"]["english"]["greeting"] = None
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        a = await fs.originate(profile="english")
        await wait_until(lambda: len(rt.sessions) == 1, 10, "session a")
        caller, rate = asset("caller-en-interrupt-8k.wav")
        b = await fs.originate(
            profile="english", caller_audio=caller, caller_rate=rate, caller_delay_s=0.5
        )
        await wait_until(lambda: len(rt.sessions) == 2, 10, "session b")
        rt.inject_fault(0, "drop")
        await wait_until(lambda: rt.sessions[0].closed.is_set(), 10, "session a dropped")
        await wait_until(lambda: rt.sessions[1].responses, 20, "call b still answered")
        assert not fs.channel(b).hung_up.is_set()
        await fs.hangup(b)
        if not fs.channel(a).hung_up.is_set():  # call a may have reconnected to a new session
            await fs.hangup(a)
    finally:
        assert await stop_bridge(bridge) == 0


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("freeswitch: {fork_rate: 11025}\nprofiles: {p: {voice: nova}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fsbridge.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "freeswitch.fork_rate" in proc.stderr and "profiles.p.voice" in proc.stderr


async def test_fork_that_cannot_connect_apologises_and_hangs_up_at_once(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = base_config(tmp_path, fs, rt)
    cfg["listen"]["public_url"] = f"ws://127.0.0.1:{free_port()}"  # FreeSWITCH cannot reach us
    cfg["profiles"]["english"]["greeting"] = None
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        uuid = await fs.originate(profile="english")
        ch = fs.channel(uuid)
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(ch.hung_up.wait(), 20)
        waited = asyncio.get_running_loop().time() - t0
        apology, _ = asset("apology-en-8k.wav")
        assert heard_from(ch, "apology") >= 0.95 * len(apology)
        # connect_failed wakes the call at once: no 10 s accept timeout before the apology
        assert waited < len(apology) / 8000 + 5
        assert "fork could not connect" in bridge.log()
    finally:
        assert await stop_bridge(bridge) == 0
