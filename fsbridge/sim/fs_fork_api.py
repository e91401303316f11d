"""The ``uuid_audio_fork`` and ``uuid_audio_stream`` API commands: argument rules and replies.

Both modules split their argument with ``switch_separate_string`` (7 slots for drachtio's
mod_audio_fork, 6 for mod_audio_stream: the last slot takes the rest of the line) and answer
``+OK Success\\n`` / ``-ERR Operation Failed\\n`` / ``-USAGE: ...\\n``; a bad mix type prints
nothing at all (so ESL answers ``-ERR no reply``).
"""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING

from fsbridge.sim.fs_fork import ForkSession
from fsbridge.sim.fs_truth import ForkRecord
from fsbridge.sim.fs_wire import separate_string

if TYPE_CHECKING:
    from fsbridge.sim.fs_channel import SimChannel
    from fsbridge.sim.fs_core import SimCore

__all__ = ["audio_fork_api", "audio_stream_api", "parse_fork_url", "parse_stream_url"]

FORK_SYNTAX = (
    "<uuid> [start | stop | send_text | pause | resume | graceful-shutdown ] [wss-url | path] "
    "[mono | mixed | stereo] [8000 | 16000 | 24000 | 32000 | 64000] [bugname] [metadata]"
)
STREAM_SYNTAX = (
    "<uuid> [start | stop | send_text | pause | resume | graceful-shutdown ] [wss-url | path] "
    "[mono | mixed | stereo] [8000 | 16000] [metadata]"
)
OK, FAIL = "+OK Success\n", "-ERR Operation Failed\n"
DEFAULT_BUGNAME = "audio_fork"
_FORK_URL = re.compile(r"^(wss?|https?)://([^/]+?):?(\d+)?(/.*)?$", re.IGNORECASE)
_FORK_URL_FIXED = re.compile(r"^(wss?|https?)://([^/:]+):?(\d+)?(/.*)?$", re.IGNORECASE)
_STREAM_URL = re.compile(r"^(wss?)://([A-Za-z0-9.\-]+)(?::(\d+))?(/.*)?$")
_AUTH_BUFFER = 128  # drachtio builds "Basic <b64>" in a 128-byte buffer


def parse_fork_url(url: str, quirk: bool = True) -> tuple[str, int, str, bool] | None:
    """(host, port, path, tls) as drachtio's parse_ws_uri sees it, lazy-regex bug included:
    with no explicit port a host ending in digits is mis-split (ws://server1/x -> server:1)."""
    m = (_FORK_URL if quirk else _FORK_URL_FIXED).match(url)
    if not m:
        return None
    scheme, host, port, path = m.group(1).lower(), m.group(2), m.group(3), m.group(4) or "/"
    tls = scheme in ("wss", "https")
    return host, int(port) if port else (443 if tls else 80), path, tls


def parse_stream_url(url: str) -> tuple[str, int, str, bool] | None:
    m = _STREAM_URL.match(url)
    if not m:
        return None
    tls = m.group(1) == "wss"
    return (
        m.group(2),
        int(m.group(3)) if m.group(3) else (443 if tls else 80),
        m.group(4) or "/",
        tls,
    )


def _rate(token: str) -> int:
    if token == "16k":
        return 16000
    if token == "8k":
        return 8000
    digits = re.match(r"\s*[-+]?\d*", token).group().strip()  # type: ignore[union-attr]
    return int(digits) if digits not in ("", "+", "-") else 0  # atoi


def _is_json_start(s: str) -> bool:
    return s[:1] in ("{", "[")


def _locate(core: SimCore, uuid: str) -> SimChannel | None:
    ch = core.channels.get(uuid)
    return ch if ch is not None and ch.locatable else None


def _basic_auth(ch: SimChannel) -> dict[str, str]:
    user = ch.variables.get("MOD_AUDIO_BASIC_AUTH_USERNAME", "")
    password = ch.variables.get("MOD_AUDIO_BASIC_AUTH_PASSWORD", "")
    if not user or not password:
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    if len("Basic ") + len(token) + 1 > _AUTH_BUFFER:
        ch.truth.errors.append("mod_audio_fork: basic auth credentials too long: no header sent")
        return {}
    return {"Authorization": f"Basic {token}"}


def audio_fork_api(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 7)
    argc = len(argv)
    if not arg.strip() or argc < 2 or (argv[1] == "start" and argc < 4):
        return f"-USAGE: {FORK_SYNTAX}\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return FAIL
    sub = argv[1].lower()
    if sub == "start":
        return _fork_start(core, ch, argv)
    if sub == "stop":
        bugname, text = DEFAULT_BUGNAME, None
        if argc == 3:
            if _is_json_start(argv[2]):
                text = argv[2]
            else:
                bugname = argv[2]
        elif argc >= 4:
            bugname, text = argv[2], argv[3]
        fork = ch.forks.get(bugname)
        if fork is None:
            return FAIL
        fork.stop(text)
        return OK
    if sub == "send_text":
        if argc < 3:
            return ""  # "send_text requires an argument": nothing printed
        bugname, text = DEFAULT_BUGNAME, None
        if argc == 3:
            if _is_json_start(argv[2]):
                text = argv[2]
            else:
                bugname = argv[2]
        else:
            bugname, text = argv[2], argv[3]
        fork = ch.forks.get(bugname)
        if fork is None:
            return FAIL
        if text is not None:
            fork.send_text(text)
        return OK
    if sub in ("pause", "resume", "graceful-shutdown"):
        fork = ch.forks.get(argv[2] if argc > 2 else DEFAULT_BUGNAME)
        if fork is None:
            return FAIL
        {"pause": fork.pause, "resume": fork.resume, "graceful-shutdown": fork.graceful_shutdown}[
            sub
        ]()
        return OK
    ch.truth.errors.append(f"unsupported mod_audio_fork cmd: {argv[1]}")
    return FAIL


