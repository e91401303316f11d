"""The FreeSWITCH simulator as a standalone process: ESL port plus a small HTTP control API.

``fsbridge sim freeswitch --esl-port 8021 --password ClueCon --control-port 8022`` (wired into the
CLI by ``cli_main``). The control API plays the caller's part: place a call, speak, press keys,
hang up, and read back what the caller heard and the recorded truth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from fsbridge.audio.wav import WavError, wav_bytes
from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim, SimChannel

__all__ = ["build_control_app", "cli_main", "parse_args", "serve"]

SIM_KEY = web.AppKey("sim", FreeSwitchSim)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not valid JSON"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


def _channel(request: web.Request) -> SimChannel:
    sim = request.app[SIM_KEY]
    uuid = request.match_info["uuid"]
    try:
        return sim.channel(uuid)
    except KeyError:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no call {uuid}"}), content_type="application/json"
        ) from None


async def originate(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    body = await _json_body(request)
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        return _error(400, "variables must be an object of strings")
    try:
        uuid = await sim.originate(
            profile=body.get("profile", "default"),
            caller_audio=body.get("caller_wav"),
            caller_delay_s=float(body.get("caller_delay_s", 0.0)),
            variables={str(k): str(v) for k, v in variables.items()},
            caller_id_number=str(body.get("caller_id_number", "1000")),
            caller_id_name=str(body.get("caller_id_name", "Alice")),
            destination=str(body.get("destination", "5000")),
            channel_rate=int(body.get("channel_rate", 8000)),
        )
    except (WavError, ValueError, TypeError) as exc:
        return _error(400, str(exc))
    return web.json_response({"uuid": uuid})


async def hangup(request: web.Request) -> web.Response:
    ch = _channel(request)
    body = await _json_body(request)
    await request.app[SIM_KEY].hangup(ch.uuid, str(body.get("cause", "NORMAL_CLEARING")).upper())
    return web.json_response({"uuid": ch.uuid, "hangup_cause": ch.hangup_cause})


async def dtmf(request: web.Request) -> web.Response:
    ch = _channel(request)
    digits = (await _json_body(request)).get("digits")
    if (
        not isinstance(digits, str)
        or not digits
        or any(d not in "0123456789*#ABCD" for d in digits)
    ):
        return _error(400, "digits must be a non-empty string of 0-9 * # A-D")
    try:
        await request.app[SIM_KEY].send_dtmf(ch.uuid, digits)
    except ValueError as exc:
        return _error(409, str(exc))
    return web.json_response({"uuid": ch.uuid, "digits": digits})


async def say(request: web.Request) -> web.Response:
    ch = _channel(request)
    wav = (await _json_body(request)).get("wav")
    if not isinstance(wav, str) or not wav:
        return _error(400, "wav must be the path of a mono 16-bit PCM WAV file")
    try:
        await request.app[SIM_KEY].say(ch.uuid, wav)
    except WavError as exc:
        return _error(400, str(exc))
    except ValueError as exc:
        return _error(409, str(exc))
    return web.json_response({"uuid": ch.uuid, "utterances": len(ch.truth.utterance_log)})


async def heard_wav(request: web.Request) -> web.Response:
    ch = _channel(request)
    data = wav_bytes(ch.truth.heard_audio(), ch.rate)
    return web.Response(body=data, content_type="audio/wav")


async def call_log(request: web.Request) -> web.Response:
    ch = _channel(request)
    return web.json_response({"call": ch.snapshot(), "truth": ch.truth.to_dict()})


async def calls(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return web.json_response([ch.snapshot() for ch in sim.channels.values()])


def build_control_app(sim: FreeSwitchSim) -> web.Application:
    app = web.Application()
    app[SIM_KEY] = sim
    app.router.add_post("/originate", originate)
    app.router.add_get("/calls", calls)
    app.router.add_post("/calls/{uuid}/hangup", hangup)
    app.router.add_post("/calls/{uuid}/dtmf", dtmf)
    app.router.add_post("/calls/{uuid}/say", say)
    app.router.add_get("/calls/{uuid}/heard.wav", heard_wav)
    app.router.add_get("/calls/{uuid}/log", call_log)
    return app


def _api_delay(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS, got {text!r}") from None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fsbridge sim freeswitch",
        description="A simulated FreeSWITCH: inbound ESL, calls, playback, mod_audio_fork.",
    )
    p.add_argument("--esl-host", default="127.0.0.1")
    p.add_argument("--esl-port", type=int, default=8021)
    p.add_argument(
        "--password",
        default=os.environ.get("FSBRIDGE_ESL_PASSWORD", "ClueCon"),
        help="ESL password (default: $FSBRIDGE_ESL_PASSWORD or ClueCon)",
    )
    p.add_argument("--control-host", default="127.0.0.1")
    p.add_argument("--control-port", type=int, default=8022)
    p.add_argument("--speed", type=float, default=1.0, help="clock speed (1 = real time)")
    p.add_argument("--lead-in-frames", type=int, default=5)
    p.add_argument("--fork-buffer-secs", type=float, default=2.0)
    p.add_argument("--sound-prefix", default="/usr/share/freeswitch/sounds")
    p.add_argument(
        "--api-delay", type=_api_delay, action="append", default=[], metavar="NAME=SECONDS"
    )
    return p.parse_args(list(argv))


async def serve(
    args: argparse.Namespace,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until ``stop`` is set (or SIGINT/SIGTERM when none is given)."""
    stop = stop or asyncio.Event()
    sim = FreeSwitchSim(
        host=args.esl_host,
        esl_port=args.esl_port,
        password=args.password,
        clock=SimClock(args.speed),
        lead_in_frames=args.lead_in_frames,
        fork_buffer_secs=args.fork_buffer_secs,
        api_delays=dict(args.api_delay),
        sound_prefix=args.sound_prefix,
    )
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if ready is None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
    await sim.start()
    runner = web.AppRunner(build_control_app(sim), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.control_host, args.control_port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else args.control_port
        args.control_port_actual, args.esl_port_actual = port, sim.esl_port  # for port 0
        print(
            f"FreeSWITCH simulator: ESL {sim.esl_host}:{sim.esl_port}, "
            f"control http://{args.control_host}:{port} (speed {args.speed}x)",
            flush=True,
        )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await runner.cleanup()
        await sim.stop()
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


def cli_main(argv: list[str]) -> int:
    """``fsbridge sim freeswitch ...``: parse, serve until interrupted, return the exit code."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help or a usage error
        return int(exc.code or 0)
    try:
        return asyncio.run(serve(args))
    except OSError as exc:
        print(f"fsbridge sim freeswitch: {exc}")
        return 1
