"""What the simulated model says: scripted replies per turn and scripted input transcripts.

A test or the demo decides the model's side of the conversation: each response takes the next
``Reply`` (audio + transcript) or ``FunctionCallReply`` in turn order, or asks a callable. The audio
is 24 kHz mono int16 — a WAV path, an int16 array or raw little-endian bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from fsbridge.audio.wav import read_wav

__all__ = [
    "DEFAULT_REPLY_TRANSCRIPT",
    "FunctionCallReply",
    "Reply",
    "ReplyScript",
    "TranscriptScript",
    "default_reply",
    "load_script",
]

DEFAULT_REPLY_TRANSCRIPT = (
    "We are open from nine in the morning until six in the evening on Saturdays."
)


@dataclass(frozen=True, eq=False)
class Reply:
    """One spoken reply. ``audio`` None (or empty) gives a transcript-only audio item."""

    audio: str | os.PathLike[str] | np.ndarray | bytes | None = None
    transcript: str = ""


@dataclass(frozen=True, eq=False)
class FunctionCallReply:
    """A response whose output is one function_call item."""

    name: str
    arguments: str | dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


AnyReply = Reply | FunctionCallReply
ReplyFn = Callable[[Any, int], AnyReply]
TranscriptFn = Callable[[Any, int], "str | None"]


def _asset(name: str) -> Path:
    return Path(str(resources.files("fsbridge") / "assets" / name))


def default_reply() -> Reply:
    """The package's short English reply, used when a test scripts nothing."""
    return Reply(audio=_asset("reply-en-short-24k.wav"), transcript=DEFAULT_REPLY_TRANSCRIPT)


def reply_pcm(reply: Reply) -> np.ndarray:
    """The reply audio as 24 kHz int16 samples; a clear error for anything else."""
    audio = reply.audio
    if audio is None:
        return np.zeros(0, dtype=np.int16)
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise ValueError(f"reply audio array must be 1-D mono, got shape {audio.shape}")
        if audio.dtype != np.int16:
            raise ValueError(f"reply audio array must be int16, got {audio.dtype}")
        return audio
    if isinstance(audio, bytes | bytearray):
        if len(audio) % 2:
            raise ValueError("reply audio bytes must be whole int16 samples (even length)")
        return np.frombuffer(bytes(audio), dtype="<i2").astype(np.int16)
    samples, rate = read_wav(audio)
    if rate != 24000:
        raise ValueError(f"reply audio {audio} is {rate} Hz; the Realtime output is 24000 Hz")
    return samples


class ReplyScript:
    """Turn index -> reply; when a list runs out, repeat the last one or start over."""

    def __init__(
        self,
        replies: Sequence[AnyReply] | ReplyFn | None,
        exhausted: Literal["last", "cycle"] = "last",
    ) -> None:
        if replies is not None and not callable(replies) and len(replies) == 0:
            raise ValueError("replies must not be empty (pass None for the default reply)")
        self._replies = replies
        self._exhausted = exhausted
        self._pcm: dict[str, np.ndarray] = {}
        if replies is not None and not callable(replies):
            for reply in replies:  # fail now with a clear error, and keep file reads off the loop
                if isinstance(reply, Reply):
                    self.pcm(reply)
                elif not isinstance(reply, FunctionCallReply):
                    raise TypeError(
                        f"replies must be Reply or FunctionCallReply, not {type(reply).__name__}"
                    )

    def reply_for(self, session: Any, index: int) -> AnyReply:
        if self._replies is None:
            return default_reply()
        if callable(self._replies):
            reply = self._replies(session, index)
            if not isinstance(reply, Reply | FunctionCallReply):
                raise TypeError(f"reply callable returned {type(reply).__name__}, not a Reply")
            return reply
        n = len(self._replies)
        i = index if index < n else (n - 1 if self._exhausted == "last" else index % n)
        return self._replies[i]

    def pcm(self, reply: Reply) -> np.ndarray:
        """Decoded audio of ``reply``, cached by path so a repeated WAV is read once."""
        if not isinstance(reply.audio, str | os.PathLike):
            return reply_pcm(reply)
        key = os.fspath(reply.audio)
        if key not in self._pcm:
            self._pcm[key] = reply_pcm(reply)
        return self._pcm[key]


class TranscriptScript:
    """What input transcription "hears" for the n-th committed user audio item."""

    def __init__(self, transcripts: Sequence[str] | TranscriptFn | None) -> None:
        self._t = transcripts

    def text_for(self, session: Any, index: int) -> str:
        if self._t is None:
            return ""
        if callable(self._t):
            return self._t(session, index) or ""
        return self._t[index] if index < len(self._t) else ""


def _turn(entry: Any, base: Path, where: str) -> AnyReply:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: a turn must be a mapping, got {type(entry).__name__}")
    if "function_call" in entry:
        fc = entry["function_call"]
        if not isinstance(fc, dict) or "name" not in fc:
            raise ValueError(f"{where}: function_call needs a name")
        return FunctionCallReply(
            name=str(fc["name"]), arguments=fc.get("arguments", {}), call_id=fc.get("call_id")
        )
    unknown = set(entry) - {"audio", "transcript"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (expected audio, transcript)")
    audio = entry.get("audio")
    path = None if audio is None else (base / str(audio))
    reply = Reply(audio=path, transcript=str(entry.get("transcript", "")))
    reply_pcm(reply)  # fail at load time, not in the middle of a call
    return reply


def load_script(path: str | os.PathLike[str]) -> tuple[list[AnyReply], list[str] | None]:
    """Read a YAML script: ``turns`` (audio/transcript or function_call) and ``input_transcripts``.

    Audio paths are relative to the YAML file. A bare list is taken as the turns.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read script {p}: {exc}") from exc
    if isinstance(data, list):
        data = {"turns": data}
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list) or not data["turns"]:
        raise ValueError(f"{p}: expected a non-empty 'turns' list")
    turns = [_turn(t, p.parent, f"{p}: turn {i}") for i, t in enumerate(data["turns"])]
    transcripts = data.get("input_transcripts")
    if transcripts is not None and not (
        isinstance(transcripts, list) and all(isinstance(t, str) for t in transcripts)
    ):
        raise ValueError(f"{p}: input_transcripts must be a list of strings")
    return turns, transcripts
