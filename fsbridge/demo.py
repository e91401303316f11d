"""``fsbridge demo``: the whole call path on one machine.

The real bridge (the same ``Service`` that ``fsbridge serve`` runs) against a simulated FreeSWITCH
(ESL + mod_audio_fork + playback) and a simulated OpenAI Realtime — or the real one with
``--real-model`` and ``OPENAI_API_KEY``. One simulated caller dials, hears the greeting, asks a
question and hears the answer; the demo writes what the caller heard to ``heard.wav`` and prints the
figures that matter: first-audio latency, gaps inside the reply, files, turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .audio.wav import read_wav
from .config import ASSETS, parse_config
from .logs import setup_logging
from .service import Service
from .sim.clock import SimClock
from .sim.freeswitch import FreeSwitchSim
from .sim.realtime import RealtimeSim, Reply

__all__ = ["DemoReport", "free_port", "main", "run_demo", "truth_report"]

CALLER_AUDIO = {"default": "caller-tr-merhaba-8k.wav", "english": "caller-en-hello-8k.wav"}
CALLER_AUDIO_16K = {"english": "caller-en-hello-16k.wav"}
REPLY_AUDIO = {"default": "reply-tr-24k.wav", "english": "reply-en-short-24k.wav"}


@dataclass
class ReplyFigures:
    first_audio_ms: float | None
    files: int
    audio_ms: float
    gaps_ms: list[float] = field(default_factory=list)


@dataclass
class DemoReport:
    profile: str
    model: str
    injection: str
    fork_rate: int
    turns: int
    greeting_heard: bool
    replies: list[ReplyFigures]
    heard_wav: str
    heard_s: float
    call_summary: dict[str, Any]

    def text(self) -> str:
        lines = [
            f"fsbridge demo: profile={self.profile} model={self.model} "
            f"injection={self.injection} fork_rate={self.fork_rate}",
            f"  greeting heard: {'yes' if self.greeting_heard else 'NO'}",
            f"  turns: {self.turns}",
        ]
        for i, r in enumerate(self.replies, 1):
            lat = f"{r.first_audio_ms:.0f} ms" if r.first_audio_ms is not None else "n/a"
            gaps = ", ".join(f"{g:.0f}" for g in r.gaps_ms) or "none"
            lines.append(
                f"  reply {i}: first audio {lat} after the first delta; {r.audio_ms / 1000:.2f} s "
                f"of audio in {r.files} file(s); gaps between files (ms): {gaps}"
            )
        lines.append(f"  caller heard {self.heard_s:.2f} s of audio -> {self.heard_wav}")
        return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def truth_report(fs: FreeSwitchSim, uuid: str, rt: RealtimeSim | None) -> list[ReplyFigures]:
    """Per reply figures from the simulators' recorded truth (one clock for both)."""
    truth = fs.channel(uuid).truth
    chunks = [p for p in truth.playbacks if "fsbridge_chunk" in (p.params or {})]
    chunks = [
        p
        for p in chunks
        if not str(p.params.get("fsbridge_chunk", "")).startswith(("greeting", "apology"))
    ]
    replies: list[ReplyFigures] = []
    responses = rt.sessions[0].responses if rt and rt.sessions else []
    if not responses:
        if chunks:
            replies.append(_figures(truth, chunks, None))
        return replies
    for i, resp in enumerate(responses):
        t0 = resp.first_delta_t
        t1 = responses[i + 1].first_delta_t if i + 1 < len(responses) else None
        mine = [
            p
            for p in chunks
            if t0 is not None and p.queued_t >= t0 and (t1 is None or p.queued_t < t1)
        ]
        replies.append(_figures(truth, mine, t0))
    return replies


def _figures(truth: Any, chunks: list[Any], first_delta_t: float | None) -> ReplyFigures:
    started = [p for p in chunks if p.start_t is not None]
    first_heard = None
    paths = {p.path for p in started}
    for frame in truth.heard:
        if frame.source in paths or any(frame.source.endswith(x) for x in paths):
            first_heard = frame.t
            break
    lat = (first_heard - first_delta_t) * 1000 if first_heard and first_delta_t else None
    gaps = [
        (b.start_t - a.stop_t) * 1000
        for a, b in itertools.pairwise(started)
        if a.stop_t is not None and a.status == "done"
    ]
    audio_ms = (
        sum(len(f.samples) for f in truth.heard if f.source in paths) / truth_rate(truth) * 1000
    )
    return ReplyFigures(lat, len(started), audio_ms, gaps)


def truth_rate(truth: Any) -> int:
    return getattr(truth, "rate", 8000) or 8000


