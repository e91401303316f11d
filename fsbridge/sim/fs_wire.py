"""The Event Socket wire format as mod_event_socket speaks it (sans-I/O).

This is the simulator's own implementation, written from the reference and never shared with the
service's ESL code, so that a framing bug cannot hide on both sides of the wire. It holds:

* ``CommandParser``: client -> server commands (``read_packet``: a command ends at the second
  consecutive LF, CR is ignored when counting; an optional ``Content-Length`` body follows);
* the server -> client frames: greeting, ``command/reply``, ``api/response``, events (plain, json,
  xml) and the disconnect notice, byte for byte as FreeSWITCH writes them;
* ``url_encode`` (switch_url_encode, no double encoding) and ``separate_string`` (FreeSWITCH's
  blank splitting with single quotes and backslash escapes, rest-of-line in the last slot).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DISCONNECT_TEXT",
    "CommandParser",
    "EslCommand",
    "EslProtocolError",
    "api_response",
    "auth_request",
    "command_reply",
    "disconnect_notice",
    "event_frame",
    "rude_rejection",
    "separate_string",
    "serialize_event",
    "url_decode",
    "url_encode",
]

Headers = Sequence[tuple[str, str]]

DISCONNECT_TEXT = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
MAX_BODY = 16 * 1024 * 1024  # read_packet accepts 0 < Content-Length <= 16 MiB
MAX_HEADER_BLOCK = 1024 * 1024  # our guard against a peer that never ends a command

_URL_UNSAFE = frozenset(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
_HEX_UPPER = frozenset(b"0123456789ABCDEF")
_END_OF_COMMAND = re.compile(rb"\n\r*\n")


class EslProtocolError(ValueError):
    """The peer sent something that cannot be an ESL command (the connection is closed)."""


def url_encode(value: str) -> str:
    """switch_url_encode as used by switch_event_serialize (``double_encode`` false).

    Bytes below 0x20 or above 0x7E, and the unsafe set, become ``%XX`` with uppercase hex; a ``%``
    already followed by two uppercase hex digits is left alone.
    """
    data = value.encode("utf-8")
    out: list[str] = []
    n = len(data)
    for i, b in enumerate(data):
        if b == 0x25 and i + 2 < n and data[i + 1] in _HEX_UPPER and data[i + 2] in _HEX_UPPER:
            out.append("%")
        elif b < 0x20 or b > 0x7E or b in _URL_UNSAFE:
            out.append(f"%{b:02X}")
        else:
            out.append(chr(b))
    return "".join(out)


def url_decode(value: str) -> str:
    """Undo ``%XX`` escapes (UTF-8); a malformed escape is kept as it is."""
    raw = value.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25 and i + 2 < len(raw) and _is_hex(raw[i + 1]) and _is_hex(raw[i + 2]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(b)
        i += 1
    return out.decode("utf-8", errors="replace")


def _is_hex(b: int) -> bool:
    return chr(b) in "0123456789abcdefABCDEF"


# --------------------------------------------------------------------------------------------
# FreeSWITCH argument splitting (switch_separate_string)

_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(token: str, delim: str | None) -> str:
    """cleanup_separated_string: strip quotes, resolve escapes, trim blanks (outside quotes)."""
    i = 0
    while i < len(token) and token[i] == " ":
        i += 1
    out: list[str] = []
    end = 0
    inside = False
    while i < len(token):
        c = token[i]
        if c == "\\" and i + 1 < len(token):
            e = token[i + 1]
            if e in "'\"\\" or (delim and e == delim) or e in _UNESCAPE:
                out.append(_UNESCAPE.get(e, e))
                end = len(out)
                i += 2
                continue
        if c == "'":
            inside = not inside
        else:
            out.append(c)
            if c != " " or inside:
                end = len(out)
        i += 1
    return "".join(out[:end])


def _split_blank(buf: str, max_parts: int) -> list[str]:
    starts: list[int] = []
    ends: list[int | None] = []
    state = "start"
    inside = False
    i = 0
    while i < len(buf) and len(starts) < max_parts:
        c = buf[i]
        if state == "start":
            starts.append(i)
            ends.append(None)
            state = "skip_initial"
            continue
        if state == "skip_initial":
            if c == " ":
                i += 1
            else:
                state = "find_delim"
            continue
        if state == "find_delim":
            if c == "\\":
                i += 1
            elif c == "'":
                inside = not inside
            elif c == " " and not inside:
                ends[-1] = i
                state = "skip_ending"
            i += 1
            continue
        # skip_ending
        if c == " ":
            i += 1
        else:
            state = "start"
    return [
        _cleanup(buf[s : e if e is not None else len(buf)], None)
        for s, e in zip(starts, ends, strict=True)
    ]


def _split_char(buf: str, delim: str, max_parts: int) -> list[str]:
    starts: list[int] = []
    ends: list[int | None] = []
    state = "start"
    inside = 0
    i = 0
    while i < len(buf) and len(starts) < max_parts:
        if state == "start":
            starts.append(i)
            ends.append(None)
            state = "find_delim"
            continue
        c = buf[i]
        if c == "\\":
            i += 1
        elif c == "'" and (inside or "'" in buf[i + 1 :]):
            inside = (inside + 1) & 1
        elif c == delim and not inside:
            ends[-1] = i
            state = "start"
        i += 1
    return [
        _cleanup(buf[s : e if e is not None else len(buf)], delim)
        for s, e in zip(starts, ends, strict=True)
    ]


def separate_string(buf: str, max_parts: int, delim: str = " ") -> list[str]:
    """Split an API argument string the way FreeSWITCH modules do.

    Blank delimiter: runs of blanks separate, single quotes group (and are stripped), backslash
    escapes are resolved, and once ``max_parts`` slots are used the last one gets the rest of the
    line. ``^^X`` at the start selects X as the delimiter (empty fields kept, a trailing one not).
    """
    if max_parts <= 0 or not buf:
        return []
    if len(buf) >= 3 and buf.startswith("^^"):
        delim, buf = buf[2], buf[3:]
    if delim == " ":
        return _split_blank(buf, max_parts)
    return _split_char(buf, delim, max_parts)


# --------------------------------------------------------------------------------------------
# Client -> server


@dataclass(frozen=True)
class EslCommand:
    """One command as read_packet sees it: the command line, its header lines, an optional body."""

    line: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    raw: str = field(default="", repr=False)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (first match), like switch_event_get_header."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None


class CommandParser:
    """Feed bytes from the client; get whole commands back, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: tuple[str, tuple[tuple[str, str], ...], str, int] | None = None

    def feed(self, data: bytes) -> list[EslCommand]:
        self._buf += data
        out: list[EslCommand] = []
        while True:
            if self._pending is not None:
                line, headers, raw, length = self._pending
                if len(self._buf) < length:
                    break
                body = bytes(self._buf[:length])
                del self._buf[:length]
                self._pending = None
                out.append(EslCommand(line, headers, body, raw))
                continue
            # leading CR/LF before a command is skipped
            skip = 0
            while skip < len(self._buf) and self._buf[skip] in (0x0A, 0x0D):
                skip += 1
            if skip:
                del self._buf[:skip]
            m = _END_OF_COMMAND.search(self._buf)
            if m is None:
                if len(self._buf) > MAX_HEADER_BLOCK:
                    raise EslProtocolError("command header block too long")
                break
            block = bytes(self._buf[: m.start()])
            del self._buf[: m.end()]
            command = self._parse_block(block)
            length = _content_length(command.headers)
            if length:
                self._pending = (command.line, command.headers, command.raw, length)
                continue
            out.append(command)
        return out

    @staticmethod
    def _parse_block(block: bytes) -> EslCommand:
        text = block.decode("utf-8", errors="replace").replace("\r", "")
        lines = text.split("\n")
        headers: list[tuple[str, str]] = []
        for extra in lines[1:]:
            if ":" not in extra:
                continue
            name, value = extra.split(":", 1)
            headers.append((name.strip(), value.lstrip(" ")))
        return EslCommand(lines[0].strip(), tuple(headers), None, text)


