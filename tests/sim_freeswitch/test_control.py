"""The standalone simulator: control HTTP API and command line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp

from fsbridge.audio.wav import parse_wav
from fsbridge.sim.fs_control import cli_main, parse_args, serve
from tests.sim_freeswitch.conftest import ramp
from tests.sim_freeswitch.raw_esl import RawEsl


def test_cli_arguments_and_help() -> None:
    args = parse_args(
        ["--esl-port", "0", "--password", "pw", "--control-port", "0", "--api-delay", "status=1.5"]
    )
    assert args.esl_port == 0 and args.password == "pw" and args.api_delay == [("status", 1.5)]
    assert cli_main(["--help"]) == 0
    assert cli_main(["--api-delay", "nonsense"]) == 2


async def test_control_api_end_to_end(wav_factory: Callable[..., str], tmp_path: Path) -> None:
    args = parse_args(
        ["--esl-port", "0", "--control-port", "0", "--speed", "10", "--password", "pw"]
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(args, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        base = f"http://127.0.0.1:{args.control_port_actual}"
        caller = wav_factory("caller.wav", ramp(1600, 1))
        async with aiohttp.ClientSession() as http:
            r = await http.post(
                f"{base}/originate",
                json={"profile": "sales", "caller_wav": caller, "variables": {"x": 1}},
            )
            assert r.status == 200
            uuid = (await r.json())["uuid"]
            calls = await (await http.get(f"{base}/calls")).json()
            assert (
                calls[0]["uuid"] == uuid and calls[0]["parked"] and calls[0]["profile"] == "sales"
            )
            r = await http.post(f"{base}/calls/{uuid}/dtmf", json={"digits": "12#"})
            assert r.status == 200
            r = await http.post(f"{base}/calls/{uuid}/dtmf", json={"digits": "x"})
            assert r.status == 400 and "digits" in (await r.json())["error"]
            r = await http.post(f"{base}/calls/{uuid}/say", json={"wav": caller})
            assert r.status == 200 and (await r.json())["utterances"] == 1
            r = await http.post(
                f"{base}/calls/{uuid}/say", json={"wav": str(tmp_path / "missing.wav")}
            )
            assert r.status == 400 and "missing.wav" in (await r.json())["error"]
            r = await http.post(f"{base}/originate", data=b"{not json")
            assert r.status == 400
            r = await http.get(f"{base}/calls/nosuch/log")
            assert r.status == 404
            log = await (await http.get(f"{base}/calls/{uuid}/log")).json()
            assert [d for _, d in log["truth"]["dtmf_received"]] == ["1", "2", "#"]
            r = await http.get(f"{base}/calls/{uuid}/heard.wav")
            samples, rate = parse_wav(await r.read())
            assert rate == 8000 and not samples.any()  # nothing played yet
            r = await http.post(f"{base}/calls/{uuid}/hangup", json={"cause": "user_busy"})
            assert (await r.json())["hangup_cause"] == "USER_BUSY"
            log = await (await http.get(f"{base}/calls/{uuid}/log")).json()
            assert log["call"]["destroyed"] and log["truth"]["hangup_cause"] == "USER_BUSY"
            r = await http.post(f"{base}/calls/{uuid}/dtmf", json={"digits": "1"})
            assert r.status == 409 and "hung up" in (await r.json())["error"]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def test_standalone_esl_uses_the_given_password() -> None:
    args = parse_args(["--esl-port", "0", "--control-port", "0", "--password", "pw"])
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(args, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        raw = await RawEsl.connect(args.esl_port_actual, password="pw")
        body, _ = await raw.command("api status")
        assert body.startswith(b"UP ")
        await raw.close()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0
