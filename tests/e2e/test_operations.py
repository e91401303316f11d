"""Operating the bridge: the CLI, the admin API, metrics, drain, capacity, traces and replay.

``fsbridge serve`` runs as a subprocess against both simulators (in this process); the CLI
commands run as subprocesses too, through asyncio so that the simulators keep running meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fsbridge.audio.wav import write_wav
from fsbridge.config import parse_config
from fsbridge.service import Service
from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import RealtimeSim, Reply
from tests.e2e.conftest import (
    Bridge,
    asset,
    base_config,
    free_port,
    start_bridge,
    stop_bridge,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.slow

TOKEN = "adm-token-4f9a2c"
API_KEY = "sk-test-key-123"
ESL_PW = "EslPw-Secret-7731"


# -- helpers ----------------------------------------------------------------------------------------
def tone(path: Path, seconds: float, freq: float) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    write_wav(path, (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16), 8000)
    return path


def ops_config(tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim | None, **profile: Any) -> dict:
    cfg = base_config(tmp_path, fs, rt)
    cfg["admin"] = {"host": "127.0.0.1", "port": free_port(), "token": TOKEN}
    cfg["traces"] = {"dir": str(tmp_path / "traces")}
    cfg["service"] = {"drain_timeout_s": 0.5}  # stop_bridge() must not wait 90 s for live calls
    cfg["profiles"]["english"].update({"greeting": None, **profile})
    return cfg


def admin(bridge: Bridge, cfg: dict) -> str:
    return f"http://127.0.0.1:{cfg['admin']['port']}"


async def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FSBRIDGE_", "OPENAI_"))}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fsbridge.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full_env,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def m(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape_until(
    base: str, cond: Callable[[dict], bool], timeout: float = 10
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape until ``cond`` holds (or the time is up): counters move a moment after the channel."""
    deadline = time.monotonic() + timeout
    metrics = await scrape(base)
    while not cond(metrics) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        metrics = await scrape(base)
    return metrics