def _content_length(headers: Iterable[tuple[str, str]]) -> int:
    for k, v in headers:
        if k.lower() == "content-length":
            try:
                n = int(v.strip())
            except ValueError:
                return 0
            return n if 0 < n <= MAX_BODY else 0
    return 0


# --------------------------------------------------------------------------------------------
# Server -> client


def auth_request() -> bytes:
    return b"Content-Type: auth/request\n\n"


def rude_rejection() -> bytes:
    body = "Access Denied, go away.\n"
    return f"Content-Type: text/rude-rejection\nContent-Length: {len(body)}\n\n{body}".encode()


def command_reply(text: str, extra: Headers = ()) -> bytes:
    """``command/reply``: Reply-Text plus optional extra headers (e.g. bgapi's Job-UUID)."""
    lines = ["Content-Type: command/reply", f"Reply-Text: {text}"]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def api_response(body: str) -> bytes:
    data = body.encode("utf-8")
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def disconnect_notice(text: str = DISCONNECT_TEXT) -> bytes:
    data = text.encode("utf-8")
    return b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(data) + data


def _serialize_plain(headers: Headers, body: str | None) -> str:
    parts = [f"{k}: {url_encode(v)}\n" for k, v in headers if v != ""]
    if body:
        parts.append(f"Content-Length: {len(body.encode('utf-8'))}\n\n{body}")
    else:
        parts.append("\n")
    return "".join(parts)


def _serialize_json(headers: Headers, body: str | None) -> str:
    # written by hand: duplicate header names stay duplicate keys, as cJSON prints them
    items = [(k, v) for k, v in headers if v != ""]
    if body:
        items += [("Content-Length", str(len(body.encode("utf-8")))), ("_body", body)]
    return "{" + ",".join(f"{_js(k)}:{_js(v)}" for k, v in items) + "}"


def _js(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _serialize_xml(headers: Headers, body: str | None) -> str:
    hs = "".join(f"<{k}>{_xml_escape(v)}</{k}>" for k, v in headers if v != "")
    tail = ""
    if body:
        hs += f"<Content-Length>{len(body.encode('utf-8'))}</Content-Length>"
        tail = f"<body>{_xml_escape(body)}</body>"
    return f"<event><headers>{hs}</headers>{tail}</event>"


def serialize_event(headers: Headers, body: str | None, fmt: str = "plain") -> str:
    """The event payload in ``plain`` (url-encoded values), ``json`` or ``xml`` form."""
    if fmt == "json":
        return _serialize_json(headers, body)
    if fmt == "xml":
        return _serialize_xml(headers, body)
    return _serialize_plain(headers, body)


def event_frame(headers: Headers, body: str | None, fmt: str = "plain") -> bytes:
    """The outer frame: ``Content-Length`` first, then ``Content-Type: text/event-<fmt>``."""
    payload = serialize_event(headers, body, fmt).encode("utf-8")
    return (
        b"Content-Length: %d\nContent-Type: text/event-%s\n\n"
        % (
            len(payload),
            fmt.encode(),
        )
        + payload
    )
