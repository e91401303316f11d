"""The caller's side of a call: the fork, the local speech gate, the keypad (a part of ``Call``).

The fork is started with one-time credentials and accepted when mod_audio_fork connects; its frames
go to the uplink unchanged, through the local speech gate on the way when the profile has one (local
barge-in, or end of turn without server VAD). DTMF keys are collected on the call for tools and,
per profile, sent to the model as text (a burst of keys as one message); with ``turn_detection:
none`` the commit key ends the caller's turn. Only ever mixed into :class:`fsbridge.call.call.Call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from base64 import b64encode
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..audio.resample import make_resampler
from ..audio.wav import WavError, read_wav
from ..realtime import protocol as rtp
from .uplink import run_uplink

if TYPE_CHECKING:
    from ..config import Config, Profile
    from ..fork.server import ForkServer, ForkStream
    from .downlink import Playout
    from .gate import EchoReference, GateEvent, SpeechGate
    from .observer import CallObserver
    from .renewal import RealtimeLink
    from .summary import CallSummary, EslLink
    from .transcript import Transcript
    from .uplink import UplinkStats
    from .watchdog import Watchdog

__all__ = ["DTMF_GROUP_S", "CallerMixin"]

FORK_CONNECT_TIMEOUT_S = 10.0

log = logging.getLogger("fsbridge.call")

DTMF_KEYS = frozenset("0123456789*#ABCD")
DTMF_GROUP_S = 0.3  # keys pressed this close together go to the model as one message


class CallerMixin:
    # provided by Call
    uuid: str
    profile_name: str
    profile: Profile
    config: Config
    esl: EslLink
    fork_server: ForkServer
    rate: int
    summary: CallSummary
    observer: CallObserver
    playout: Playout
    transcript: Transcript
    digits: str
    _link: RealtimeLink | None
    _stream: ForkStream | None
    _gate: SpeechGate | None
    _echo: EchoReference | None
    _local_turns: bool
    _local_barged: bool
    _fork_failed: str | None
    _hungup: asyncio.Event
    _wake: asyncio.Event
    _dtmf: asyncio.Queue[str]
    _watchdog: Watchdog
    _uplink_stats: UplinkStats

    if TYPE_CHECKING:

        @property
        def _rt(self) -> RealtimeLink | None: ...
        async def barge_in(self, received: float | None = None) -> None: ...
        async def _play_file(self, path: str, chunk_id: str) -> float: ...
        def _set_state(self, state: str) -> None: ...
        def _caller(self) -> str: ...
        async def _send(self, event: dict) -> None: ...
        async def _ask(self, instructions: str | None, tag: str) -> None: ...
        def _greeting_protected(self) -> bool: ...
        def _t(self) -> float: ...

    # -- the fork ----------------------------------------------------------------------------------
    async def _start_fork_and_greeting(self) -> None:
        fs = self.config.freeswitch
        user, password = f"fsb-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        self.fork_server.expect(self.uuid, user, password)
        if fs.fork_module == "audio_fork":
            await self.esl.api(
                f"uuid_setvar_multi {self.uuid} "
                f"MOD_AUDIO_BASIC_AUTH_USERNAME={user};MOD_AUDIO_BASIC_AUTH_PASSWORD={password}"
            )
        else:
            token = b64encode(f"{user}:{password}".encode()).decode()
            headers = json.dumps({"Authorization": f"Basic {token}"}, separators=(",", ":"))
            await self.esl.api(f"uuid_setvar {self.uuid} STREAM_EXTRA_HEADERS {headers}")
        if self.profile.greeting_mode == "file" and self.profile.greeting:
            await self._play_file(self.profile.greeting, "greeting")
            self._set_state("greeting")
        url = f"{self.config.listen.public_url}/fork/{self.uuid}"
        rate = "16k" if self.rate == 16000 else "8k"
        metadata = json.dumps(
            {"uuid": self.uuid, "profile": self.profile_name, "caller": self._caller()},
            separators=(",", ":"),
            ensure_ascii=True,
        ).replace("\\", "")
        command = "uuid_audio_fork" if fs.fork_module == "audio_fork" else "uuid_audio_stream"
        await self.esl.api(f"{command} {self.uuid} start {url} mono {rate} {metadata}")

    async def _accept_fork(self) -> ForkStream | None:
        """Wait for mod_audio_fork to connect. A ``connect_failed`` event forgets the slot, which
        wakes this wait at once (KeyError); a hangup cancels the task that runs it."""
        try:
            return await self.fork_server.accept(self.uuid, timeout=FORK_CONNECT_TIMEOUT_S)
        except KeyError:
            log.error("fork could not connect: %s", self._fork_failed or "slot forgotten")
        except TimeoutError:
            log.error("fork did not connect within %.0f s", FORK_CONNECT_TIMEOUT_S)
        return None

    async def _uplink(self) -> None:
        stream = await self._accept_fork()
        if stream is None:
            return
        self._stream = stream
        self.observer.fork_audio(self, stream.metadata)
        self._wake.set()
        assert self._link is not None
        frames = stream.frames() if self._gate is None else self._gated(stream.frames())
        await run_uplink(
            frames,
            make_resampler(self.rate, 24000, self.config.audio.resampler),
            self._link.send_audio,
            window_ms=self.config.audio.append_window_ms,
            stats=self._uplink_stats,
            on_held=lambda ms: self.observer.uplink_latency(self, ms),  # type: ignore[arg-type]
        )

    # -- the local speech gate --------------------------------------------------------------------
    async def _gated(self, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The fork's frames, unchanged, through the local speech gate on the way."""
        gate = self._gate
        assert gate is not None
        async for frame in frames:
            for event in gate.feed(frame, time.monotonic()):
                await self._on_gate(event)
            yield frame

    async def _on_gate(self, event: GateEvent) -> None:
        self._wake.set()
        if event.kind == "speech_start":
            self._watchdog.caller_spoke()
            lb = self.profile.local_barge_in
            if lb.enabled and self.playout.busy and not self._greeting_protected():
                self._local_barged = True
                self.summary.local_barge_ins += 1
                await self.barge_in(received=event.t)
        else:
            self._local_barged = False
            if self._local_turns:
                await self._commit_turn("end of speech")

    async def _commit_turn(self, why: str) -> None:
        """No server VAD: the bridge ends the caller's turn and asks for the reply."""
        if self._rt is None:
            return
        log.info("caller's turn committed (%s)", why)
        await self._send(rtp.input_audio_commit())
        await self._ask(None, "turn")

    def _echo_started(self, chunk_id: str) -> None:
        """Remember what the caller starts hearing now, for the gate's echo check."""
        if self._echo is None:
            return
        chunk = self.playout.ledger.get(chunk_id)
        if chunk is None:
            return
        try:
            samples, rate = read_wav(chunk.path)  # one small file per chunk start
        except (WavError, OSError):
            return
        if rate == self.rate:
            self._echo.play(samples, time.monotonic())

    # -- the keypad ---------------------------------------------------------------------------------
    def _on_dtmf(self, digit: str) -> None:
        digit = digit.strip().upper()
        if len(digit) != 1 or digit not in DTMF_KEYS:
            return
        self.digits = (self.digits + digit)[-256:]
        self.summary.digits += 1
        with contextlib.suppress(asyncio.QueueFull):
            self._dtmf.put_nowait(digit)

    async def _dtmf_loop(self) -> None:
        """Keys to the model: a burst of keys is one text item; the commit key ends a turn."""
        cfg = self.profile.dtmf
        group: list[str] = []
        while True:
            try:
                async with asyncio.timeout(DTMF_GROUP_S if group else None):
                    digit = await self._dtmf.get()
            except TimeoutError:
                await self._forward_keys(group, cfg.respond)
                group = []
                continue
            if self._local_turns and cfg.commit_key and digit == cfg.commit_key.upper():
                await self._forward_keys(group, respond=False)
                group = []
                if self._gate is not None:
                    self._gate.reset()
                await self._commit_turn("DTMF")
            elif cfg.forward:
                group.append(digit)

    async def _forward_keys(self, keys: list[str], respond: bool) -> None:
        if not keys or self._rt is None:
            return
        text = f"The caller pressed {' '.join(keys)}"
        await self._send(rtp.text_item("user", text))
        self.transcript.note("user", text, self._t(), "dtmf")
        if respond:
            await self._ask(None, "dtmf")