async def view(base: str, uuid: str, cond: Callable[[dict], bool], timeout: float = 20) -> dict:
    """Poll the admin API's view of a call until ``cond`` holds."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{base}/calls/{uuid}") as resp:
                if resp.status == 200:
                    body = await resp.json()
                    if cond(body):
                        return body
            assert time.monotonic() < deadline, f"call view never matched: {locals().get('body')}"
            await asyncio.sleep(0.05)


async def post(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body or {}, headers=headers) as r,
    ):
        text = await r.text()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, {"text": text}


def heard(ch: Any, name: str) -> int:
    return sum(len(f.samples) for f in ch.truth.heard if name in (f.source or ""))


async def wait_exit(bridge: Bridge, timeout: float) -> int:
    await wait_until(lambda: bridge.proc.poll() is not None, timeout, "fsbridge to exit")
    return bridge.proc.returncode


# -- the CLI, the admin API and the metrics during a call -------------------------------------------
async def test_calls_cli_metrics_and_admin_actions(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = ops_config(tmp_path, fs, rt)
    bridge = start_bridge(tmp_path, cfg)
    base = admin(bridge, cfg)
    conf = str(bridge.config_path)
    try:
        await wait_ready(bridge)
        before = await scrape(bridge.base)  # the main port serves /metrics too (the probes' port)
        assert m(before, "fsbridge_calls_active") == 0 and m(before, "fsbridge_esl_connected") == 1
        caller, rate = asset("caller-en-hello-8k.wav")
        uuid = await fs.originate(
            profile="english", caller_audio=caller, caller_rate=rate, caller_delay_s=0.3,
            caller_id_number="5551234",
        )  # fmt: skip
        v = await view(
            base,
            uuid,
            lambda v: v["turns"] >= 1 and v["first_audio_ms"] is not None and v["tokens"],
        )
        assert v["caller"] == "5551234" and v["profile"] == "english"
        during = await scrape(base)
        print(
            f"\nfirst audio {v['first_audio_ms']} ms, bridge {v['bridge_ms']} ms, tokens {v['tokens']}"
        )
        assert m(during, "fsbridge_calls_active") == 1
        assert m(during, "fsbridge_turns_total") >= 1
        assert m(during, "fsbridge_first_audio_latency_seconds_count") >= 1
        assert m(during, "fsbridge_bridge_latency_seconds_count", direction="downlink") >= 1
        assert m(during, "fsbridge_playback_files_total") >= 1
        assert m(during, "fsbridge_tokens_total", kind="output_audio") > 0
        assert m(during, "fsbridge_cost_usd_total", model="gpt-realtime") > 0
        assert 0 < v["first_audio_ms"] < 3000 and v["tokens"] > 0

        # -- fsbridge calls: JSON, then the table
        code, out, err = await run_cli("calls", "--config", conf, "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["sources"]["esl"]["ok"] and report["sources"]["admin"]["ok"]
        (row,) = [c for c in report["calls"] if c["uuid"] == uuid]
        assert row["seen_by"] == ["freeswitch", "bridge"] and row["profile"] == "english"
        assert (
            row["caller"] == "5551234"
            and row["turns"] >= 1
            and row["state"] in ("listening", "speaking")
        )
        code, out, err = await run_cli("calls", "--config", conf)
        assert code == 0, err
        print(out)
        header, line = out.splitlines()[0], next(x for x in out.splitlines() if x.startswith(uuid))
        for column in (
            "UUID",
            "CALLER",
            "PROFILE",
            "STATE",
            "DURATION",
            "TURNS",
            "1ST AUDIO",
            "TOKENS",
        ):
            assert column in header
        assert "5551234" in line and "english" in line and " ms" in line
        assert "1 call" in out and "did not answer" not in out
        # -- one source missing: still a list, and it says which one is missing
        dead = f"http://127.0.0.1:{free_port()}"
        code, out, _ = await run_cli("calls", "--config", conf, "--admin", dead)
        assert code == 0 and uuid in out and "bridge admin API" in out and "did not answer" in out
        code, out, _ = await run_cli(
            "calls", "--config", conf, "--esl", f"127.0.0.1:{free_port()}", "--json"
        )
        report = json.loads(out)
        assert (
            code == 0 and not report["sources"]["esl"]["ok"] and report["sources"]["esl"]["error"]
        )
        assert [c["seen_by"] for c in report["calls"] if c["uuid"] == uuid] == [["bridge"]]
        # -- --watch refreshes until interrupted
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fsbridge.cli", "calls", "--config", conf, "--json", "--watch",
            "--interval", "0.2", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        lines = [await asyncio.wait_for(proc.stdout.readline(), 15) for _ in range(2)]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert all(any(c["uuid"] == uuid for c in json.loads(x)["calls"]) for x in lines)

        # -- actions need the token, on the admin port only
        trace_url = f"{base}/calls/{uuid}/trace"
        assert (await post(trace_url))[0] == 401
        assert (await post(trace_url, "wrong-token"))[0] == 401
        assert (await post(f"{bridge.base}/calls/{uuid}/trace", TOKEN))[0] in (404, 405)
        status, body = await post(trace_url, TOKEN)
        assert status == 200 and Path(body["trace"]).is_dir()
        # The operator's copy of the config has no token: it comes from the environment.
        tokenless = tmp_path / "operator.yaml"
        tokenless.write_text(yaml.safe_dump({**cfg, "admin": {**cfg["admin"], "token": None}}))
        code, out, err = await run_cli("say", uuid, "What time is it?", "-c", str(tokenless))
        assert code == 1 and "token" in err and TOKEN not in err
        code, out, err = await run_cli("say", uuid, "What time is it?", "-c", str(tokenless),
                                       env={"FSBRIDGE_ADMIN_TOKEN": TOKEN})  # fmt: skip
        assert code == 0, err
        session = rt.sessions[0]
        await wait_until(
            lambda: any("What time is it?" in json.dumps(e) for _, e in session.received), 10, "say"
        )
        ch = fs.channel(uuid)
        assert (await post(f"{base}/calls/{uuid}/hangup", "nope"))[0] == 401
        assert ch.truth.hangup_t is None
        status, _ = await post(f"{base}/calls/{uuid}/hangup", TOKEN)
        assert status == 200
        await asyncio.wait_for(ch.hung_up.wait(), 10)
        await wait_until(lambda: not (bridge.chunk_dir / uuid).exists(), 10, "the call to end")
        after = await scrape_until(base, lambda s: m(s, "fsbridge_calls_active") == 0)
        assert m(after, "fsbridge_calls_active") == 0
        assert m(after, "fsbridge_calls_total", outcome="hangup") == 1
        assert m(after, "fsbridge_call_duration_seconds_count") == 1
        async with aiohttp.ClientSession() as http, http.get(f"{base}/calls/{uuid}") as resp:
            assert resp.status == 404
    finally:
        code = await stop_bridge(bridge)
    assert code == 0, bridge.log()
    log = bridge.log()
    assert TOKEN not in log and API_KEY not in log
    # The live trace (turned on mid-call) holds no secret either.
    blob = b"".join(p.read_bytes() for p in (tmp_path / "traces").rglob("*") if p.is_file())
    assert blob and TOKEN.encode() not in blob and API_KEY.encode() not in blob


# -- drain ------------------------------------------------------------------------------------------
async def test_sigterm_drains_then_ends_the_rest_politely(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    goodbye = tone(tmp_path / "goodbye.wav", 1.0, 440)
    busy = tone(tmp_path / "busy.wav", 0.8, 620)
    cfg = ops_config(tmp_path, fs, rt, goodbye=str(goodbye), busy=str(busy))
    cfg["service"]["drain_timeout_s"] = 1.5
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        uuid = await fs.originate(profile="english")
        await view(admin(bridge, cfg), uuid, lambda v: v["state"] == "listening")
        ch = fs.channel(uuid)
        t0 = time.monotonic()
        bridge.proc.send_signal(signal.SIGTERM)
        await wait_ready(bridge, status=503, timeout=5)  # not ready at once ...
        assert ch.truth.hangup_t is None  # ... while the call goes on
        late = await fs.originate(profile="english")  # a call arriving during the drain
        code = await wait_exit(bridge, 20)
        elapsed = time.monotonic() - t0
    finally:
        await stop_bridge(bridge)
    log = bridge.log()
    assert code == 0, log
    print(f"\ndrained and exited {elapsed:.1f} s after SIGTERM")
    assert elapsed >= 1.5
    assert "drain time is up" in log
    assert heard(ch, "goodbye.wav") >= 0.9 * 8000 and ch.truth.hangup_cause == "NORMAL_CLEARING"
    late_ch = fs.channel(late)
    assert heard(late_ch, "busy.wav") >= 0.9 * 0.8 * 8000 and late_ch.truth.hangup_t is not None
    assert "call not served (shutting down)" in log
    assert ch.truth.fork is not None and ch.truth.fork.closed_t is not None


async def test_sigterm_lets_calls_finish_on_their_own(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    goodbye = tone(tmp_path / "goodbye.wav", 1.0, 440)
    cfg = ops_config(tmp_path, fs, rt, goodbye=str(goodbye))
    cfg["service"]["drain_timeout_s"] = 60
    bridge = start_bridge(tmp_path, cfg)
    try:
        await wait_ready(bridge)
        uuid = await fs.originate(profile="english")
        await view(admin(bridge, cfg), uuid, lambda v: v["state"] == "listening")
        bridge.proc.send_signal(signal.SIGTERM)
        await wait_ready(bridge, status=503, timeout=5)
        await fs.hangup(uuid)  # the caller says goodbye themselves
        t0 = time.monotonic()
        code = await wait_exit(bridge, 15)
        elapsed = time.monotonic() - t0
    finally:
        await stop_bridge(bridge)
    assert code == 0, bridge.log()
    assert elapsed < 10  # not the 60 s drain timeout
    assert heard(fs.channel(uuid), "goodbye.wav") == 0


# -- capacity -----------------------------------------------------------------------------------------
async def test_calls_over_max_calls_get_the_fallback(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    busy = tone(tmp_path / "busy.wav", 0.8, 620)
    cfg = ops_config(tmp_path, fs, rt, busy=str(busy))
    cfg["profiles"]["sales"] = {
        **cfg["profiles"]["english"],
        "busy": None,
        "fallback_transfer": "operator",
    }
    cfg["service"]["max_calls"] = 1
    bridge = start_bridge(tmp_path, cfg)
    base = admin(bridge, cfg)
    try:
        await wait_ready(bridge)
        first = await fs.originate(profile="english")
        await view(base, first, lambda v: v["state"] == "listening")
        second = await fs.originate(profile="english")
        third = await fs.originate(profile="sales")
        ch2, ch3 = fs.channel(second), fs.channel(third)
        await asyncio.wait_for(ch2.hung_up.wait(), 10)
        await wait_until(lambda: ch3.truth.transfer is not None, 10, "the transfer")
        metrics = await scrape_until(
            base, lambda s: m(s, "fsbridge_calls_total", outcome="over_capacity") >= 2
        )
        assert fs.channel(first).truth.hangup_t is None  # the served call is untouched
    finally:
        code = await stop_bridge(bridge)
    assert code == 0, bridge.log()
    assert heard(ch2, "busy.wav") >= 0.9 * 0.8 * 8000  # heard the busy message, not silence
    assert ch3.truth.transfer["dest"] == "operator"
    assert m(metrics, "fsbridge_fallbacks_total", reason="over_capacity", action="busy") == 1
    assert m(metrics, "fsbridge_fallbacks_total", reason="over_capacity", action="transfer") == 1
    assert m(metrics, "fsbridge_calls_total", outcome="over_capacity") == 2
    assert len(rt.sessions) == 1  # no model session for the calls we did not serve


# -- traces and replay ----------------------------------------------------------------------------------
async def test_trace_is_redacted_and_replays_without_differences(tmp_path: Path) -> None:
    clock = SimClock(1.0)
    reply, _ = asset("reply-en-short-24k.wav")
    async with (
        FreeSwitchSim(clock=clock, password=ESL_PW) as fs,
        RealtimeSim(clock=clock, replies=[Reply(audio=reply, transcript="a short reply")]) as rt,
    ):
        cfg = ops_config(tmp_path, fs, rt, trace=True)
        cfg["freeswitch"]["password"] = ESL_PW
        bridge = start_bridge(tmp_path, cfg)
        try:
            await wait_ready(bridge)
            caller, rate = asset("caller-en-hello-8k.wav")
            uuid = await fs.originate(
                profile="english", caller_audio=caller, caller_rate=rate, caller_delay_s=0.3
            )
            ch = fs.channel(uuid)
            # The reply starts playing; the caller talks over it (barge-in, truncate).
            await wait_until(
                lambda: any("fsbridge_chunk" in (p.params or {}) and p.start_t for p in ch.truth.playbacks),
                20, "the reply to start playing",
            )  # fmt: skip
            await asyncio.sleep(0.6)  # let the caller hear part of it
            interrupt, irate = asset("caller-en-interrupt-8k.wav")
            await fs.say(uuid, interrupt, irate)
            session = rt.sessions[0]
            await wait_until(
                lambda: "conversation.item.truncate" in session.received_types(), 15, "the truncate"
            )
            await asyncio.sleep(1.0)
            fork_password = ch.variables.get("MOD_AUDIO_BASIC_AUTH_PASSWORD")
            await fs.hangup(uuid)
            await wait_until(lambda: not (bridge.chunk_dir / uuid).exists(), 10, "the call to end")
        finally:
            code = await stop_bridge(bridge)
        assert code == 0, bridge.log()
    trace_dir = tmp_path / "traces" / uuid
    assert (trace_dir / "trace.jsonl").is_file(), os.listdir(tmp_path / "traces")
    blob = b"".join(p.read_bytes() for p in trace_dir.iterdir())
    assert fork_password and len(fork_password) >= 8
    for secret in (API_KEY, ESL_PW, TOKEN, fork_password):
        assert secret.encode() not in blob, secret
    records = [json.loads(x) for x in (trace_dir / "trace.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in records}
    assert {
        "meta",
        "esl_event",
        "esl_command",
        "rt",
        "fork",
        "barge_in",
        "truncated",
        "end",
    } <= kinds
    assert any(r["kind"] == "rt" and r["dir"] == "out" and r["event"]["type"] == "conversation.item.truncate"
               for r in records)  # fmt: skip
    assert (trace_dir / "caller.wav").stat().st_size > 24000 * 2 * 3  # seconds of caller audio

    code, out, err = await run_cli("replay", str(trace_dir), "--timing", "500", timeout=90)
    print(out, err)
    assert code == 0, out + err
    assert "no differences" in out


# -- check and hangup (no bridge running) -----------------------------------------------------------------
async def test_check_reports_each_peer_and_hangup_over_esl(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    cfg = ops_config(tmp_path, fs, rt, greeting=str(tone(tmp_path / "hello.wav", 0.5, 300)))
    path = tmp_path / "fsbridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, _ = await run_cli("check", "-c", str(path))
    print(out)
    assert code == 0, out
    lines = out.splitlines()
    for what in ("config", "FreeSWITCH ESL", "Realtime", "chunk_dir", "profile english greeting"):
        assert any(x.startswith("ok") and what in x for x in lines), what
    assert lines[-1] == "all checks passed"

    bad = {**cfg, "freeswitch": {**cfg["freeswitch"], "password": "wrong-one"},
           "profiles": {"english": {**cfg["profiles"]["english"], "apology": str(tmp_path / "none.wav")}}}  # fmt: skip
    async with RealtimeSim(api_key="sk-the-right-key") as keyed:
        bad["realtime"] = {**cfg["realtime"], "url": keyed.url}
        path.write_text(yaml.safe_dump(bad))
        code, out, _ = await run_cli(
            "check", "-c", str(path), env={"OPENAI_API_KEY": "sk-wrong-key"}
        )
    print(out)
    assert code == 1
    assert any(x.startswith("FAIL") and "Realtime" in x and "401" in x for x in out.splitlines())
    assert any(x.startswith("FAIL") and "password rejected" in x for x in out.splitlines())
    assert any(x.startswith("FAIL") and "none.wav" in x for x in out.splitlines())
    assert "wrong-one" not in out and "sk-wrong-key" not in out
    path.write_text("listen: {port: 'eighty'}\n")
    code, out, _ = await run_cli("check", "-c", str(path))
    assert code == 2 and out.startswith("FAIL") and "listen.port" in out

    # Without a bridge, fsbridge calls still lists FreeSWITCH's side; hangup goes over ESL.
    path.write_text(yaml.safe_dump(cfg))
    uuid = await fs.originate(profile="english")
    other = await fs.originate(profile=None)  # not one of ours
    code, out, _ = await run_cli("calls", "-c", str(path), "--json")
    report = json.loads(out)
    assert code == 0 and report["sources"]["esl"]["ok"] and not report["sources"]["admin"]["ok"]
    assert [c["uuid"] for c in report["calls"]] == [uuid]
    code, out, err = await run_cli("hangup", uuid, "-c", str(path))
    assert code == 0, err
    await asyncio.wait_for(fs.channel(uuid).hung_up.wait(), 5)
    assert fs.channel(uuid).truth.hangup_cause == "NORMAL_CLEARING"
    assert fs.channel(other).truth.hangup_t is None
    code, _, err = await run_cli("hangup", uuid, "-c", str(path))
    assert code == 1 and "No such channel" in err


# -- several instances on one switch ----------------------------------------------------------------------
async def test_two_instances_claim_each_call_once(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim
) -> None:
    services, tasks, stop = [], [], asyncio.Event()
    for name in ("a", "b"):
        cfg = ops_config(tmp_path / name, fs, rt)
        cfg["admin"] = {"port": 0}
        cfg["service"]["instance_id"] = f"node-{name}"
        services.append(Service(parse_config(cfg, env={})))
    tasks = [asyncio.create_task(s.run(stop)) for s in services]
    try:
        for s in services:
            await asyncio.wait_for(s.ready.wait(), 10)
        uuid = await fs.originate(profile="english")

        def claims() -> list[str]:
            return [
                c.text for c in fs.commands if f"hash insert_ifempty/fsbridge/{uuid}/" in c.text
            ]

        await wait_until(lambda: len(claims()) == 2, 10, "both instances to try")
        await wait_until(lambda: sum(uuid in s.calls for s in services) == 1, 10, "one owner")
        (owner,) = [s for s in services if uuid in s.calls]
        await wait_until(lambda: owner.calls[uuid].state == "listening", 10, "the call to run")
        assert len(rt.sessions) == 1
        assert fs.core.hash_db[f"fsbridge_{uuid}"] == owner.config.service.instance_id
        await fs.hangup(uuid)
        await wait_until(
            lambda: f"fsbridge_{uuid}" not in fs.core.hash_db, 10, "the claim released"
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
