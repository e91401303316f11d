"""FreeSWITCH Event Socket wire format, without I/O.

Everything here is pure: the parser is fed bytes and returns frames, the formatters return command
text. The greenswitch thread (``controller.py``) is a thin shell around these, so the tricky parts
(framing, url-decoding, FreeSWITCH's argument quoting, greenswitch's quirks) are tested and fuzzed
here without sockets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "EslAuthError",
    "EslCommandError",
    "EslConnectError",
    "EslDisconnected",
    "EslError",
    "EslEvent",
    "EslFrame",
    "EslParser",
    "EslProtocolError",
    "bgapi_text",
    "check_command",
    "check_reply",
    "event_from_headers",
    "parse_channel_dump",
    "parse_json_event",
    "parse_plain_event",
    "quote_arg",
    "sendmsg_text",
    "subscribe_text",
]

# FreeSWITCH refuses bodies above 16 MiB; a header block is a few KiB even with every channel
# variable. Anything larger is garbage, and a bound keeps a broken peer from eating memory.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 256 * 1024

# --------------------------------------------------------------------------------------------
# Errors


class EslError(Exception):
    """Base class of everything the ESL layer raises."""


class EslConnectError(EslError):
    """TCP connect, greeting or subscription failed (names host:port, never the password)."""


class EslAuthError(EslConnectError):
    """FreeSWITCH rejected the password."""


class EslCommandError(EslError):
    """A command answered ``-ERR``/``-USAGE``; ``reply`` carries FreeSWITCH's text."""

    def __init__(self, reply: str, command: str | None = None) -> None:
        self.reply = reply
        self.command = command
        text = reply.strip() or "(empty reply)"
        super().__init__(f"{command}: {text}" if command else text)


class EslDisconnected(EslError):
    """The connection is gone (peer closed, command timed out, or the controller was closed)."""


class EslProtocolError(EslError):
    """The byte stream is not valid ESL; the connection cannot be trusted any more."""


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class EslEvent:
    """One FreeSWITCH event with url-decoded headers.

    ``headers`` and ``body`` stay out of the repr: CUSTOM events carry every channel variable,
    including the fork's basic-auth password.
    """

    name: str
    subclass: str | None
    headers: Mapping[str, str] = field(repr=False)
    body: str | None = field(repr=False)
    uuid: str | None

    def variable(self, name: str) -> str | None:
        """A channel variable as the event carries it (``variable_<name>``)."""
        return self.headers.get("variable_" + name)


@dataclass(frozen=True)
class EslFrame:
    """One frame from the server.

    For ``text/event-plain`` / ``text/event-json`` frames, ``headers`` and ``body`` are the
    *event's* (decoded); for every other type they are the frame's own headers and body.
    """

    content_type: str
    headers: Mapping[str, str] = field(repr=False)
    body: str | None = field(repr=False)

    @property
    def is_event(self) -> bool:
        return self.content_type in ("text/event-plain", "text/event-json")

    def event(self) -> EslEvent | None:
        """The event carried by this frame, or None for replies and notices."""
        if not self.is_event:
            return None
        return _make_event(self.headers, self.body)


def _make_event(headers: Mapping[str, str], body: str | None) -> EslEvent:
    frozen = headers if isinstance(headers, MappingProxyType) else MappingProxyType(dict(headers))
    return EslEvent(
        name=frozen.get("Event-Name", ""),
        subclass=frozen.get("Event-Subclass"),
        headers=frozen,
        body=body,
        uuid=frozen.get("Unique-ID"),
    )


def event_from_headers(headers: Mapping[str, str], body: str | None = None) -> EslEvent:
    """Build an EslEvent from greenswitch's ``ESLEvent.headers`` (already url-decoded).

    greenswitch does not separate an event body from its headers: the inner ``Content-Length``
    header swallows the blank line and the body, e.g. ``'54\\n\\nUP 0 years...'``. Split it off
    so ``Content-Length`` is a number again and the body lands in ``body``. (greenswitch strips
    the body's surrounding whitespace, which cannot be undone here.)
    """
    fixed = dict(headers)
    length = fixed.get("Content-Length")
    if length is not None and "\n" in length:
        number, _, rest = length.partition("\n")
        fixed["Content-Length"] = number.strip()
        if body is None:
            body = rest[1:] if rest.startswith("\n") else rest
    return _make_event(fixed, body)


# --------------------------------------------------------------------------------------------
# Replies and commands


