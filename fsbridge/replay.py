"""``fsbridge replay TRACE``: a recorded call played back on this laptop, against this build.

The simulated FreeSWITCH plays the caller's recorded audio (the 24 kHz audio the bridge appended,
from the moment the fork connected) and a recorded-peer Realtime server sends the model's recorded
server events — audio deltas, VAD events, response.done — at their recorded times, whatever the
bridge sends it. The real ``Service``, configured like the recorded call (profile, injection, fork
rate, chunking), runs in between and is traced too. Then the two traces' commands are compared:
the ESL commands the call issued and the Realtime client events it sent (appends excepted), with
per-call noise (uuids, ports, chunk paths, random credentials) taken out. A production barge-in or
clipping bug reproduces as the same sequence of breaks, truncates and chunks; a fix shows up as the
difference it makes.

Like ``demo``, this module imports both the service and the simulators; the service never imports
it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .audio.wav import write_wav
from .call.player import chunk_id_of
from .config import parse_config
from .demo import free_port
from .logs import setup_logging
from .service import Service
from .sim.freeswitch import FreeSwitchSim
from .trace import Trace, TraceError, load_trace
from .trace_diff import PROMPTS, Cmd, Diff, commands_of, diff

__all__ = [
    "Cmd",
    "Diff",
    "RecordedRealtime",
    "ReplayResult",
    "commands_of",
    "diff",
    "main",
    "realtime_sessions",
    "replay",
]


# -- the recorded peer -----------------------------------------------------------------------------
class RecordedRealtime:
    """A WebSocket server that plays each connection the next recorded session's server events."""

    def __init__(self, sessions: Sequence[Sequence[tuple[float, dict[str, Any]]]]) -> None:
        self.sessions = [list(s) for s in sessions]
        self.received: list[dict[str, Any]] = []
        self._next = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    async def __aenter__(self) -> RecordedRealtime:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        script = self.sessions[self._next] if self._next < len(self.sessions) else []
        self._next += 1
        sender = asyncio.create_task(self._play(ws, script))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        self.received.append(json.loads(msg.data))
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return ws

    @staticmethod
    async def _play(ws: web.WebSocketResponse, script: list[tuple[float, dict[str, Any]]]) -> None:
        t0 = time.monotonic()
        for t, event in script:
            delay = t0 + t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if ws.closed:
                return
            await ws.send_str(json.dumps(event))


def realtime_sessions(trace: Trace) -> list[list[tuple[float, dict[str, Any]]]]:
    """The recorded server events, split into sessions at each session.created, times relative."""
    sessions: list[list[tuple[float, dict[str, Any]]]] = []
    t0 = 0.0
    for rec in trace.of("rt"):
        if rec.get("dir") != "in":
            continue
        event = trace.restored(rec["event"])
        if event.get("type") == "session.created" or not sessions:
            sessions.append([])
            t0 = rec["t"]
        sessions[-1].append((rec["t"] - t0, event))
    return sessions


# -- running ---------------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    trace: Path
    new_trace: Path | None
    old: list[Cmd]
    new: list[Cmd]
    diff: Diff

    def text(self) -> str:
        head = (
            f"replayed {self.trace}: {sum(c.stream == 'esl' for c in self.old)} ESL commands, "
            f"{sum(c.stream == 'rt' for c in self.old)} Realtime client events recorded"
        )
        if self.diff.same:
            body = ["no differences"]
        else:
            body = ["the new run differs (- recorded, + this build):", *self.diff.lines]
        if self.diff.moved:
            body += ["timing (not counted as differences):", *self.diff.moved]
        return "\n".join([head, *body])


def _prompt_stand_ins(trace: Trace, tmp: Path) -> dict[str, str]:
    """Prompt files of the recording that do not exist here: silence of the recorded length."""
    profile = trace.meta.get("profile") or {}
    starts: dict[str, float] = {}
    lengths: dict[str, float] = {}
    for rec in trace.of("esl_event"):
        cid = chunk_id_of(rec.get("headers") or {})
        if rec.get("name") == "PLAYBACK_START" and cid:
            starts[cid] = rec["t"]
        elif rec.get("name") == "PLAYBACK_STOP" and cid in starts:
            lengths[cid] = rec["t"] - starts[cid]
    out: dict[str, str] = {}
    rate = int((trace.meta.get("config") or {}).get("freeswitch", {}).get("fork_rate", 8000))
    for key in PROMPTS:
        path = profile.get(key)
        if path and not Path(path).exists():
            stand_in = tmp / f"{key}.wav"
            write_wav(stand_in, np.zeros(int(lengths.get(key, 2.0) * rate), np.int16), rate)
            out[key] = str(stand_in)
    return out


