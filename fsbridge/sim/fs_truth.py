"""What really happened on a simulated call, for tests to check against.

Times are simulated seconds on the sim's ``SimClock``. Written audio frames carry the nominal time
of the 20 ms tick they were written on (the drift-free media clock); commands, sends and events
carry the clock time at which they happened.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from fsbridge.audio.wav import write_wav

__all__ = [
    "CallTruth",
    "CommandRecord",
    "ForkRecord",
    "HeardFrame",
    "PlaybackRecord",
    "Utterance",
]


@dataclass(frozen=True)
class HeardFrame:
    """One frame FreeSWITCH wrote to the caller: tick time, samples at the channel rate, file."""

    t: float
    samples: np.ndarray = field(repr=False)
    source: str


@dataclass
class PlaybackRecord:
    """One queued playback (uuid_broadcast or sendmsg execute playback) and what became of it.

    ``status``: None while queued or playing, then ``done`` | ``break`` (as in PLAYBACK_STOP),
    ``not_found`` (the file could not be opened), ``flushed`` (dropped by ``uuid_break all``) or
    ``dropped`` (the channel hung up first). ``offset_pos`` is playback_last_offset_pos.
    """

    path: str
    app_uuid: str
    method: Literal["broadcast", "sendmsg"]
    queued_t: float
    arg: str = ""
    lead_in_t: float | None = None
    start_t: float | None = None
    first_write_t: float | None = None
    stop_t: float | None = None
    status: str | None = None
    offset_pos: int = 0
    error: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    event_lock: bool = True
    nested_in: str | None = None  # app_uuid of the playback this one interrupted


@dataclass(frozen=True)
class CommandRecord:
    """One ESL command as received (``socket`` = any non-api command, e.g. ``event plain ALL``)."""

    t: float
    kind: Literal["api", "bgapi", "sendmsg", "socket"]
    text: str


@dataclass
class ForkRecord:
    """One mod_audio_fork / mod_audio_stream WebSocket session as seen from FreeSWITCH's side."""

    url: str
    module: str = "mod_audio_fork"
    bugname: str = "audio_fork"
    mix: str = "mono"
    rate: int = 8000
    subprotocol: str | None = None
    auth_header_present: bool = False
    started_t: float | None = None
    connected_t: float | None = None
    failed_reason: str | None = None
    closed_t: float | None = None
    close_code: int | None = None
    closed_by: str | None = None  # "us" (stop/hangup) | "server"
    metadata_sent: str | None = None
    metadata_sent_t: float | None = None
    texts_sent: list[str] = field(default_factory=list)
    frames_sent: int = 0
    bytes_sent: int = 0
    overruns: int = 0
    server_messages: list[str] = field(default_factory=list)


@dataclass
class Utterance:
    """One scripted piece of caller audio: when its first frame went out, its length (channel rate)."""

    start_tick: int
    n_samples: int
    t_first_frame: float | None = None


@dataclass
class CallTruth:
    uuid: str
    rate: int
    answer_t: float = 0.0
    heard: list[HeardFrame] = field(default_factory=list)
    playbacks: list[PlaybackRecord] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    caller_frames: list[tuple[float, int]] = field(default_factory=list)
    forks: list[ForkRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dtmf_received: list[tuple[float, str]] = field(default_factory=list)
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)
    utterance_log: list[Utterance] = field(default_factory=list)
    hangup_t: float | None = None
    hangup_cause: str | None = None
    transfer: dict[str, Any] | None = None

    @property
    def utterances(self) -> list[tuple[float | None, int]]:
        """(time the first frame was sent on a fork, samples at the channel rate) per utterance."""
        return [(u.t_first_frame, u.n_samples) for u in self.utterance_log]

    @property
    def fork(self) -> ForkRecord | None:
        """The latest fork session (``forks`` has them all)."""
        return self.forks[-1] if self.forks else None

    def heard_audio(self, t0: float | None = None, t1: float | None = None) -> np.ndarray:
        """The caller's audio timeline from ``t0`` (default: answer time), silence where nothing
        was written, at the channel rate."""
        start = self.answer_t if t0 is None else t0
        frames = [f for f in self.heard if t1 is None or f.t < t1]
        end_t = t1 if t1 is not None else max((f.t for f in frames), default=start)
        tail = len(frames[-1].samples) if frames and t1 is None else 0
        n = max(0, round((end_t - start) * self.rate) + tail)
        out = np.zeros(n, dtype=np.int16)
        for f in frames:
            pos = round((f.t - start) * self.rate)
            lo, hi = max(pos, 0), min(pos + len(f.samples), n)
            if hi > lo:
                out[lo:hi] = f.samples[lo - pos : hi - pos]
        return out

    def write_heard_wav(self, path: str | os.PathLike[str], t0: float | None = None) -> None:
        write_wav(path, self.heard_audio(t0), self.rate)

    def heard_from(self, source: str) -> np.ndarray:
        """All samples written from one file, concatenated in order."""
        parts = [f.samples for f in self.heard if f.source == source]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (heard frames as time/source/length, not samples)."""
        return {
            "uuid": self.uuid,
            "rate": self.rate,
            "answer_t": self.answer_t,
            "hangup_t": self.hangup_t,
            "hangup_cause": self.hangup_cause,
            "transfer": self.transfer,
            "heard": [
                {"t": round(f.t, 6), "n": len(f.samples), "source": f.source} for f in self.heard
            ],
            "playbacks": [asdict(p) for p in self.playbacks],
            "commands": [asdict(c) for c in self.commands],
            "caller_frames": [[round(t, 6), n] for t, n in self.caller_frames],
            "utterances": [asdict(u) for u in self.utterance_log],
            "forks": [asdict(f) for f in self.forks],
            "errors": list(self.errors),
            "dtmf_received": self.dtmf_received,
            "dtmf_sent": self.dtmf_sent,
        }