def check_reply(text: str) -> str:
    """Return ``text`` unchanged unless it is an error reply, which raises EslCommandError.

    FreeSWITCH reports failures in-band: ``-ERR ...`` (and ``-ERROR``), or ``-USAGE: ...``.
    """
    if text.startswith("-ERR") or text.startswith("-USAGE"):
        raise EslCommandError(text)
    return text


def check_command(command: str) -> str:
    """Reject text that would break ESL framing (a newline ends the command early).

    A smuggled blank line would inject a second command and desynchronise every reply after
    it, so this is a hard error, not something to clean up.
    """
    if not command or not command.strip():
        raise ValueError("empty ESL command")
    if "\n" in command or "\r" in command:
        raise ValueError("ESL command must be one line (use quote_arg for values with newlines)")
    return command


def bgapi_text(command: str, job_uuid: str) -> str:
    """``bgapi`` with a client-chosen Job-UUID, so the BACKGROUND_JOB can be matched."""
    check_command(command)
    _check_header_value("Job-UUID", job_uuid)
    return f"bgapi {command}\nJob-UUID: {job_uuid}"


def subscribe_text(events: Iterable[str], fmt: str = "plain") -> str:
    """``event plain <names>`` with the CUSTOM subclasses last.

    FreeSWITCH treats every word after ``CUSTOM`` as a subclass name, so plain names must come
    first; subclasses (``a::b``) imply CUSTOM.
    """
    plain: list[str] = []
    subclasses: list[str] = []
    for name in events:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"bad event name {name!r}")
        if "::" in name:
            subclasses.append(name)
        elif name.upper() != "CUSTOM":
            plain.append(name)
    words = plain + (["CUSTOM", *subclasses] if subclasses else [])
    if not words:
        raise ValueError("no events to subscribe to")
    return f"event {fmt} {' '.join(words)}"


def sendmsg_text(uuid: str, headers: Mapping[str, str]) -> str:
    """The multi-line ``sendmsg <uuid>`` command (e.g. execute playback with event-lock)."""
    if not uuid or any(c.isspace() for c in uuid):
        raise ValueError(f"bad channel uuid {uuid!r}")
    lines = [f"sendmsg {uuid}"]
    for name, value in headers.items():
        if not name or ":" in name or any(c.isspace() for c in name):
            raise ValueError(f"bad sendmsg header name {name!r}")
        _check_header_value(name, value)
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def _check_header_value(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"header {name} must not contain a newline")


# FreeSWITCH's cleanup_separated_string turns these escapes back into control characters.
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_arg(value: str) -> str:
    """Quote one API argument for FreeSWITCH's blank-delimited argument split.

    FreeSWITCH (switch_separate_string with ' ') groups text in single quotes and strips them,
    and processes backslash escapes everywhere, inside quotes too (``\\'`` ``\\\\`` ``\\n``
    ``\\r`` ``\\t`` ``\\s``). So: escape backslashes, quotes and control characters, and wrap the
    value in single quotes when it contains a space, is empty or starts with ``^`` (a leading
    ``^^X`` would change the delimiter). Plain values pass unchanged.
    """
    if "\0" in value:
        raise ValueError("FreeSWITCH arguments cannot contain NUL")
    escaped = "".join(_ESCAPES.get(ch, ch) for ch in value)
    # A leading '^^' would switch FreeSWITCH to another delimiter; quotes defuse it.
    if value == "" or " " in value or value.startswith("^"):
        return f"'{escaped}'"
    return escaped


# --------------------------------------------------------------------------------------------
# Wire parser


def _decode_header_block(block: bytes) -> list[tuple[str, str]]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EslProtocolError(f"ESL header block is not UTF-8 (byte {exc.start})") from None
    pairs: list[tuple[str, str]] = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise EslProtocolError(f"malformed ESL header line {line[:60]!r}")
        pairs.append((name, value.lstrip(" ")))
    return pairs