async def run_demo(
    out: Path,
    *,
    profile: str = "default",
    fork_rate: int = 8000,
    injection: str | None = None,
    real_model: bool = False,
    progress: bool = True,
) -> DemoReport:
    out.mkdir(parents=True, exist_ok=True)
    clock = SimClock(1.0)
    caller_name = (CALLER_AUDIO_16K if fork_rate == 16000 else {}).get(
        profile, CALLER_AUDIO[profile]
    )
    caller, caller_rate = read_wav(ASSETS / caller_name)
    rt_sim: RealtimeSim | None = None
    with tempfile.TemporaryDirectory(prefix="fsbridge-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            fs = await stack.enter_async_context(FreeSwitchSim(clock=clock, password="ClueCon"))
            realtime: dict[str, Any] = {"model": "gpt-realtime"}
            if real_model:
                if not os.environ.get("OPENAI_API_KEY"):
                    raise SystemExit("fsbridge demo --real-model needs OPENAI_API_KEY")
            else:
                reply = read_wav(ASSETS / REPLY_AUDIO[profile])[0]
                rt_sim = await stack.enter_async_context(
                    RealtimeSim(
                        clock=clock, replies=[Reply(audio=reply, transcript="(demo reply)")]
                    )
                )
                realtime.update(url=rt_sim.url, api_key="sk-demo-not-a-key")
            port = free_port()
            data: dict[str, Any] = {
                "listen": {
                    "host": "127.0.0.1",
                    "port": port,
                    "public_url": f"ws://127.0.0.1:{port}",
                },
                "freeswitch": {
                    "host": "127.0.0.1",
                    "port": fs.esl_port,
                    "password": "ClueCon",
                    "fork_rate": fork_rate,
                    "chunk_dir": str(Path(tmp) / "chunks"),
                },
                "realtime": realtime,
                "logging": {"level": "warning"},
                "admin": {"port": 0},
            }
            if injection:
                data["freeswitch"]["injection"] = injection
            env = {"OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "")} if real_model else {}
            config = parse_config(data, env=env)
            service = Service(config)
            stop = asyncio.Event()
            svc_task = asyncio.create_task(service.run(stop), name="service")
            try:
                await asyncio.wait_for(service.ready.wait(), 10)
                greeting_s = _duration(config.profiles[profile].greeting)
                uuid = await fs.originate(
                    profile=profile,
                    caller_audio=caller,
                    caller_rate=caller_rate,
                    caller_delay_s=greeting_s + 0.6,
                    channel_rate=fork_rate,
                )
                await _wait_for_answer(service, uuid, progress, clock)
                await fs.hangup(uuid)
                await _wait(lambda: uuid not in service.calls, 10)
            finally:
                stop.set()
                await svc_task
            summary = next((s.as_dict() for s in service.finished if s.uuid == uuid), {})
            truth = fs.channel(uuid).truth
            heard_path = out / "heard.wav"
            truth.write_heard_wav(heard_path)
            heard = truth.heard_audio()
            rate = truth_rate(truth)
            replies = truth_report(fs, uuid, rt_sim)
            greeting_heard = any("greeting" in (f.source or "") for f in truth.heard)
    report = DemoReport(
        profile=profile,
        model="simulated" if not real_model else config.realtime.model,
        injection=config.freeswitch.injection,
        fork_rate=fork_rate,
        turns=int(summary.get("turns", 0)),
        greeting_heard=greeting_heard,
        replies=replies,
        heard_wav=str(heard_path),
        heard_s=float((abs(heard) > 0).sum()) / rate if len(heard) else 0.0,
        call_summary=summary,
    )
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    return report


def _duration(path: str | None) -> float:
    if not path:
        return 0.0
    samples, rate = read_wav(path)
    return len(samples) / rate


async def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("demo: timed out")
        await asyncio.sleep(0.05)


async def _wait_for_answer(service: Service, uuid: str, progress: bool, clock: SimClock) -> None:
    """Until the first reply has been played out in full (or 60 s)."""
    await _wait(lambda: uuid in service.calls, 10)
    deadline = time.monotonic() + 60
    quiet_since: float | None = None
    tty = sys.stderr.isatty()
    last_state = ""
    while time.monotonic() < deadline:
        call = service.calls.get(uuid)
        if call is None:
            return
        if progress:
            line = f"  t={clock.now():5.1f}s state={call.state:<10} turns={call.summary.turns}"
            if tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
            elif call.state != last_state:  # not a terminal: one line per state change
                print(line, file=sys.stderr, flush=True)
            last_state = call.state
        done = call.summary.turns >= 1 and not call.playout.busy and call.state == "listening"
        if done:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                break
        else:
            quiet_since = None
        await asyncio.sleep(0.1)
    if progress and tty:
        print(file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    setup_logging("warning", "text")
    report = asyncio.run(
        run_demo(
            args.out,
            profile=args.profile,
            fork_rate=args.rate,
            injection=args.injection,
            real_model=args.real_model,
            progress=not args.quiet,
        )
    )
    print(report.text())
    ok = report.greeting_heard and report.turns >= 1 and report.heard_s > 0
    return 0 if ok else 1
