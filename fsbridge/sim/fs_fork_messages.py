"""Server -> module text messages, handled as drachtio's mod_audio_fork and mod_audio_stream do.

drachtio: ``type`` is read from the top level (absent = ``json``); playAudio writes the decoded
audio to a temp file and fires ``play_audio`` (body = ``data`` minus ``audioContent``, plus
``file``); killAudio sets CF_BREAK=2 (the current file stops, queued broadcasts stay); the others
become events with ``data`` as body; unknown types and unparseable text fire nothing.
mod_audio_stream: only ``streamAudio`` is interpreted (file + ``play`` event, nothing is played);
every other text goes out as ``::json`` verbatim.
"""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsbridge.sim.fs_fork import ForkSession

__all__ = ["b64_prefix_decode", "compact_json", "handle_server_text"]

_B64_PREFIX = re.compile(r"[A-Za-z0-9+/]*")
_RAW_EXT = {8000: ".r8", 16000: ".r16", 24000: ".r24", 32000: ".r32", 48000: ".r48", 64000: ".r64"}


def compact_json(obj: object) -> str:
    """cJSON_PrintUnformatted-like output."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def b64_prefix_decode(text: str) -> bytes:
    """The module's base64 decoder stops at the first character outside the alphabet."""
    m = _B64_PREFIX.match(text)
    prefix = m.group() if m else ""
    prefix = prefix[: len(prefix) - (len(prefix) % 4 == 1)]
    return base64.b64decode(prefix + "=" * (-len(prefix) % 4))


def handle_server_text(fork: ForkSession, text: str) -> None:
    try:
        obj = json.loads(text)
    except ValueError:
        if not fork.drachtio:
            fork.fire("json", text)
            return
        fork.ch.truth.errors.append(f"{fork.module}: unparseable server message {text[:80]!r}")
        return
    if fork.drachtio:
        _drachtio(fork, obj, text)
    else:
        _stream(fork, obj, text)


def _drachtio(fork: ForkSession, obj: object, text: str) -> None:
    typ = obj.get("type", "json") if isinstance(obj, dict) else "json"
    data = obj.get("data") if isinstance(obj, dict) else None
    if typ == "playAudio":
        if not isinstance(data, dict) or "audioContentType" not in data:
            fork.ch.truth.errors.append(
                "mod_audio_fork: playAudio without data.audioContentType "
                "(FreeSWITCH would crash: strcmp on NULL)"
            )
            return
        body = {k: v for k, v in data.items() if k != "audioContent"}
        kind = data["audioContentType"]
        if kind in ("raw", "wave", "wav"):
            rate = data.get("sampleRate")
            ext = ".wav" if kind != "raw" else _RAW_EXT.get(rate, ".r16")  # type: ignore[arg-type]
            body["file"] = fork.write_temp_file(ext, str(data.get("audioContent", "")))
        fork.fire("play_audio", compact_json(body))
    elif typ == "killAudio":
        fork.ch.cf_break = 2
        fork.fire("kill_audio")
    elif typ in ("transcription", "transfer", "error", "disconnect"):
        fork.fire(typ, compact_json(data) if data is not None else None)
    elif typ == "json":
        fork.fire("json", text)
    else:
        fork.ch.truth.errors.append(f"mod_audio_fork: unknown message type {typ!r}: no event")


def _stream(fork: ForkSession, obj: object, text: str) -> None:
    if not (isinstance(obj, dict) and obj.get("type") == "streamAudio"):
        fork.fire("json", text)
        return
    data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
    assert isinstance(data, dict)
    kind = str(data.get("audioDataType", "raw"))
    try:
        rate = int(data.get("sampleRate", 8000) or 8000)
    except (TypeError, ValueError):
        rate = 8000
    ext = {"raw": f".r{rate // 1000}", "wav": ".wav", "mp3": ".mp3", "ogg": ".ogg"}.get(
        kind, f".{kind}"
    )
    body = {k: v for k, v in data.items() if k != "audioData"}
    body["file"] = fork.write_temp_file(ext, str(data.get("audioData", "")))
    fork.fire("play", compact_json(body))
