"""mod_audio_fork / mod_audio_stream WebSocket details, without I/O.

Small pure helpers the server needs: splitting text frames that mod_audio_fork glued together
(it appends queued texts into one string, so metadata and a following send_text can arrive as
``{..}{..}``), reading the Basic credentials it sends, and the frame-size check.
"""

from __future__ import annotations

import base64
import binascii
import hmac

__all__ = [
    "MAX_FRAME_BYTES",
    "SUBPROTOCOL",
    "credentials_match",
    "frame_error",
    "parse_basic_auth",
    "split_text_messages",
]

SUBPROTOCOL = "audio.drachtio.org"

# 20 ms of 16 kHz stereo L16 is 1280 bytes; a connect backlog is a few hundred ms. 64 KiB is
# ~2 s of 16 kHz mono, mod_audio_fork's whole buffer: anything larger is not audio from it.
MAX_FRAME_BYTES = 64 * 1024

_OPEN = {"{": "}", "[": "]"}
_WHITESPACE = " \t\r\n"


def split_text_messages(text: str) -> list[str]:
    """Split ``{..}{..}`` / ``[..]`` texts glued back to back at their top-level boundaries.

    Brackets inside JSON strings (with escapes) do not count. Whitespace between the pieces is
    dropped. Text that is not such a sequence — plain text, unbalanced brackets, anything
    between the pieces — comes back whole, so nothing is lost; blank text gives ``[]``.
    """
    if not text.strip(_WHITESPACE):
        return []
    pieces: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    start = -1
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif not stack:
            if ch in _OPEN:
                stack.append(_OPEN[ch])
                start = i
            elif ch not in _WHITESPACE:
                return [text]
        elif ch == '"':
            in_string = True
        elif ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in "}]":
            if ch != stack.pop():
                return [text]
            if not stack:
                pieces.append(text[start : i + 1])
    if stack or in_string:
        return [text]
    return pieces


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic base64(user:password)`` → (user, password), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


def credentials_match(expected: tuple[str, str], given: tuple[str, str] | None) -> bool:
    """Constant-time comparison of both user and password (no early exit on the user)."""
    if given is None:
        hmac.compare_digest(b"x", b"y")  # keep the timing of a miss similar
        return False
    user_ok = hmac.compare_digest(expected[0].encode(), given[0].encode())
    password_ok = hmac.compare_digest(expected[1].encode(), given[1].encode())
    return user_ok and password_ok


def frame_error(size: int, *, max_bytes: int = MAX_FRAME_BYTES) -> str | None:
    """Why a binary frame of ``size`` bytes cannot be L16 audio, or None if it can.

    Odd sizes are fine (a sample may straddle frames; the uplink carries the odd byte), and so
    is any size up to the limit. The empty frame (graceful-shutdown) is handled by the caller.
    """
    if size > max_bytes:
        return f"binary frame of {size} bytes exceeds the {max_bytes}-byte limit"
    return None
