"""What runs on a channel's thread: the park loop, private events, and the playback app.

Mirrors the FreeSWITCH code paths the references describe, so the subtle behaviours fall out of
the structure rather than being special-cased:

* ``parse_all_events`` pops private events until one sets CF_BREAK; it refuses to pop while
  CF_EVENT_LOCK is set (so broadcasts play FIFO, never nested);
* ``parse_event`` reads ``lead-frames`` frames first (writing nothing), sets CF_BROADCAST, runs the
  app, and turns CF_STOP_BROADCAST back into CF_BREAK afterwards;
* ``exec_app`` fires CHANNEL_EXECUTE and **clears CF_BREAK** before the app starts, which is why a
  break during the lead-in (or between pop and exec) is lost;
* ``play_file`` checks CF_BREAK, parses events (a non-locked sendmsg nests here), takes a frame,
  does its one timing read, writes.
"""

from __future__ import annotations

import math
import uuid as uuidlib
from dataclasses import dataclass, field

import numpy as np

from fsbridge.sim.fs_audio import SoundError, load_sound, resample
from fsbridge.sim.fs_channel import SimChannel
from fsbridge.sim.fs_truth import PlaybackRecord

__all__ = ["PrivateMsg", "idle_loop", "park_loop", "parse_all_events", "split_file_params"]

# mod_dptools applications the sim knows by name; only some of them do something here.
_IMPLEMENTED = {"playback", "set", "export", "hangup", "sleep", "answer", "pre_answer", "park"}
_KNOWN_NOOP = {"log", "info", "ring_ready", "event", "unset", "speak", "say", "bridge", "transfer"}
_PREP_NAMES = frozenset(
    "Command Event-Name Core-UUID FreeSWITCH-Hostname FreeSWITCH-Switchname FreeSWITCH-IPv4 "
    "FreeSWITCH-IPv6 Event-Date-Local Event-Date-GMT Event-Date-Timestamp Event-Calling-File "
    "Event-Calling-Function Event-Calling-Line-Number Event-Sequence".split()
)


@dataclass
class PrivateMsg:
    """One queued private "command" event (from uuid_broadcast or ESL sendmsg)."""

    headers: list[tuple[str, str]]  # as queued; PRIVATE_COMMAND carries them
    call_command: str
    method: str = "sendmsg"  # "broadcast" | "sendmsg"
    app: str = ""
    arg: str = ""
    event_lock: bool = False
    lead_frames: int = 0
    app_uuid: str | None = None
    loops: int = 1
    hangup_cause: str = "NORMAL_CLEARING"
    hangup_after: str | None = None  # uuid_broadcast "app!cause::arg"
    record: PlaybackRecord | None = field(default=None, repr=False)


def split_file_params(arg: str) -> tuple[dict[str, str], str]:
    """``{k=v,k2=v2}/path`` -> ({k: v, k2: v2}, "/path")."""
    params: dict[str, str] = {}
    rest = arg
    while rest.startswith("{") and "}" in rest:
        inner, rest = rest[1:].split("}", 1)
        for item in inner.split(","):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                params[key.strip()] = value.strip().strip("'")
        rest = rest.lstrip(" ")
    return params, rest


def resolve_sound_path(ch: SimChannel, arg: str) -> tuple[str, str]:
    """(Playback-File-Path, path to open): relative paths get the sound prefix in front."""
    _, bare = split_file_params(arg)
    if bare.startswith("/") or "://" in bare:
        return arg, bare
    prefix = ch.variables.get("sound_prefix", ch.core.settings.sound_prefix)
    full = f"{prefix.rstrip('/')}/{arg}"
    return full, full  # a {..} prefix in a relative path ends up inside the path, as in FS


# ---------------------------------------------------------------------------- loops


async def park_loop(ch: SimChannel) -> None:
    """switch_ivr_park: read (wakeable), parse the private queue; until hangup or transfer."""
    while ch.ready and ch.transfer_request is None:
        await ch.read_frame(wakeable=True)
        ch.dtmf_pending.clear()  # the park loop consumes DTMF
        if not ch.ready or ch.transfer_request is not None:
            break
        await parse_all_events(ch)


