"""End-to-end fixtures: both simulators in the test process, ``fsbridge serve`` as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from fsbridge.audio.wav import read_wav
from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import RealtimeSim, Reply

ASSETS = Path(__file__).resolve().parents[2] / "fsbridge" / "assets"


def asset(name: str) -> tuple[np.ndarray, int]:
    return read_wav(ASSETS / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Bridge:
    """A running ``fsbridge serve`` subprocess and what it was started with."""

    proc: subprocess.Popen[bytes]
    port: int
    config_path: Path
    chunk_dir: Path
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_no_calls(bridge: Bridge, timeout: float = 10.0) -> None:
    """Until the bridge's ``/calls`` is empty: a call leaves it once its cleanup is over, an ESL
    round trip or so after its fork and Realtime session have closed."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(bridge.base + "/calls") as resp:
                if await resp.json() == []:
                    return
            assert time.monotonic() < deadline, "call still listed in /calls"
            await asyncio.sleep(0.05)


async def wait_ready(bridge: Bridge, timeout: float = 15.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if bridge.proc.poll() is not None:
                raise AssertionError(f"fsbridge exited early:\n{bridge.log()}")
            try:
                async with http.get(bridge.base + "/readyz") as resp:
                    if resp.status == status:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz never answered {status}:\n{bridge.log()}")
            await asyncio.sleep(0.05)


def start_bridge(
    tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Bridge:
    port = config["listen"]["port"]
    chunk_dir = Path(config["freeswitch"]["chunk_dir"])
    path = tmp_path / "fsbridge.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "fsbridge.log"
    full_env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY",)}
    full_env.update(env or {})
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fsbridge.cli", "serve", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    return Bridge(proc, port, path, chunk_dir, log_path)


async def stop_bridge(bridge: Bridge) -> int:
    """SIGTERM, then wait without blocking the loop: the simulators live on it and must answer the
    bridge's last ESL commands while it drains. Killed if it has not exited after 20 s."""
    if bridge.proc.poll() is None:
        bridge.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(bridge.proc.wait), 20)
        except TimeoutError:
            bridge.proc.kill()
            await asyncio.to_thread(bridge.proc.wait, 5)
    return bridge.proc.returncode


def base_config(
    tmp_path: Path, fs: FreeSwitchSim, rt: RealtimeSim | None, **over: Any
) -> dict[str, Any]:
    port = free_port()
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port, "public_url": f"ws://127.0.0.1:{port}"},
        "freeswitch": {
            "host": "127.0.0.1",
            "port": fs.esl_port,
            "password": "ClueCon",
            "fork_rate": 8000,
            "chunk_dir": str(tmp_path / "chunks"),
        },
        "realtime": {
            "url": rt.url if rt else "ws://127.0.0.1:1/v1/realtime",
            "model": "gpt-realtime",
            "api_key": "sk-test-key-123",
        },
        "logging": {"level": "info", "format": "json"},
        "service": {"drain_timeout_s": 3},
        "admin": {"port": 0},
        "profiles": {
            "english": {
                "instructions": "You are a test assistant.",
                "voice": "marin",
                "greeting": str(ASSETS / "greeting-en-8k.wav"),
                "apology": str(ASSETS / "apology-en-8k.wav"),
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            }
        },
    }
    for section, values in over.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture
async def clock() -> SimClock:
    return SimClock(1.0)


@pytest.fixture
async def fs(clock: SimClock) -> AsyncIterator[FreeSwitchSim]:
    async with FreeSwitchSim(clock=clock, password="ClueCon") as sim:
        yield sim


@pytest.fixture
async def rt(clock: SimClock) -> AsyncIterator[RealtimeSim]:
    reply, _ = asset("reply-en-short-24k.wav")
    async with RealtimeSim(
        clock=clock, replies=[Reply(audio=reply, transcript="a short reply")]
    ) as sim:
        yield sim
