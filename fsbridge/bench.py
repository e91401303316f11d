"""``fsbridge bench``: the figures behind the defaults, measured against the simulators.

1. Resampling: µs per 20 ms frame for each engine and direction (``fsbridge.bench_resample``).
2. Chunk files: the cost of one atomic chunk write on the event loop.
3. Injection: ``sendmsg`` vs ``uuid_broadcast`` over several real-time turns at 4× delivery —
   first delta → first sample heard, gaps between files beyond the fixed lead-in, files per reply.
4. Load: N concurrent calls through a ``fsbridge serve`` subprocess — its CPU per call and memory.

Everything runs on this machine, at 1× simulated time; figures are medians (and p95 where the
target is a tail). Ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml

from .audio.wav import read_wav, write_wav_atomic
from .config import ASSETS, parse_config
from .demo import ReplyFigures, free_port, truth_report
from .logs import setup_logging
from .service import Service
from .sim.clock import SimClock
from .sim.freeswitch import FreeSwitchSim
from .sim.realtime import RealtimeSim, Reply

__all__ = ["main"]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def bench_chunk_writes(n: int = 200) -> dict[str, float]:
    """Median µs for write_wav_atomic of a 1 s chunk at 8 and 16 kHz (in a temp dir)."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rate in (8000, 16000):
            pcm = (np.random.default_rng(1).normal(0, 3000, rate)).astype("<i2").tobytes()
            times = []
            for i in range(n):
                t = time.perf_counter()
                write_wav_atomic(Path(tmp) / f"c{i}.wav", pcm, rate)
                times.append((time.perf_counter() - t) * 1e6)
            out[f"{rate // 1000}k_1s_us"] = statistics.median(times)
    return out


def _config(fs: FreeSwitchSim, rt: RealtimeSim, chunk_dir: str, **fs_over: Any) -> dict[str, Any]:
    port = free_port()
    return {
        "listen": {"host": "127.0.0.1", "port": port, "public_url": f"ws://127.0.0.1:{port}"},
        "freeswitch": {
            "host": "127.0.0.1",
            "port": fs.esl_port,
            "password": "ClueCon",
            "chunk_dir": chunk_dir,
            **fs_over,
        },
        "realtime": {"url": rt.url, "api_key": "sk-bench"},
        "logging": {"level": "warning"},
        "admin": {"port": 0},
    }


async def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: timed out")
        await asyncio.sleep(0.02)


async def bench_injection(method: str, turns: int) -> list[ReplyFigures]:
    """Several caller turns on one call; figures per reply from the simulators' truth."""
    clock = SimClock(1.0)
    reply = read_wav(ASSETS / "reply-en-short-24k.wav")[0]
    utterance, urate = read_wav(ASSETS / "caller-en-interrupt-8k.wav")
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            FreeSwitchSim(clock=clock) as fs,
            RealtimeSim(clock=clock, replies=[Reply(audio=reply)], delivery_speed=4.0) as rt,
        ):
            config = parse_config(
                _config(fs, rt, str(Path(tmp) / "chunks"), injection=method), env={}
            )
            service = Service(config)
            stop = asyncio.Event()
            task = asyncio.create_task(service.run(stop))
            try:
                await asyncio.wait_for(service.ready.wait(), 10)
                uuid = await fs.originate(
                    profile="english", caller_audio=utterance, caller_rate=urate, caller_delay_s=0.2
                )
                for turn in range(turns):
                    await _wait(
                        lambda t=turn: (
                            len(rt.sessions) == 1
                            and len(rt.sessions[0].responses) > t
                            and rt.sessions[0].responses[t].done_t is not None
                        ),
                        30,
                    )
                    call = service.calls[uuid]
                    await _wait(lambda c=call: not c.playout.busy, 30)
                    await asyncio.sleep(0.3)
                    if turn + 1 < turns:
                        await fs.say(uuid, utterance, rate=urate)
                figures = truth_report(fs, uuid, rt)
                await fs.hangup(uuid)
                await _wait(lambda: uuid not in service.calls, 10)
            finally:
                stop.set()
                await task
    return figures


