"""Call traces: everything one call said and heard, on disk, for reproducing it later.

A trace is a directory ``<traces.dir>/<uuid>/`` with
* ``trace.jsonl`` — one JSON object per line, in order, each with ``t`` (monotonic seconds since
  the trace began) and ``kind``: ``meta`` (first line: config, profile, channel), ``esl_event``,
  ``esl_command``, ``rt`` (a Realtime event, ``dir`` in|out), ``fork`` (the fork metadata),
  ``state``, ``barge_in``, ``truncated``, ``reply_heard``, ``end`` (the call summary);
* ``caller.wav`` / ``model.wav`` — the caller audio the bridge appended and the model audio it
  received, both 24 kHz mono PCM16. In ``rt`` events the base64 audio is replaced by
  ``{"$audio": "caller.wav", "offset": <byte offset in the data chunk>, "bytes": <n>}``.

Secrets never reach the disk: the config's secrets (API key, ESL password, admin token, extra
handshake headers) and the per-call fork credentials (learnt from the very command that sets them)
are replaced by ``[redacted]`` wherever they appear, and headers whose names say they hold a secret
are redacted whatever their value.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from .audio.wav import wav_header
from .call.observer import CallObserver
from .trace_retention import schedule_prune, trace_closed, trace_opened

if TYPE_CHECKING:
    from .call.call import Call
    from .call.downlink import ReplyStats, Truncation
    from .call.summary import CallSummary
    from .config import Config
    from .esl.protocol import EslEvent

__all__ = ["REDACTED", "CallTrace", "Redactor", "Trace", "TraceWriter", "load_trace"]

log = logging.getLogger("fsbridge.trace")

REDACTED = "[redacted]"
AUDIO_RATE = 24000
_HEADER = len(wav_header(0, AUDIO_RATE))
# ESL header names whose value is a secret, whatever it is.
_SECRET_HEADER = re.compile(
    r"password|passwd|secret|api[-_]?key|authorization|STREAM_EXTRA_HEADERS|token$", re.I
)
# JSON keys (Realtime events) whose value is a secret.
_SECRET_KEYS = frozenset({"authorization", "api_key", "api-key", "client_secret", "password"})
_ASSIGN = re.compile(r"(MOD_AUDIO_BASIC_AUTH_PASSWORD|PASSWORD|SECRET|TOKEN)=([^;\s]+)", re.I)
_BASIC = re.compile(r"Basic\s+([A-Za-z0-9+/=]+)")
_AUDIO_FIELDS = {
    "input_audio_buffer.append": ("audio", "caller"),
    "response.output_audio.delta": ("delta", "model"),
}


class Redactor:
    """Replaces known secret values everywhere, and learns the per-call ones as they appear."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._values: set[str] = set()
        for value in secrets:
            self.learn(value)

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        values: list[str | None] = [
            s.get_secret_value() if s is not None else None
            for s in (config.realtime.api_key, config.freeswitch.password, config.admin.token)
        ]
        values += list(config.realtime.headers.values())
        for profile in config.profiles.values():
            values += [
                os.environ.get(var) for t in profile.tools for var in t.headers_from_env.values()
            ]
        return cls(values)

    def learn(self, value: str | None) -> None:
        if value and len(value) >= 4 and value != REDACTED:
            self._values.add(value)
            scheme, _, token = value.partition(" ")
            if scheme.lower() in ("bearer", "basic") and token.strip():
                self.learn(token.strip())

    def text(self, s: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in s:
                s = s.replace(value, REDACTED)
        return s

    def command(self, command: str) -> str:
        """An ESL command, after learning any credential it sets."""
        for m in _ASSIGN.finditer(command):
            self.learn(m.group(2))
        for m in _BASIC.finditer(command):
            self._learn_basic(m.group(1))
        return self.text(command)

    def _learn_basic(self, token: str) -> None:
        self.learn(token)
        with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
            _user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
            self.learn(password)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in headers.items():
            if _SECRET_HEADER.search(name):
                self.learn(value)
                for m in _BASIC.finditer(value):
                    self._learn_basic(m.group(1))
                out[name] = REDACTED
            else:
                out[name] = value
        return {k: self.text(v) for k, v in out.items()}

    def obj(self, o: Any) -> Any:
        if isinstance(o, str):
            return self.text(o)
        if isinstance(o, Mapping):
            return {
                k: (REDACTED if str(k).lower() in _SECRET_KEYS else self.obj(v))
                for k, v in o.items()
            }
        if isinstance(o, list | tuple):
            return [self.obj(v) for v in o]
        return o


def _create(path: Path) -> int:
    """A new file readable by its owner and group only: traces hold the caller's voice."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)


class _AudioFile:
    """A WAV written as it grows; the header's sizes are fixed when it is closed."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self._f: IO[bytes] = os.fdopen(_create(path), "wb")
        self._f.write(wav_header(0, AUDIO_RATE))
        self.size = 0

    def append(self, pcm: bytes) -> int:
        offset = self.size
        self._f.write(pcm)
        self.size += len(pcm)
        return offset

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.seek(0)
        self._f.write(wav_header(self.size, AUDIO_RATE))
        self._f.close()


class TraceWriter:
    """The files of one trace. Writes are small and buffered (like chunk files, on the loop)."""

    def __init__(self, directory: Path, meta: Mapping[str, Any], redactor: Redactor) -> None:
        directory.mkdir(parents=True, exist_ok=False, mode=0o750)
        self.dir = directory
        self.redactor = redactor
        self.t0 = time.monotonic()
        trace_opened(directory)
        try:
            self._events = os.fdopen(_create(directory / "trace.jsonl"), "w", encoding="utf-8")
            self._audio = {
                "caller": _AudioFile(directory / "caller.wav"),
                "model": _AudioFile(directory / "model.wav"),
            }
        except BaseException:
            trace_closed(directory)
            raise
        self.records = 0
        self.write(
            "meta",
            version=1,
            monotonic_t0=self.t0,
            wall_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            audio_rate=AUDIO_RATE,
            **redactor.obj(dict(meta)),
        )

    @property
    def closed(self) -> bool:
        return self._events.closed

    def write(self, kind: str, **fields: Any) -> None:
        if self._events.closed:
            return
        line = {"t": round(time.monotonic() - self.t0, 6), "kind": kind, **fields}
        self._events.write(json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str))
        self._events.write("\n")
        self.records += 1

    def audio(self, stream: Literal["caller", "model"], b64: str) -> dict[str, Any]:
        """Store base64 audio in its side file; returns the reference that replaces it."""
        try:
            pcm = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return {"$audio": None, "invalid_base64_chars": len(b64)}
        audio = self._audio[stream]
        return {"$audio": audio.name, "offset": audio.append(pcm), "bytes": len(pcm)}

    def close(self) -> None:
        try:
            for audio in self._audio.values():
                audio.close()
            if not self._events.closed:
                self._events.close()
        finally:
            trace_closed(self.dir)


