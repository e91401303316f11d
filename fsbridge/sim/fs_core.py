"""The simulated switch's shared state: settings, the event bus, the channel table.

``SimCore`` is what FreeSWITCH's core is to its modules: it stamps events (prep_for_delivery
headers, sequence numbers, timestamps on the sim clock) and hands each fired event to every ESL
listener. Channels, the ESL server, the API and the fork modules all hold a reference to it.
"""

from __future__ import annotations

import email.utils
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fsbridge.sim.clock import SimClock
from fsbridge.sim.fs_events import SimEvent
from fsbridge.sim.fs_truth import CommandRecord

if TYPE_CHECKING:
    import aiohttp

    from fsbridge.sim.fs_channel import SimChannel

__all__ = ["EventListener", "FsSettings", "SimCore"]


@dataclass
class FsSettings:
    """Every modelled behaviour that the references leave open (UNCONFIRMED) is a setting here."""

    password: str = field(default="ClueCon", repr=False)
    frame_ms: int = 20
    lead_in_frames: int = 5  # uuid_broadcast's "lead-frames: 5": frames read, nothing written
    exec_window_s: float = 0.0005  # pop -> exec of a private event: a break here is lost
    fork_buffer_secs: float = 2.0  # MOD_AUDIO_FORK_BUFFER_SECS
    fork_connect_backlog: bool = True  # audio captured while connecting goes out in one frame
    fork_url_quirk: bool = True  # drachtio's lazy host/port regex (ws://host1/x -> port 1)
    fork_subprotocol: str = "audio.drachtio.org"
    fork_connect_timeout_s: float = 10.0  # lws timeout_secs (real seconds)
    fork_close_timeout_s: float = 2.0  # how long a close handshake may take (real seconds)
    fork_sndbuf: int | None = (
        16384  # lws writes straight to the socket: keep the kernel buffer small
    )
    stream_metadata_after_frames: int = 2  # mod_audio_stream: binary frames before the metadata
    api_delays: dict[str, float] = field(default_factory=dict)  # API name -> sim seconds
    sound_prefix: str = "/usr/share/freeswitch/sounds"
    temp_dir: str | None = None  # mod_audio_fork playAudio files; None = a private temp dir
    playback_block_samples: int = 16384  # play_file refill size (playback_ms granularity)
    private_command_raw: bool = True  # PRIVATE_COMMAND carries the queued message's own headers
    heartbeat_s: float | None = None  # HEARTBEAT interval in sim seconds; None = off
    hostname: str = "fs-sim"
    max_listener_queue: int = 100_000  # MAX_QUEUE_LEN; a listener losing 500 events is killed

    @property
    def frame_s(self) -> float:
        return self.frame_ms / 1000.0


class EventListener(Protocol):
    def offer(self, event: SimEvent) -> None: ...


# Event-Calling-* per event name: where FreeSWITCH fires them (plausible, for realism only).
_ORIGINS: dict[str, tuple[str, str, int]] = {
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", 2390),
    "CHANNEL_CALLSTATE": ("switch_channel.c", "switch_channel_perform_set_callstate", 315),
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", 626),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", 3912),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", 2949),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", 2972),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", 1002),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", 1204),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", 3447),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c", "switch_core_session_reporting_state", 896),
    "CHANNEL_DESTROY": ("switch_core_session.c", "switch_core_session_perform_destroy", 1737),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", 1649),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", 2023),
    "PRIVATE_COMMAND": ("switch_ivr.c", "switch_ivr_parse_next_event", 803),
    "COMMAND": ("switch_ivr_async.c", "switch_ivr_broadcast", 5732),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", 1566),
    "API": ("switch_loadable_module.c", "switch_api_execute", 2926),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", 740),
    "CUSTOM": ("lws_glue.cpp", "responseHandler", 24),
    "HEARTBEAT": ("switch_core.c", "send_heartbeat", 102),
}  # fmt: skip


class SimCore:
    def __init__(self, clock: SimClock, settings: FsSettings) -> None:
        self.clock = clock
        self.settings = settings
        self.core_uuid = str(uuidlib.uuid4())
        self.started_t = clock.now()
        self._epoch_base = time.time() - clock.now()
        self._seq = 1000
        self.channels: dict[str, SimChannel] = {}
        self.listeners: list[EventListener] = []
        self.events: list[SimEvent] = []
        self.commands: list[CommandRecord] = []
        self.hash_db: dict[str, str] = {}
        self.http: aiohttp.ClientSession | None = None
        self.temp_dir: str = settings.temp_dir or ""
        self.fork_file_counter = 0
        self.sessions_since_start = 0
        self.peak_sessions = 0
        self.on_channel_event: Callable[[SimChannel, SimEvent], Any] | None = None

    def now(self) -> float:
        return self.clock.now()

    def epoch(self, t: float | None = None) -> float:
        """Wall-clock epoch seconds of sim time ``t`` (so Event-Date-Timestamp deltas are sim time)."""
        return self._epoch_base + (self.clock.now() if t is None else t)

    def epoch_us(self, t: float | None = None) -> int:
        return int(self.epoch(t) * 1_000_000)

    def prep_headers(self, name: str, t: float) -> list[tuple[str, str]]:
        """switch_event_prep_for_delivery: the headers every event starts with, in order."""
        self._seq += 1
        ts = self.epoch(t)
        origin = _ORIGINS.get(name, ("switch_event.c", "switch_event_fire_detailed", 2000))
        return [
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.settings.hostname),
            ("FreeSWITCH-Switchname", self.settings.hostname),
            ("FreeSWITCH-IPv4", "127.0.0.1"),
            ("FreeSWITCH-IPv6", "::1"),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))),
            ("Event-Date-GMT", email.utils.formatdate(ts, usegmt=True)),
            ("Event-Date-Timestamp", str(int(ts * 1_000_000))),
            ("Event-Calling-File", origin[0]),
            ("Event-Calling-Function", origin[1]),
            ("Event-Calling-Line-Number", str(origin[2])),
            ("Event-Sequence", str(self._seq)),
        ]

    def new_event(self, name: str, subclass: str | None = None) -> SimEvent:
        t = self.now()
        ev = SimEvent(name, self.prep_headers(name, t), None, subclass, t)
        if subclass:
            ev.add("Event-Subclass", subclass)
        return ev

    def fire(self, event: SimEvent) -> None:
        """Hand the event to every listener (each filters and queues it for its socket)."""
        self.events.append(event)
        for listener in list(self.listeners):
            listener.offer(event)

    def record_command(self, kind: str, text: str) -> CommandRecord:
        """Keep the command (sim-wide and on each channel whose uuid it names)."""
        rec = CommandRecord(self.now(), kind, text)  # type: ignore[arg-type]
        self.commands.append(rec)
        for token in set(text.replace("\n", " ").split()):
            ch = self.channels.get(token)
            if ch is not None:
                ch.truth.commands.append(rec)
        return rec

    def live_channels(self) -> list[SimChannel]:
        return [c for c in self.channels.values() if not c.destroyed]