def _config(trace: Trace, fs: FreeSwitchSim, rt: RecordedRealtime, tmp: Path) -> dict[str, Any]:
    meta = trace.meta
    rec = meta.get("config") or {}
    fsw = dict(rec.get("freeswitch") or {})
    port = free_port()
    profile = {**(meta.get("profile") or {}), **_prompt_stand_ins(trace, tmp), "trace": True}
    keep = ("fork_rate", "fork_module", "injection", "command_timeout_s")
    return {
        "listen": {"host": "127.0.0.1", "port": port, "public_url": f"ws://127.0.0.1:{port}"},
        "freeswitch": {
            **{k: fsw[k] for k in keep if k in fsw},
            "host": "127.0.0.1",
            "port": fs.esl_port,
            "password": "ClueCon",
            "chunk_dir": str(tmp / "chunks"),
        },
        "realtime": {
            "url": rt.url,
            "model": (rec.get("realtime") or {}).get("model", "gpt-realtime"),
            "api_key": "sk-replay-not-a-key",
        },
        "audio": rec.get("audio") or {},
        "playback": rec.get("playback") or {},
        "admin": {"host": "127.0.0.1", "port": 0},
        "service": {"drain_timeout_s": 0.0},
        "traces": {"dir": str(tmp / "traces")},
        "logging": {"level": "warning"},
        "profiles": {str(meta.get("profile_name", "default")): profile},
    }


def _caller_audio(trace: Trace) -> np.ndarray:
    data = trace.audio.get("caller.wav", b"")
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.int16)


def _hangup_at(trace: Trace) -> float | None:
    """When the caller hung up (trace time), if the recorded call ended that way."""
    end = next(trace.of("end"), None)
    if end is None or (end.get("summary") or {}).get("outcome") != "hangup":
        return None
    hangup = next((r for r in trace.of("esl_event") if r.get("name") == "CHANNEL_HANGUP"), None)
    return hangup["t"] if hangup else end["t"]


async def replay(
    path: Path, *, out: Path | None = None, timing_ms: float | None = None
) -> ReplayResult:
    trace = load_trace(path)
    meta = trace.meta
    fork_rate = int((meta.get("config") or {}).get("freeswitch", {}).get("fork_rate", 8000))
    recorded_end = max((r["t"] for r in trace.records), default=0.0)
    with tempfile.TemporaryDirectory(prefix="fsbridge-replay-") as tmpdir:
        tmp = Path(tmpdir)
        async with (
            FreeSwitchSim(password="ClueCon") as fs,
            RecordedRealtime(realtime_sessions(trace)) as rt,
        ):
            config = parse_config(_config(trace, fs, rt, tmp), env={})
            service = Service(config)
            stop = asyncio.Event()
            task = asyncio.create_task(service.run(stop), name="replay-service")
            try:
                await asyncio.wait_for(service.ready.wait(), 10)
                uuid = await fs.originate(
                    profile=str(meta.get("profile_name", "default")),
                    caller_audio=_caller_audio(trace),
                    caller_rate=24000,
                    caller_id_number=str(
                        (meta.get("channel") or {}).get("Caller-Caller-ID-Number", "1000")
                    ),
                    channel_rate=fork_rate,
                )
                await _until(lambda: uuid in service.calls, 10)
                t0 = time.monotonic()
                hangup_t = _hangup_at(trace)
                if hangup_t is not None:
                    await _until(lambda: uuid not in service.calls, hangup_t, quiet=True)
                    if uuid in service.calls:
                        await fs.hangup(uuid)
                remaining = recorded_end + 10 - (time.monotonic() - t0)
                await _until(lambda: uuid not in service.calls, max(remaining, 1.0))
            finally:
                stop.set()
                await task
        new_dir = next(iter(sorted((tmp / "traces").glob("*"))), None)
        new_trace = load_trace(new_dir) if new_dir else None
        kept: Path | None = None
        if out is not None and new_dir is not None:
            out.mkdir(parents=True, exist_ok=True)
            kept = out / new_dir.name
            shutil.copytree(new_dir, kept, dirs_exist_ok=True)
    old_cmds = commands_of(trace)
    new_cmds = commands_of(new_trace) if new_trace else []
    return ReplayResult(
        path, kept, old_cmds, new_cmds, diff(old_cmds, new_cmds, timing_ms=timing_ms)
    )


async def _until(cond: Any, timeout: float, *, quiet: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            if quiet:
                return
            raise TimeoutError(f"replay: timed out after {timeout:.0f} s")
        await asyncio.sleep(0.02)


def main(args: argparse.Namespace) -> int:
    setup_logging("warning", "text")
    try:
        result = asyncio.run(replay(args.trace, out=args.out, timing_ms=args.timing))
    except TraceError as exc:
        print(f"fsbridge: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"fsbridge: {exc}", file=sys.stderr)
        return 1
    if args.json:
        body = {
            "trace": str(result.trace),
            "same": result.diff.same,
            "differences": result.diff.lines,
            "moved": result.diff.moved,
            "new_trace": str(result.new_trace) if result.new_trace else None,
        }
        print(json.dumps(body, indent=2))
    else:
        print(result.text())
    return 0 if result.diff.same else 1