def trace_dir_for(base: str | os.PathLike[str], uuid: str) -> Path:
    """A fresh directory name for ``uuid`` under ``base`` (``<uuid>``, then ``<uuid>.1``...)."""
    root = Path(base)
    path, n = root / uuid, 0
    while path.exists():
        n += 1
        path = root / f"{uuid}.{n}"
    return path


class CallTrace(CallObserver):
    """The trace of one call: off until ``enable()`` (at the start, or live from the admin API)."""

    def __init__(self, config: Config, redactor: Redactor | None = None) -> None:
        self.config = config
        self.redactor = redactor or Redactor.for_config(config)
        self.writer: TraceWriter | None = None

    @property
    def path(self) -> Path | None:
        return self.writer.dir if self.writer is not None else None

    def enable(self, call: Call, *, live: bool = False) -> Path:
        """Start writing (idempotent); returns the trace directory."""
        if self.writer is not None:
            return self.writer.dir
        cfg = self.config
        meta = {
            "uuid": call.uuid,
            "profile_name": call.profile_name,
            "profile": call.profile.model_dump(mode="json"),
            "channel": self.redactor.headers(call.channel),
            "config": {
                "freeswitch": cfg.freeswitch.model_dump(mode="json", exclude={"password"}),
                "listen": cfg.listen.model_dump(mode="json"),
                "realtime": cfg.realtime.model_dump(mode="json", exclude={"api_key", "headers"}),
                "audio": cfg.audio.model_dump(mode="json"),
                "playback": cfg.playback.model_dump(mode="json"),
            },
            "live": live,
            "call_age_s": round(time.monotonic() - call.started, 3),
        }
        self.writer = TraceWriter(trace_dir_for(cfg.traces.dir, call.uuid), meta, self.redactor)
        log.info("tracing the call", extra={"fields": {"trace": str(self.writer.dir)}})
        return self.writer.dir

    def _w(self) -> TraceWriter | None:
        w = self.writer
        return w if w is not None and not w.closed else None

    def call_started(self, call: Call) -> None:
        if call.profile.trace:
            try:
                self.enable(call)
            except OSError as exc:
                log.error("cannot write the call trace under %s: %s", self.config.traces.dir, exc)

    def esl_event(self, call: Call, event: EslEvent) -> None:
        if (w := self._w()) is not None:
            w.write(
                "esl_event",
                name=event.name,
                subclass=event.subclass,
                headers=self.redactor.headers(event.headers),
                body=self.redactor.text(event.body) if event.body else None,
            )

    def esl_command(self, call: Call, command: str) -> None:
        text = self.redactor.command(command)  # learn the fork credentials even when not tracing
        if (w := self._w()) is not None:
            w.write("esl_command", command=text)

    def realtime_event(self, call: Call, direction: Literal["in", "out"], event: dict) -> None:
        if (w := self._w()) is None:
            return
        kind = event.get("type")
        audio_field = _AUDIO_FIELDS.get(kind) if isinstance(kind, str) else None
        if audio_field is not None and isinstance(event.get(audio_field[0]), str):
            key, stream = audio_field
            event = {**event, key: w.audio(stream, event[key])}  # type: ignore[arg-type]
        w.write("rt", dir=direction, event=self.redactor.obj(event))

    def fork_audio(self, call: Call, metadata: Sequence[str]) -> None:
        if (w := self._w()) is not None:
            w.write("fork", metadata=[self.redactor.text(m) for m in metadata])

    def state_changed(self, call: Call) -> None:
        if (w := self._w()) is not None:
            w.write("state", state=call.state)

    def reply_heard(self, call: Call, reply: ReplyStats) -> None:
        if (w := self._w()) is not None:
            w.write(
                "reply_heard",
                response_id=reply.response_id,
                item_id=reply.item_id,
                first_audio_ms=reply.first_audio_latency_ms,
            )

    def barge_in(self, call: Call, reaction_ms: float) -> None:
        if (w := self._w()) is not None:
            w.write("barge_in", reaction_ms=round(reaction_ms, 3))

    def truncated(self, call: Call, truncation: Truncation) -> None:
        if (w := self._w()) is not None:
            w.write(
                "truncated",
                item_id=truncation.item_id,
                audio_end_ms=truncation.audio_end_ms,
                heard_ms=round(truncation.heard_ms, 1),
                received_ms=round(truncation.received_ms, 1),
            )

    def call_ended(self, call: Call, summary: CallSummary) -> None:
        if (w := self._w()) is not None:
            w.write("end", summary=self.redactor.obj(summary.as_dict()))
            w.close()
            log.info("trace written", extra={"fields": {"trace": str(w.dir), "records": w.records}})
            schedule_prune(self.config)


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class Trace:
    """A trace read back: the records in order, and the two audio files' data."""

    path: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    audio: dict[str, bytes] = field(default_factory=dict)

    def of(self, kind: str) -> Iterator[dict[str, Any]]:
        return (r for r in self.records if r.get("kind") == kind)

    def pcm(self, ref: Mapping[str, Any]) -> bytes:
        data = self.audio.get(str(ref.get("$audio")), b"")
        offset, n = int(ref.get("offset", 0)), int(ref.get("bytes", 0))
        return data[offset : offset + n]

    def restored(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A recorded Realtime event with its audio reference turned back into base64."""
        out = dict(event)
        for key, value in event.items():
            if isinstance(value, Mapping) and "$audio" in value:
                out[key] = base64.b64encode(self.pcm(value)).decode("ascii")
        return out


class TraceError(ValueError):
    """The path is not a readable trace."""


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace directory (or its ``trace.jsonl``)."""
    p = Path(path)
    directory = p.parent if p.is_file() else p
    events = directory / "trace.jsonl"
    try:
        lines = events.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceError(f"cannot read trace {events}: {exc.strerror or exc}") from None
    records: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if n == len(lines):  # a trace cut short by a crash: keep what is whole
                break
            raise TraceError(f"{events}:{n}: not a JSON line") from None
    if not records or records[0].get("kind") != "meta":
        raise TraceError(f"{events}: does not start with a meta record")
    audio: dict[str, bytes] = {}
    for name in ("caller.wav", "model.wav"):
        with contextlib.suppress(OSError):
            audio[name] = (directory / name).read_bytes()[_HEADER:]
    return Trace(directory, records[0], records, audio)