def _first_wins(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    # FreeSWITCH may repeat a header (Hangup-Cause); its own lookups return the first one.
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out


def _content_length(headers: Mapping[str, str], limit: int) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    raw = raw.strip()
    if not raw.isdigit():
        raise EslProtocolError(f"bad Content-Length {raw[:20]!r}")
    n = int(raw)
    if n > limit:
        raise EslProtocolError(f"Content-Length {n} exceeds the {limit}-byte limit")
    return n


def parse_plain_event(payload: bytes) -> tuple[dict[str, str], str | None]:
    """Split a ``text/event-plain`` payload into url-decoded headers and the raw body.

    Unlike greenswitch, values are decoded one by one (a decoded value containing ``': '`` or a
    newline stays intact) and the body is never url-decoded.
    """
    end = payload.find(b"\n\n")
    if end < 0:
        head, rest = payload, b""
    else:
        head, rest = payload[:end], payload[end + 2 :]
    pairs = [(name, unquote(value, errors="replace")) for name, value in _decode_header_block(head)]
    headers = _first_wins(pairs)
    length = _content_length(headers, MAX_BODY_BYTES)
    if not length:
        return headers, None
    if len(rest) < length:
        raise EslProtocolError(
            f"event body has {len(rest)} bytes, its Content-Length says {length}"
        )
    return headers, rest[:length].decode("utf-8", errors="replace")


def parse_channel_dump(text: str) -> dict[str, str]:
    """The channel data ``uuid_dump <uuid>`` prints: the headers of a CHANNEL_DATA event.

    Its default format is the event-plain serialization (one ``Name: url-encoded value`` line per
    header, then a blank line), so the plain parser reads it. The same headers a CHANNEL_PARK
    carries: ``Unique-ID``, ``Caller-*`` and every channel variable as ``variable_<name>``.
    """
    headers, _ = parse_plain_event(text.encode("utf-8"))
    if "Unique-ID" not in headers:
        raise EslProtocolError(f"not a channel dump: {text[:60]!r}")
    return headers


def parse_json_event(payload: bytes) -> tuple[dict[str, str], str | None]:
    """``text/event-json``: one flat object; arrays come back in FreeSWITCH's plain form."""
    try:
        obj = json.loads(payload.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise EslProtocolError(f"event-json payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EslProtocolError("event-json payload is not an object")
    body = obj.pop("_body", None)
    headers: dict[str, str] = {}
    for name, value in obj.items():
        if isinstance(value, list):
            headers[name] = "ARRAY::" + "|:".join(str(v) for v in value)
        else:
            headers[name] = str(value)
    return headers, None if body is None else str(body)


class EslParser:
    """Incremental parser for the server → client byte stream.

    ``feed`` accepts any split of the stream and returns the frames completed so far. After an
    EslProtocolError the parser stays failed (the stream cannot be resynchronised) and every
    later ``feed`` raises the same error.
    """

    def __init__(
        self, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._buf = bytearray()
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self._pending: tuple[dict[str, str], int] | None = None  # headers waiting for a body
        self._error: EslProtocolError | None = None

    def feed(self, data: bytes) -> list[EslFrame]:
        if self._error is not None:
            raise self._error
        self._buf += data
        try:
            return self._drain()
        except EslProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def _drain(self) -> list[EslFrame]:
        frames: list[EslFrame] = []
        buf = self._buf
        while True:
            if self._pending is None:
                # Like FreeSWITCH's own reader, tolerate stray newlines between frames.
                skip = 0
                while skip < len(buf) and buf[skip] in (0x0A, 0x0D):
                    skip += 1
                if skip:
                    del buf[:skip]
                end = buf.find(b"\n\n")
                if end < 0:
                    if len(buf) > self._max_header:
                        raise EslProtocolError(
                            f"no end of ESL header block within {self._max_header} bytes"
                        )
                    return frames
                if end > self._max_header:
                    raise EslProtocolError(f"ESL header block over {self._max_header} bytes")
                headers = _first_wins(_decode_header_block(bytes(buf[:end])))
                del buf[: end + 2]
                if "Content-Type" not in headers:
                    raise EslProtocolError("ESL frame without Content-Type")
                self._pending = (headers, _content_length(headers, self._max_body))
            headers, length = self._pending
            if len(buf) < length:
                return frames
            body = bytes(buf[:length])
            del buf[:length]
            self._pending = None
            frames.append(self._frame(headers, body if length else None))

    @staticmethod
    def _frame(headers: dict[str, str], body: bytes | None) -> EslFrame:
        ctype = headers["Content-Type"]
        if ctype == "text/event-plain":
            ev_headers, ev_body = parse_plain_event(body or b"")
            return EslFrame(ctype, MappingProxyType(ev_headers), ev_body)
        if ctype == "text/event-json":
            ev_headers, ev_body = parse_json_event(body or b"")
            return EslFrame(ctype, MappingProxyType(ev_headers), ev_body)
        text = None if body is None else body.decode("utf-8", errors="replace")
        return EslFrame(ctype, MappingProxyType(headers), text)