async def _wait_ready(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError("bench: fsbridge serve did not become ready")
            await asyncio.sleep(0.05)


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def bench_load(n_calls: int, seconds: float = 12.0) -> dict[str, float]:
    """N concurrent calls through a ``fsbridge serve`` subprocess: its CPU and memory."""
    clock = SimClock(1.0)
    reply = read_wav(ASSETS / "reply-en-short-24k.wav")[0]
    utterance, urate = read_wav(ASSETS / "caller-en-hello-8k.wav")
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            FreeSwitchSim(clock=clock) as fs,
            RealtimeSim(clock=clock, replies=[Reply(audio=reply)]) as rt,
        ):
            cfg = _config(fs, rt, str(Path(tmp) / "chunks"))
            path = Path(tmp) / "fsbridge.yaml"
            path.write_text(yaml.safe_dump(cfg))
            env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
                [sys.executable, "-m", "fsbridge.cli", "serve", "--config", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            try:
                await _wait_ready(cfg["listen"]["port"], 15)
                cpu0 = _proc_cpu_s(proc.pid)
                t0 = time.monotonic()
                uuids = [
                    await fs.originate(
                        profile="english",
                        caller_audio=utterance,
                        caller_rate=urate,
                        caller_delay_s=0.3,
                    )
                    for _ in range(n_calls)
                ]
                await asyncio.sleep(seconds)
                cpu = _proc_cpu_s(proc.pid) - cpu0
                wall = time.monotonic() - t0
                rss = _proc_rss_mb(proc.pid)
                answered = sum(
                    1 for s in rt.sessions if any(r.done_t is not None for r in s.responses)
                )
                for u in uuids:
                    with contextlib.suppress(Exception):
                        await fs.hangup(u)
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(15)
    return {
        "calls": n_calls,
        "answered": answered,
        "cpu_percent_total": 100 * cpu / wall,
        "cpu_percent_per_call": 100 * cpu / wall / n_calls,
        "rss_mb": rss,
    }


def _print_injection(name: str, figures: list[ReplyFigures], lead_in_ms: float) -> None:
    lat = [f.first_audio_ms for f in figures if f.first_audio_ms is not None]
    gaps = [g for f in figures for g in f.gaps_ms]
    extra = [max(0.0, g - lead_in_ms) for g in gaps]
    files = [f.files for f in figures]
    audio_s = [f.audio_ms / 1000 for f in figures]
    boundaries = [
        max(0, f.files - 1) / max(1e-9, (f.audio_ms / 1000)) * 2 for f in figures if f.audio_ms
    ]
    print(
        f"  {name:<10} first audio p50 {pct(lat, 50):6.0f} ms  p95 {pct(lat, 95):6.0f} ms | "
        f"gaps p50 {pct(gaps, 50):5.0f} ms  max {max(gaps, default=0):5.0f} ms "
        f"(beyond lead-in max {max(extra, default=0):4.0f} ms) | files/reply "
        f"{statistics.median(files) if files else 0:.0f} for {statistics.median(audio_s) if audio_s else 0:.1f} s"
        f" | boundaries per 2 s {statistics.median(boundaries) if boundaries else 0:.2f}"
    )


def main(args: argparse.Namespace) -> int:
    setup_logging("warning", "text")
    from .bench_resample import run_resampler_bench

    print("fsbridge bench — medians on this machine\n")
    print("1. resampling, µs per 20 ms frame:")
    for key, value in run_resampler_bench(quick=args.quick).items():
        print(f"  {key:<40} {value}")
    print("\n2. chunk file write (write_wav_atomic, on the event loop):")
    for key, value in bench_chunk_writes(50 if args.quick else 200).items():
        print(f"  {key:<12} {value:8.1f} µs")
    turns = 2 if args.quick else 4
    print(f"\n3. injection, {turns} replies of 4.3 s at 4x delivery, 1x clock:")
    results = {m: asyncio.run(bench_injection(m, turns)) for m in ("sendmsg", "broadcast")}
    for method, figures in results.items():
        _print_injection(method, figures, 100.0 if method == "broadcast" else 0.0)
    print(f"\n4. load: {args.calls} concurrent calls through `fsbridge serve`:")
    load = asyncio.run(bench_load(args.calls, 8.0 if args.quick else 12.0))
    print(
        f"  answered {load['answered']}/{load['calls']}; bridge CPU {load['cpu_percent_total']:.1f} % "
        f"of one core in all, {load['cpu_percent_per_call']:.2f} % per call; RSS {load['rss_mb']:.0f} MB"
    )
    return 0