async def idle_loop(ch: SimChannel) -> None:
    """After a transfer the channel runs something we do not model; it still reads and parses."""
    while ch.ready and ch.transfer_request is None:
        await ch.read_frame(wakeable=True)
        if not ch.ready or ch.transfer_request is not None:
            break
        await parse_all_events(ch)


async def parse_all_events(ch: SimChannel) -> None:
    while ch.ready and not ch.event_lock and ch.private_queue:
        msg = ch.private_queue.popleft()
        await parse_event(ch, msg)
        _fire_private_command(ch, msg)
        if ch.cf_break:
            return  # a break ends this pass; the park loop picks up the rest next time


def _fire_private_command(ch: SimChannel, msg: PrivateMsg) -> None:
    ev = ch.core.new_event("PRIVATE_COMMAND")
    if ch.core.settings.private_command_raw:
        ev.headers = list(msg.headers) + ev.headers  # prep_for_delivery appends a second time
    else:
        ev.extend(h for h in msg.headers if h[0] not in _PREP_NAMES)
    ev.extend(ch.basic_headers())
    ch.core.fire(ev)


async def parse_event(ch: SimChannel, msg: PrivateMsg) -> None:
    """switch_ivr_parse_event for call-command execute / hangup."""
    if msg.call_command == "hangup":
        ch.request_hangup(msg.hangup_cause)
        return
    if msg.call_command != "execute" or not msg.app:
        ch.truth.errors.append(f"private event with call-command {msg.call_command!r} ignored")
        return
    if msg.event_lock:
        ch.event_lock = True
    try:
        if msg.lead_frames > 0:
            if msg.record is not None:
                msg.record.lead_in_t = ch.core.now()
            count, max_frames = msg.lead_frames, msg.lead_frames * 2
            while count > 0:
                max_frames -= 1
                if max_frames <= 0:
                    break
                if not await ch.read_frame():
                    return  # the app is not run
                count -= 1  # every simulated frame is a real (non-CNG) frame
        window = ch.core.settings.exec_window_s
        if window > 0:
            await ch.core.clock.sleep(window)
        if not ch.ready:
            return
        ch.stop_broadcast = False
        ch.broadcast_flag = True
        loops = msg.loops
        n = 0
        while loops < 0 or n < loops:
            await exec_app(ch, msg)
            n += 1
            if not ch.ready:
                break
    finally:
        ch.broadcast_flag = False
        if ch.stop_broadcast:
            ch.cf_break = max(ch.cf_break, 1)
        if msg.event_lock:
            ch.event_lock = False
    if msg.hangup_after and ch.ready:
        ch.request_hangup(msg.hangup_after)


