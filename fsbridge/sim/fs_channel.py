"""One simulated channel: its state machine, its events, its media clock.

The channel runs as one coroutine, the way a FreeSWITCH session runs on its own thread: the
dialplan (set, answer, park), then the park loop, which reads one frame per 20 ms tick and parses
the private event queue (uuid_broadcast / sendmsg), running each queued app inline. Apps read
frames too (the lead-in, the playback's pacing read), so nesting, the lost-break windows and the
frame cadence all follow from the same structure as in FreeSWITCH (see ``fs_apps``).

Frames are ticks on a drift-free clock: tick n is at ``t_base + n * 20 ms`` of sim time. Each tick
hands the caller's frame to every attached media bug (the forks); a playback writes one frame per
tick, recorded as heard at that tick's time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from fsbridge.sim.fs_audio import CallerLine
from fsbridge.sim.fs_chandata import (
    CALLSTATE_NUMBERS,
    CODECS,
    HANGUP_CAUSES,
    STATE_NUMBERS,
    VERBOSE_EVENTS,
    basic_headers,
)
from fsbridge.sim.fs_events import SimEvent
from fsbridge.sim.fs_truth import CallTruth, HeardFrame, PlaybackRecord

if TYPE_CHECKING:
    from fsbridge.sim.fs_apps import PrivateMsg
    from fsbridge.sim.fs_core import SimCore
    from fsbridge.sim.fs_fork import ForkSession

__all__ = ["SimChannel"]

log = logging.getLogger(__name__)


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class SimChannel:
    """A FreeSWITCH channel: what the ESL client sees and what the caller hears."""

    def __init__(
        self,
        core: SimCore,
        *,
        profile: str | None,
        variables: dict[str, str],
        caller_id_number: str,
        caller_id_name: str,
        destination: str,
        channel_rate: int,
    ) -> None:
        if channel_rate % 8000 or channel_rate <= 0:
            raise ValueError(f"channel_rate must be a multiple of 8000, got {channel_rate}")
        self.core = core
        self.uuid = str(uuidlib.uuid4())
        self.rate = channel_rate
        self.frame_len = channel_rate * core.settings.frame_ms // 1000
        self.profile = profile
        self.cid_number, self.cid_name = caller_id_number, caller_id_name
        self.destination, self.dialplan, self.context = destination, "XML", "default"
        self.initial_destination = destination
        self.name = f"sofia/internal/{caller_id_number}@127.0.0.1"
        self.profile_index = 1
        self.caller = CallerLine(self.frame_len)
        self.truth = CallTruth(self.uuid, channel_rate)
        self.truth.utterance_log = self.caller.log
        self.variables: dict[str, str] = {}
        self.state, self.state_number = "CS_NEW", 0
        self.call_state, self.answer_state = "DOWN", "ringing"
        self.hangup_cause: str | None = None
        self.hung_up = asyncio.Event()
        self.destroyed = False
        self.parked = False
        self.transferred_to: str | None = None
        self.times: dict[str, int] = {}
        # the private event queue and the channel flags it interacts with
        self.private_queue: deque[PrivateMsg] = deque()
        self.event_lock = False  # CF_EVENT_LOCK
        self.broadcast_flag = False  # CF_BROADCAST
        self.stop_broadcast = False  # CF_STOP_BROADCAST
        self.cf_break = 0  # CF_BREAK (0, 1, or 2 = "all")
        self.dtmf_pending: deque[str] = deque()
        self.playing: list[PlaybackRecord] = []  # stack: nested playbacks
        self.forks: dict[str, ForkSession] = {}  # attached media bugs by bugname
        self.fork_sessions: list[ForkSession] = []  # every one ever started (to await)
        self.tick = 0
        self.t_base = 0.0
        self._waker: asyncio.Future[bool] | None = None
        self._last_write: np.ndarray | None = None
        self._last_write_tick = -1
        self._hangup_requested = False
        self._in_hangup_state = False
        self.transfer_request: tuple[str, str, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._initial_vars = dict(variables)

    # ---------------------------------------------------------------- state and properties
    @property
    def ready(self) -> bool:
        """switch_channel_ready: up and not hanging up."""
        return not self._hangup_requested

    @property
    def locatable(self) -> bool:
        """switch_core_session_locate succeeds until the channel reaches CS_HANGUP."""
        return not self._in_hangup_state and not self.destroyed

    def tick_time(self, tick: int | None = None) -> float:
        return self.t_base + (self.tick if tick is None else tick) * self.core.settings.frame_s

    def set_variable(self, name: str, value: object | None) -> None:
        """Set (moved to the end, as switch_channel_set_variable does) or unset with None/''."""
        self.variables.pop(name, None)
        if value is not None and str(value) != "":
            self.variables[name] = str(value)

    def set_running_state(self, state: str) -> None:
        self.state, self.state_number = state, STATE_NUMBERS[state]
        self.fire("CHANNEL_STATE")

    def set_callstate(self, call_state: str) -> None:
        original, self.call_state = self.call_state, call_state
        self.fire(
            "CHANNEL_CALLSTATE",
            [
                ("Original-Channel-Call-State", original),
                ("Channel-Call-State-Number", str(CALLSTATE_NUMBERS[call_state])),
            ],
        )

    # ---------------------------------------------------------------- events
    def basic_headers(self) -> list[tuple[str, str]]:
        """switch_channel_event_set_basic_data, in its order."""
        return basic_headers(self)

    def variable_headers(self) -> list[tuple[str, str]]:
        return [(f"variable_{k}", v) for k, v in self.variables.items()]

    def make_event(
        self,
        name: str,
        extra: Iterable[tuple[str, str]] = (),
        *,
        subclass: str | None = None,
        body: str | None = None,
    ) -> SimEvent:
        ev = self.core.new_event(name, subclass)
        ev.extend(self.basic_headers())
        if name in VERBOSE_EVENTS:
            ev.extend(self.variable_headers())
        ev.extend(extra)
        ev.body = body
        return ev

    def fire(
        self,
        name: str,
        extra: Iterable[tuple[str, str]] = (),
        *,
        subclass: str | None = None,
        body: str | None = None,
    ) -> SimEvent:
        ev = self.make_event(name, extra, subclass=subclass, body=body)
        self.core.fire(ev)
        return ev

    def fire_execute(self, app: str, data: str, app_uuid: str) -> None:
        self.set_variable("current_application", app)
        self.set_variable("current_application_data", data)
        self.fire(
            "CHANNEL_EXECUTE",
            [("Application", app), ("Application-Data", data), ("Application-UUID", app_uuid)],
        )

    def fire_execute_complete(self, app: str, data: str, app_uuid: str, response: str) -> None:
        self.set_variable("current_application_response", response)
        self.fire(
            "CHANNEL_EXECUTE_COMPLETE",
            [
                ("Application", app),
                ("Application-Data", data),
                ("Application-Response", response),
                ("Application-UUID", app_uuid),
            ],
        )

    def _run_inline_app(self, app: str, data: str) -> None:
        app_uuid = str(uuidlib.uuid4())
        self.fire_execute(app, data, app_uuid)
        if app == "set":
            name, _, value = data.partition("=")
            self.set_variable(name, value)
        elif app == "answer":
            self._mark_answered()
        self.fire_execute_complete(app, data, app_uuid, "_none_")

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create the channel and run the dialplan up to park (CREATE ... PARK), then the loop."""
        now = self.core.now()
        us = self.core.epoch_us(now)
        self.times.update(created=us, profile_created=us)
        for k, v in {
            "direction": "inbound",
            "uuid": self.uuid,
            "session_id": str(self.core.sessions_since_start + 1),
            "sip_from_user": self.cid_number,
            "sip_from_host": "127.0.0.1",
            "sip_to_user": self.destination,
            "sip_to_host": "127.0.0.1",
            "sip_call_id": f"{self.uuid[:8]}@127.0.0.1",
            "channel_name": self.name,
            "read_codec": CODECS.get(self.rate, ("L16",))[0],
            "read_rate": str(self.rate),
            "write_codec": CODECS.get(self.rate, ("L16",))[0],
            "write_rate": str(self.rate),
            **self._initial_vars,
        }.items():
            self.set_variable(k, v)
        self.core.sessions_since_start += 1
        self.core.channels[self.uuid] = self
        live = len(self.core.live_channels())
        self.core.peak_sessions = max(self.core.peak_sessions, live)
        self.set_running_state("CS_INIT")
        self.fire("CHANNEL_CREATE")
        self.set_callstate("RINGING")
        self.set_running_state("CS_ROUTING")
        self.set_running_state("CS_EXECUTE")
        if self.profile is not None:
            self._run_inline_app("set", f"fsbridge_profile={self.profile}")
        self._run_inline_app("answer", "")
        self.t_base = self.core.now()
        self.truth.answer_t = self.t_base
        self._park_uuid = str(uuidlib.uuid4())
        self.fire_execute("park", "", self._park_uuid)
        self.parked = True
        self.fire("CHANNEL_PARK")
        self._task = asyncio.create_task(self._run(), name=f"fs-channel-{self.uuid[:8]}")

    def _mark_answered(self) -> None:
        now = self.core.now()
        self.times["answered"] = self.core.epoch_us(now)
        self.answer_state = "answered"
        self.set_variable("answer_epoch", int(self.core.epoch(now)))
        self.fire("CHANNEL_ANSWER")
        self.set_callstate("ACTIVE")

    async def _run(self) -> None:
        from fsbridge.sim import fs_apps  # the apps run on this channel; imported late (cycle)

        try:
            await self._lifetime(fs_apps)
        except Exception as exc:  # a simulator bug ends this call, visibly, not the others
            log.exception("channel %s failed in the simulator", self.uuid)
            self.truth.errors.append(f"simulator error: {exc!r}")
        finally:
            await self._hangup_sequence()

    async def _lifetime(self, fs_apps: Any) -> None:
        """Parked until hangup or transfer; after a transfer, whatever runs there (unmodelled)."""
        await fs_apps.park_loop(self)
        self.parked = False
        self.fire("CHANNEL_UNPARK")
        self.fire_execute_complete("park", "", self._park_uuid, "_none_")
        while self.ready and self.transfer_request is not None:
            self._do_transfer()
            await fs_apps.idle_loop(self)

    def _do_transfer(self) -> None:
        assert self.transfer_request is not None
        dest, dialplan, context = self.transfer_request
        self.transfer_request = None
        now = self.core.now()
        self.times["transfer"] = self.core.epoch_us(now)
        self.destination, self.dialplan, self.context = dest, dialplan, context
        self.profile_index += 1
        self.transferred_to = dest
        self.truth.transfer = {"t": now, "dest": dest, "dialplan": dialplan, "context": context}
        self.set_running_state("CS_ROUTING")
        self.set_running_state("CS_EXECUTE")

    def request_transfer(self, dest: str, dialplan: str, context: str) -> None:
        self.transfer_request = (dest, dialplan, context)
        self.wake()

    def request_hangup(self, cause: str = "NORMAL_CLEARING") -> bool:
        """Hang up from any side: fires CHANNEL_HANGUP now; the channel loop does the rest."""
        if self._hangup_requested:
            return False
        self._hangup_requested = True
        now = self.core.now()
        self.hangup_cause = cause
        self.times["hangup"] = self.core.epoch_us(now)
        self.answer_state = "hangup"
        self.state_number = STATE_NUMBERS["CS_HANGUP"]  # the running state string lags behind
        self.set_variable("hangup_cause", cause)
        self.set_variable("hangup_cause_q850", HANGUP_CAUSES.get(cause, 0))
        self.truth.hangup_t, self.truth.hangup_cause = now, cause
        self.fire("CHANNEL_HANGUP")
        self.wake()
        return True

    async def _hangup_sequence(self) -> None:
        if not self._hangup_requested:  # the sim is being torn down under us
            self.request_hangup("SYSTEM_SHUTDOWN")
        for msg in self.private_queue:
            if msg.record is not None and msg.record.status is None:
                msg.record.status = "dropped"
        self.private_queue.clear()
        self._in_hangup_state = True
        self.set_running_state("CS_HANGUP")
        self.set_callstate("HANGUP")
        for fork in list(self.forks.values()):
            fork.stop(None)
        self.forks.clear()
        now = self.core.now()
        start = self.core.epoch(self.t_base)
        end = self.core.epoch(now)
        self.set_variable("end_epoch", int(end))
        self.set_variable("duration", int(end - start))
        self.set_variable("billsec", int(end - start))
        self.set_variable("billmsec", int((end - start) * 1000))
        self.set_running_state("CS_REPORTING")
        self.fire("CHANNEL_HANGUP_COMPLETE", [("Hangup-Cause", self.hangup_cause or "")])
        self.state, self.state_number = "CS_DESTROY", STATE_NUMBERS["CS_DESTROY"]
        self.fire("CHANNEL_DESTROY")
        self.fire("CHANNEL_STATE")
        self.destroyed = True
        for fork in self.fork_sessions:
            await fork.wait_closed(self.core.settings.fork_close_timeout_s + 1.0)
        self.hung_up.set()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Hang up (if needed) and wait for the channel's coroutine to finish."""
        self.request_hangup("SYSTEM_SHUTDOWN")
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ---------------------------------------------------------------- the media clock
    def wake(self) -> None:
        """SWITCH_SIG_BREAK: make a blocking read return early (queued event, hangup)."""
        if self._waker is not None:
            _resolve(self._waker, True)

    async def _wait(self, deadline: float, wakeable: bool) -> bool:
        """Wait for sim time ``deadline``; True if woken early (by ``wake``)."""
        loop = asyncio.get_running_loop()
        real = self.core.clock.real_deadline(deadline)
        while True:
            fut: asyncio.Future[bool] = loop.create_future()
            self._waker = fut
            handle = loop.call_later(max(0.0, real - time.monotonic()), _resolve, fut, False)
            try:
                woke = await fut
            finally:
                handle.cancel()
                self._waker = None
            if not woke or wakeable or not self.ready:
                return woke

    async def read_frame(self, wakeable: bool = False) -> bool:
        """One switch_core_session_read_frame: wait for the next tick, feed the media bugs.

        A wakeable read (the park loop's) returns early without consuming a tick when a private
        event is queued. Returns False once the channel is hanging up.
        """
        if not self.ready:
            return False
        woke = await self._wait(self.tick_time(self.tick + 1), wakeable)
        if not self.ready:
            return False
        if woke:
            return True
        self.tick += 1
        frame, started = self.caller.frame(self.tick)
        written = self._last_write if self._last_write_tick == self.tick - 1 else None
        for fork in list(self.forks.values()):
            fork.on_read(frame, written, started, self.tick)
        return True

    def write_frame(self, samples: np.ndarray, source: str) -> None:
        """The caller hears ``samples`` at the current tick."""
        self.truth.heard.append(HeardFrame(self.tick_time(), samples.copy(), source))
        self._last_write, self._last_write_tick = samples, self.tick

    # ---------------------------------------------------------------- inputs
    def queue_private(self, msg: PrivateMsg) -> None:
        """switch_core_session_queue_private_event (+ SIG_BREAK to wake the park loop)."""
        self.private_queue.append(msg)
        self.wake()

    def receive_dtmf(self, digits: str) -> None:
        """The caller pressed keys: one DTMF event per digit."""
        for d in digits:
            self.truth.dtmf_received.append((self.core.now(), d))
            self.dtmf_pending.append(d)
            self.fire(
                "DTMF",
                [("DTMF-Digit", d), ("DTMF-Duration", "2000"), ("DTMF-Source", "RTP")],
            )

    def on_fork_connected(self, connected_t: float) -> None:
        frame_s = self.core.settings.frame_s
        at = connected_t + self.caller.initial_delay_s - self.t_base
        self.caller.start_initial(self.tick + 1, math.ceil(at / frame_s - 1e-9))

    def snapshot(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "state": self.state,
            "call_state": self.call_state,
            "answer_state": self.answer_state,
            "parked": self.parked,
            "transferred_to": self.transferred_to,
            "hangup_cause": self.hangup_cause,
            "destroyed": self.destroyed,
            "profile": self.profile,
            "caller_id_number": self.cid_number,
            "destination": self.destination,
            "rate": self.rate,
        }