def _fork_start(core: SimCore, ch: SimChannel, argv: list[str]) -> str:
    argc = len(argv)
    url, mix = argv[2], argv[3]
    if mix not in ("mono", "mixed", "stereo"):
        ch.truth.errors.append(f"invalid mix type: {mix}, must be mono, mixed, or stereo")
        return ""  # the module jumps past its +OK/-ERR writer
    if argc < 5:
        ch.truth.errors.append(
            "uuid_audio_fork start without a sample rate: FreeSWITCH dereferences NULL here"
        )
        return FAIL
    rate = _rate(argv[4])
    bugname, metadata = DEFAULT_BUGNAME, None
    if argc == 6:
        if _is_json_start(argv[5]):
            metadata = argv[5]
        else:
            bugname = argv[5]
    elif argc >= 7:
        bugname, metadata = argv[5], argv[6]
    if bugname in ch.forks:
        ch.truth.errors.append(f"mod_audio_fork: bug {bugname} already attached!")
        return FAIL
    if rate <= 0 or rate % 8000:
        ch.truth.errors.append(f"invalid sample rate: {argv[4]}")
        if rate <= 0:
            return FAIL
    parsed = parse_fork_url(url, core.settings.fork_url_quirk)
    if parsed is None:
        ch.truth.errors.append(f"invalid websocket uri: {url}")
        parsed = ("", 0, "/", False)  # start_capture still runs: the connect then fails
    headers = _basic_auth(ch)
    rec = ForkRecord(
        url=url,
        module="mod_audio_fork",
        bugname=bugname,
        mix=mix,
        rate=rate,
        auth_header_present="Authorization" in headers,
    )
    _attach(core, ch, rec, parsed, metadata, headers, "mod_audio_fork")
    return OK


def _attach(
    core: SimCore,
    ch: SimChannel,
    rec: ForkRecord,
    parsed: tuple[str, int, str, bool],
    metadata: str | None,
    headers: dict[str, str],
    module: str,
    deflate: bool = False,
    heartbeat: float | None = None,
) -> None:
    host, port, path, tls = parsed
    fork = ForkSession(
        core,
        ch,
        module=module,
        host=host,
        port=port,
        path=path,
        tls=tls,
        record=rec,
        metadata=metadata,
        headers=headers,
        deflate=deflate,
        heartbeat=heartbeat,
    )
    ch.truth.forks.append(rec)
    ch.forks[rec.bugname] = fork
    ch.fork_sessions.append(fork)
    fork.start()


def audio_stream_api(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 6)
    argc = len(argv)
    if not arg.strip() or argc < 2 or (argv[1] == "start" and argc < 4):
        return f"-USAGE: {STREAM_SYNTAX}\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return FAIL
    sub = argv[1].lower()
    fork = ch.forks.get("audio_stream")
    if sub == "stop":
        if fork is None:
            return FAIL
        fork.stop(argv[2] if argc > 2 else None)
        return OK
    if sub in ("pause", "resume"):
        if fork is None:
            return FAIL
        (fork.pause if sub == "pause" else fork.resume)()
        return OK
    if sub == "send_text":
        if argc < 3:
            return ""
        if fork is None:
            return FAIL
        fork.send_text(argv[2])
        return OK
    if sub != "start":
        ch.truth.errors.append(f"unsupported mod_audio_stream cmd: {argv[1]}")
        return FAIL
    mix = argv[3]
    if mix not in ("mono", "mixed", "stereo"):
        ch.truth.errors.append(f"invalid mix type: {mix}, must be mono, mixed, or stereo")
        return ""
    rate = _rate(argv[4]) if argc > 4 else 8000
    metadata = argv[5] if argc > 5 else None
    parsed = parse_stream_url(argv[2])
    if parsed is None:
        ch.truth.errors.append(f"invalid websocket uri: {argv[2]}")
        return FAIL
    if rate <= 0 or rate % 8000:
        ch.truth.errors.append(f"invalid sample rate: {argv[4] if argc > 4 else ''}")
        return FAIL
    if fork is not None:
        ch.truth.errors.append("mod_audio_stream: cannot start while stream state is ACTIVE")
        return FAIL
    headers = _extra_headers(ch)
    deflate = ch.variables.get("STREAM_MESSAGE_DEFLATE", "").lower() not in ("true", "1", "yes")
    hb = ch.variables.get("STREAM_HEART_BEAT", "")
    rec = ForkRecord(
        url=argv[2],
        module="mod_audio_stream",
        bugname="audio_stream",
        mix=mix,
        rate=rate,
        auth_header_present="Authorization" in headers,
    )
    heartbeat = float(hb) if hb.replace(".", "", 1).isdigit() and float(hb) > 0 else None
    _attach(core, ch, rec, parsed, metadata, headers, "mod_audio_stream", deflate, heartbeat)
    return OK


def _extra_headers(ch: SimChannel) -> dict[str, str]:
    raw = ch.variables.get("STREAM_EXTRA_HEADERS")
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError:
        ch.truth.errors.append("mod_audio_stream: STREAM_EXTRA_HEADERS is not JSON: ignored")
        return {}
    if not isinstance(obj, dict):
        ch.truth.errors.append("mod_audio_stream: STREAM_EXTRA_HEADERS is not an object: ignored")
        return {}
    return {str(k): str(v) for k, v in obj.items()}
