"""A FreeSWITCH box with calls on it, in one asyncio object (the simulator's public face).

``FreeSwitchSim`` runs an inbound Event Socket server on a loopback port that speaks the real wire
format, creates channels on demand (``originate``) that go through the real event sequences and
park, plays ``uuid_broadcast`` / ``sendmsg`` playbacks in real (scaled) time with FreeSWITCH's
queueing, lead-in and break semantics, acts as mod_audio_fork / mod_audio_stream towards a
WebSocket server, and records the truth of every call (``SimChannel.truth``) for tests.

It is an independent implementation of FreeSWITCH's side: nothing here imports the service's
ESL, fork, realtime, call or resampling code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import numpy as np

from fsbridge.audio.wav import read_wav
from fsbridge.sim.clock import SimClock
from fsbridge.sim.fs_api import run_api
from fsbridge.sim.fs_audio import resample
from fsbridge.sim.fs_channel import SimChannel
from fsbridge.sim.fs_core import FsSettings, SimCore
from fsbridge.sim.fs_esl import EslServer
from fsbridge.sim.fs_events import SimEvent
from fsbridge.sim.fs_truth import (
    CallTruth,
    CommandRecord,
    ForkRecord,
    HeardFrame,
    PlaybackRecord,
)

__all__ = [
    "CallTruth",
    "CommandRecord",
    "ForkRecord",
    "FreeSwitchSim",
    "FsSettings",
    "HeardFrame",
    "PlaybackRecord",
    "SimChannel",
    "SimEvent",
]

AudioInput = str | os.PathLike[str] | np.ndarray | None


def _load_audio(audio: AudioInput, rate: int) -> tuple[np.ndarray, int]:
    if audio is None:
        return np.zeros(0, dtype=np.int16), rate
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise ValueError("caller audio must be a mono (1-D) int16 array")
        return np.asarray(audio, dtype=np.int16), rate
    return read_wav(Path(audio))


class FreeSwitchSim:
    """The simulated switch. Settings not named here can be passed as keyword ``FsSettings`` fields."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        esl_port: int = 0,
        password: str = "ClueCon",
        clock: SimClock | None = None,
        lead_in_frames: int = 5,
        fork_buffer_secs: float = 2,
        api_delays: Mapping[str, float] | None = None,
        sound_prefix: str = "/usr/share/freeswitch/sounds",
        stream_metadata_after_frames: int = 2,
        **settings: Any,
    ) -> None:
        fs = FsSettings(
            password=password,
            lead_in_frames=lead_in_frames,
            fork_buffer_secs=fork_buffer_secs,
            api_delays=dict(api_delays or {}),
            sound_prefix=sound_prefix,
            stream_metadata_after_frames=stream_metadata_after_frames,
        )
        for name, value in settings.items():
            if not hasattr(fs, name):
                raise TypeError(f"unknown FreeSwitchSim setting {name!r}")
            setattr(fs, name, value)
        self.clock = clock or SimClock(1.0)
        self.settings = fs
        self.core = SimCore(self.clock, fs)
        self._esl = EslServer(self.core, host, esl_port)
        self._tmp: str | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._started = False

    def __repr__(self) -> str:
        return (
            f"<FreeSwitchSim esl={self._esl.host}:{self._esl.port} calls={len(self.core.channels)}>"
        )

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        if self._started:
            return
        if not self.settings.temp_dir:
            self._tmp = tempfile.mkdtemp(prefix="fsbridge-fs-sim-")
        self.core.temp_dir = self.settings.temp_dir or self._tmp or tempfile.gettempdir()
        self.core.http = aiohttp.ClientSession()
        await self._esl.start()
        if self.settings.heartbeat_s:
            self._heartbeat = asyncio.create_task(self._heartbeats(self.settings.heartbeat_s))
        self._started = True

    async def stop(self) -> None:
        """Hang up every call (SYSTEM_SHUTDOWN), close the ESL clients and the fork sockets."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        await asyncio.gather(*(ch.aclose() for ch in self.core.channels.values()))
        await self._esl.stop()
        if self.core.http is not None:
            await self.core.http.close()
            self.core.http = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._started = False

    async def __aenter__(self) -> FreeSwitchSim:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def esl_port(self) -> int:
        return self._esl.port

    @property
    def esl_host(self) -> str:
        return self._esl.host

    # ------------------------------------------------------------------ calls
    async def originate(
        self,
        profile: str | None = "default",
        caller_audio: AudioInput = None,
        caller_rate: int = 8000,
        caller_delay_s: float = 0.0,
        variables: Mapping[str, str] | None = None,
        caller_id_number: str = "1000",
        caller_id_name: str = "Alice",
        destination: str = "5000",
        channel_rate: int = 8000,
    ) -> str:
        """A new inbound call: dialplan ``set fsbridge_profile`` (unless None), answer, park.

        ``caller_audio`` (WAV path or int16 array at ``caller_rate``) is what the caller says,
        starting ``caller_delay_s`` after the first fork connects; silence before and after.
        """
        if not self._started:
            raise RuntimeError("FreeSwitchSim.start() must be awaited before originate()")
        samples, rate = _load_audio(caller_audio, caller_rate)
        ch = SimChannel(
            self.core,
            profile=profile,
            variables={str(k): str(v) for k, v in (variables or {}).items()},
            caller_id_number=caller_id_number,
            caller_id_name=caller_id_name,
            destination=destination,
            channel_rate=channel_rate,
        )
        if len(samples):
            ch.caller.pending_initial = resample(samples, rate, channel_rate)
            ch.caller.initial_delay_s = max(0.0, caller_delay_s)
        ch.start()
        return ch.uuid

    def channel(self, uuid: str) -> SimChannel:
        try:
            return self.core.channels[uuid]
        except KeyError:
            raise KeyError(f"no call with uuid {uuid!r} on this simulator") from None

    @property
    def channels(self) -> dict[str, SimChannel]:
        return self.core.channels

    async def say(self, uuid: str, audio: AudioInput, rate: int = 8000) -> None:
        """More caller audio, from the next frame on (mixed over anything still playing)."""
        ch = self._live(uuid)
        samples, in_rate = _load_audio(audio, rate)
        ch.caller.add(resample(samples, in_rate, ch.rate), ch.tick + 1)

    async def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING", timeout: float = 5.0) -> None:
        """The caller hangs up; returns once CHANNEL_DESTROY has been fired."""
        ch = self.channel(uuid)
        ch.request_hangup(cause)
        async with asyncio.timeout(timeout):
            await ch.hung_up.wait()

    async def send_dtmf(self, uuid: str, digits: str) -> None:
        """The caller presses keys (DTMF events, one per digit)."""
        self._live(uuid).receive_dtmf(digits)

    def _live(self, uuid: str) -> SimChannel:
        ch = self.channel(uuid)
        if not ch.ready:
            raise ValueError(f"call {uuid} has hung up")
        return ch

    async def api(self, command: str) -> str:
        """Run an API command in-process (as over ESL, but not recorded as an ESL command)."""
        name, _, arg = command.strip().partition(" ")
        return await run_api(self.core, name, arg)

    # ------------------------------------------------------------------ truth
    @property
    def commands(self) -> list[CommandRecord]:
        return self.core.commands

    @property
    def events(self) -> list[SimEvent]:
        return self.core.events

    def now(self) -> float:
        return self.clock.now()

    async def wait_for(
        self, cond: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005
    ) -> Any:
        """Poll ``cond`` (recorded truth) until truthy; TimeoutError after ``timeout`` real seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    async def _heartbeats(self, every: float) -> None:
        n = 0
        while True:
            n += 1
            await self.clock.sleep_until(self.core.started_t + n * every)
            ev = self.core.new_event("HEARTBEAT")
            up = int(self.now() - self.core.started_t)
            for k, v in (
                ("Event-Info", "System Ready"),
                ("Up-Time", f"0 years, 0 days, 0 hours, {up // 60} minutes, {up % 60} seconds"),
                ("FreeSWITCH-Version", "1.10.12-release~64bit"),
                ("Uptime-msec", str(up * 1000)),
                ("Session-Count", str(len(self.core.live_channels()))),
                ("Max-Sessions", "1000"),
                ("Session-Per-Sec", "30"),
                ("Session-Since-Startup", str(self.core.sessions_since_start)),
                ("Idle-CPU", "99.000000"),
            ):
                ev.add(k, v)
            with contextlib.suppress(Exception):
                self.core.fire(ev)