async def exec_app(ch: SimChannel, msg: PrivateMsg) -> None:
    """switch_core_session_exec: EXECUTE, clear CF_BREAK, run, EXECUTE_COMPLETE."""
    app, arg = msg.app, msg.arg
    if app not in _IMPLEMENTED and app not in _KNOWN_NOOP:
        ch.truth.errors.append(f"Invalid Application {app}")
        if msg.record is not None:
            msg.record.status, msg.record.error = "not_found", f"Invalid Application {app}"
        ch.request_hangup("DESTINATION_OUT_OF_ORDER")
        return
    app_uuid = msg.app_uuid or str(uuidlib.uuid4())
    ch.fire_execute(app, arg, app_uuid)
    ch.cf_break = 0
    response = "_none_"
    if app == "playback":
        rec = msg.record or new_playback_record(ch, arg, msg.method, app_uuid, msg.event_lock)
        response = await play_file(ch, arg, rec)
    elif app in ("set", "export"):
        name, _, value = arg.partition("=")
        ch.set_variable(name.strip(), value)
    elif app == "hangup":
        ch.request_hangup(arg.strip() or "NORMAL_CLEARING")
    elif app == "sleep":
        ms = int(arg) if arg.strip().isdigit() else 0
        for _ in range(ms // ch.core.settings.frame_ms):
            if not await ch.read_frame() or ch.cf_break:
                break
    elif app not in _IMPLEMENTED:
        ch.truth.errors.append(f"application {app} is not modelled; it did nothing")
    ch.fire_execute_complete(app, arg, app_uuid, response)


def _open(ch: SimChannel, path: str) -> tuple[np.ndarray, int]:
    if path.startswith("silence_stream://"):
        spec = path[len("silence_stream://") :].split(",")[0]
        ms = int(spec) if spec.lstrip("-").isdigit() else 0
        n = ch.rate * 3600 if ms < 0 else ch.rate * ms // 1000
        return np.zeros(n, dtype=np.int16), ch.rate
    if "://" in path:
        raise SoundError(f"cannot open {path}: file format not supported by the simulator")
    return load_sound(path)


async def play_file(ch: SimChannel, arg: str, rec: PlaybackRecord) -> str:
    """switch_ivr_play_file for one file; returns the playback app's Application-Response."""
    params, _ = split_file_params(arg)
    header_path, open_path = resolve_sound_path(ch, arg)
    rec.path, rec.params = open_path, params
    try:
        native, native_rate = _open(ch, open_path)
    except SoundError as exc:
        rec.status, rec.error, rec.stop_t = "not_found", str(exc), ch.core.now()
        ch.truth.errors.append(f"playback {arg}: {exc}")
        return "FILE NOT FOUND"
    audio = resample(native, native_rate, ch.rate)
    if ch.playing:
        rec.nested_in = ch.playing[-1].app_uuid
    ch.playing.append(rec)
    extra = [("Playback-File-Path", header_path), *params.items()]
    rec.start_t = ch.core.now()
    ch.fire("PLAYBACK_START", extra)
    terminators = ch.variables.get("playback_terminators", "*")
    n = ch.frame_len
    offset, status = 0, "done"
    try:
        while True:
            if not ch.ready or ch.transfer_request is not None:
                break
            if ch.cf_break:
                ch.cf_break = 0
                status = "break"
                break
            hit = _terminator(ch, terminators)
            if hit:
                ch.set_variable("playback_terminator_used", hit)
                status = "break"
                break
            await parse_all_events(ch)  # a non-locked private event runs nested, right here
            if not ch.ready:
                break
            if offset >= len(audio):
                break
            frame = audio[offset : offset + n]
            offset += len(frame)
            if len(frame) < n:
                frame = np.concatenate([frame, np.zeros(n - len(frame), dtype=np.int16)])
            if not await ch.read_frame():  # the one timing read
                break
            ch.write_frame(frame, open_path)
            if rec.first_write_t is None:
                rec.first_write_t = ch.tick_time()
    finally:
        ch.playing.remove(rec)
    _set_playback_vars(ch, rec, offset, len(audio), len(native), native_rate)
    rec.stop_t, rec.status = ch.core.now(), status
    ch.fire("PLAYBACK_STOP", [extra[0], ("Playback-Status", status), *extra[1:]])
    return "FILE PLAYED"


def _terminator(ch: SimChannel, terminators: str) -> str | None:
    while ch.dtmf_pending:
        d = ch.dtmf_pending.popleft()
        if terminators != "none" and d in terminators:
            return d
    return None


def _set_playback_vars(
    ch: SimChannel,
    rec: PlaybackRecord,
    offset: int,
    total: int,
    native_total: int,
    native_rate: int,
) -> None:
    """The vars set just before PLAYBACK_STOP; playback_ms counts what was *read* (16384 blocks)."""
    rec.offset_pos = offset
    block = ch.core.settings.playback_block_samples
    if offset >= total:
        samples_in = native_total
    else:
        blocks = math.ceil(offset / block)
        samples_in = min(native_total, round(blocks * block * native_rate / ch.rate))
    ch.set_variable("playback_last_offset_pos", offset)
    ch.set_variable("playback_seconds", samples_in // native_rate if native_rate else 0)
    ch.set_variable("playback_ms", samples_in * 1000 // native_rate if native_rate else 0)
    ch.set_variable("playback_samples", samples_in)


def new_playback_record(
    ch: SimChannel, arg: str, method: str, app_uuid: str, event_lock: bool
) -> PlaybackRecord:
    """Recorded when a playback is queued (before FreeSWITCH even looks at the file)."""
    _, open_path = resolve_sound_path(ch, arg)
    rec = PlaybackRecord(
        open_path,
        app_uuid,
        method,  # type: ignore[arg-type]
        ch.core.now(),
        arg=arg,
        event_lock=event_lock,
    )
    ch.truth.playbacks.append(rec)
    return rec
