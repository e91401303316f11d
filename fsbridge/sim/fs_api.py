"""The API commands (``api`` / ``bgapi``) the simulated switch knows, with FreeSWITCH's texts.

Each handler takes the argument string and returns exactly what the API would print; the caller
(``run_api``) turns empty output into ``-ERR no reply\\n``, unknown commands into
``-ERR <cmd> Command not found!\\n``, applies the configured per-API delay and fires the ``API``
event.
"""

from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from collections.abc import Callable

from fsbridge.sim.fs_apps import PrivateMsg, new_playback_record
from fsbridge.sim.fs_chandata import HANGUP_CAUSES
from fsbridge.sim.fs_channel import SimChannel
from fsbridge.sim.fs_core import SimCore
from fsbridge.sim.fs_fork_api import audio_fork_api, audio_stream_api
from fsbridge.sim.fs_wire import separate_string, serialize_event, url_encode

__all__ = ["API_NAMES", "run_api"]

log = logging.getLogger(__name__)

NO_CHANNEL = "-ERR No such channel!\n"
BROADCAST_USAGE = "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
TRANSFER_USAGE = "-USAGE: <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]\n"
SHOW_CHANNEL_KEYS = (
    "uuid direction created created_epoch name state cid_name cid_num ip_addr dest application "
    "application_data dialplan context read_codec read_rate read_bit_rate write_codec write_rate "
    "write_bit_rate secure hostname presence_id presence_data accountcode callstate callee_name "
    "callee_num callee_direction call_uuid sent_callee_name sent_callee_num initial_cid_name "
    "initial_cid_num initial_ip_addr initial_dest initial_dialplan initial_context"
).split()
_CALL_KEYS = (
    "uuid direction created created_epoch name state cid_name cid_num ip_addr dest presence_id "
    "presence_data accountcode callstate callee_name callee_num callee_direction call_uuid "
    "hostname sent_callee_name sent_callee_num"
).split()


def _locate(core: SimCore, uuid: str) -> SimChannel | None:
    ch = core.channels.get(uuid.strip())
    return ch if ch is not None and ch.locatable else None


def _cause(text: str | None) -> str:
    if not text:
        return "NORMAL_CLEARING"
    name = text.strip().upper()
    return name if name in HANGUP_CAUSES else "NORMAL_CLEARING"


def api_uuid_broadcast(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 4)
    if len(argv) < 2:
        return BROADCAST_USAGE
    ch = _locate(core, argv[0])
    if ch is None:
        return "-ERR invalid uuid\n"
    leg = argv[2].lower() if len(argv) > 2 else ""
    if leg == "bleg":
        return "+OK Message sent\n"  # only the (absent) bridged leg would hear it
    app, path = "playback", argv[1]
    if "::" in path:
        app, path = path.split("::", 1)
    hangup_after = None
    if "!" in app:
        app, cause = app.split("!", 1)
        hangup_after = _cause(cause)
    headers = [*core.prep_headers("COMMAND", core.now())]
    headers += [
        ("call-command", "execute"),
        ("execute-app-name", app),
        ("execute-app-arg", path),
        ("event-lock", "true"),
        ("lead-frames", str(core.settings.lead_in_frames)),
    ]
    if leg in ("", "holdb"):
        headers.append(("hold-bleg", "true"))
    app_uuid = str(uuidlib.uuid4())
    rec = new_playback_record(ch, path, "broadcast", app_uuid, True) if app == "playback" else None
    ch.queue_private(
        PrivateMsg(
            headers,
            "execute",
            method="broadcast",
            app=app,
            arg=path,
            event_lock=True,
            lead_frames=core.settings.lead_in_frames,
            app_uuid=app_uuid,
            hangup_after=hangup_after,
            record=rec,
        )
    )
    return "+OK Message sent\n"


def api_uuid_break(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 2)
    if not argv or not argv[0]:
        return "-USAGE: <uuid> [all]\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return NO_CHANNEL
    flush = len(argv) > 1 and argv[1].lower() in ("all", "both")
    if flush:
        for msg in ch.private_queue:
            if msg.record is not None and msg.record.status is None:
                msg.record.status = "flushed"
        ch.private_queue.clear()
    if ch.broadcast_flag:
        ch.stop_broadcast = True  # switch_channel_stop_broadcast: STOP_BROADCAST + CF_BREAK=1
        ch.cf_break = max(ch.cf_break, 1)
    else:
        ch.cf_break = 2 if flush else 1
    return "+OK\n"


def api_uuid_kill(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 2)
    if not argv:
        return "-USAGE: <uuid> [cause]\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return NO_CHANNEL
    ch.request_hangup(_cause(argv[1] if len(argv) > 1 else None))
    return "+OK\n"


def api_uuid_transfer(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 5)
    if len(argv) < 2:
        return TRANSFER_USAGE
    ch = _locate(core, argv[0])
    if ch is None:
        return NO_CHANNEL
    rest = argv[1:]
    if rest[0].lower() in ("-bleg", "-both"):
        rest = rest[1:]  # no bridged leg: the a-leg is the one transferred
        if not rest:
            return TRANSFER_USAGE
    dest = rest[0]
    dialplan = rest[1] if len(rest) > 1 else ch.dialplan or "XML"
    context = rest[2] if len(rest) > 2 else ch.context or "default"
    ch.request_transfer(dest, dialplan, context)
    return "+OK\n"


def api_uuid_setvar(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 3)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var> [value]\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return NO_CHANNEL
    if not argv[1]:
        return "-ERR No variable specified\n"
    ch.set_variable(argv[1], argv[2] if len(argv) > 2 else None)
    return "+OK\n"


def api_uuid_setvar_multi(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 2)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var>=<value>;<var>=<value>...\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return NO_CHANNEL
    for item in separate_string(argv[1], 256, ";"):
        name, sep, value = item.partition("=")
        if name:
            ch.set_variable(name, value if sep else None)
    return "+OK\n"


def api_uuid_getvar(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 3)
    if len(argv) < 2:
        return "-USAGE: <uuid> <var>\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return NO_CHANNEL
    return ch.variables.get(argv[1], "_undef_")


def api_uuid_dump(core: SimCore, arg: str) -> str:
    """mod_commands' uuid_dump: a CHANNEL_DATA event with the channel's data, serialized.

    ``txt`` (the default; any unknown format too) is switch_event_serialize with url-encoded
    values, ``plain`` the same unencoded, ``xml`` the event's XML form. (``json`` is not in the
    mod_commands source we have, so it is not simulated: it falls to ``txt``, as there.)
    """
    argv = separate_string(arg, 4)
    if not argv or not argv[0]:
        return "-USAGE: <uuid> [format]\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return "-ERR No Such Channel!\n"  # this API's own spelling in mod_commands
    fmt = argv[1].lower() if len(argv) > 1 else "txt"
    ev = core.new_event("CHANNEL_DATA")
    ev.extend(ch.basic_headers())
    ev.extend(ch.variable_headers())
    if fmt == "xml":
        return serialize_event(ev.headers, None, "xml")
    encode = url_encode if fmt != "plain" else str
    return "".join(f"{k}: {encode(v)}\n" for k, v in ev.headers if v != "") + "\n"


def api_uuid_exists(core: SimCore, arg: str) -> str:
    return "true" if arg.strip() and _locate(core, arg.strip().split()[0]) else "false"


def api_uuid_answer(core: SimCore, arg: str) -> str:
    return "+OK\n" if _locate(core, arg.strip()) else "-ERROR\n"


def api_uuid_send_dtmf(core: SimCore, arg: str) -> str:
    argv = separate_string(arg, 2)
    if len(argv) < 2 or not argv[0] or not argv[1]:
        return "-USAGE: <uuid> <dtmf_data>\n"
    ch = _locate(core, argv[0])
    if ch is None:
        return "-ERR Cannot locate session!\n"
    for d in argv[1]:
        ch.truth.dtmf_sent.append((core.now(), d))
    return ""  # prints nothing on success: the client sees "-ERR no reply"


def api_hash(core: SimCore, arg: str) -> str:
    usage = (
        "-ERR Usage: hash insert|insert_ifempty|select|delete|delete_ifmatch/realm/key[/value]\n"
    )
    argv = separate_string(arg, 4, "/")
    if len(argv) < 3 or not argv[0]:
        return usage
    op, key = argv[0].lower(), f"{argv[1]}_{argv[2]}"
    db = core.hash_db
    if op == "insert":
        if len(argv) < 4:
            return usage
        db[key] = argv[3]
        return "+OK\n"
    if op == "insert_ifempty":
        if len(argv) < 4:
            return usage
        if key in db:
            return "-ERR key already exists\n"
        db[key] = argv[3]
        return "+OK\n"
    if op == "delete":
        return "+OK\n" if db.pop(key, None) is not None else "-ERR Not found\n"
    if op == "delete_ifmatch":
        if len(argv) < 4:
            return usage
        if key not in db:
            return "-ERR Not found\n"
        if db[key] != argv[3]:
            return "-ERR Doesn't match\n"
        del db[key]
        return "+OK\n"
    if op == "select":
        return db.get(key, "")
    return usage


def _channel_row(core: SimCore, ch: SimChannel) -> dict[str, str]:
    created = core.epoch(ch.t_base)
    row = dict.fromkeys(SHOW_CHANNEL_KEYS, "")
    codec = ch.variables.get("read_codec", "")
    row.update(
        uuid=ch.uuid,
        direction="inbound",
        created=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)),
        created_epoch=str(int(created)),
        name=ch.name,
        state=ch.state,
        cid_name=ch.cid_name,
        cid_num=ch.cid_number,
        ip_addr="127.0.0.1",
        dest=ch.destination,
        application=ch.variables.get("current_application", ""),
        application_data=ch.variables.get("current_application_data", ""),
        dialplan=ch.dialplan,
        context=ch.context,
        read_codec=codec,
        read_rate=str(ch.rate),
        read_bit_rate="64000" if codec == "PCMU" else str(ch.rate * 16),
        write_codec=codec,
        write_rate=str(ch.rate),
        write_bit_rate="64000" if codec == "PCMU" else str(ch.rate * 16),
        hostname=core.settings.hostname,
        callstate=ch.call_state,
        call_uuid=ch.uuid,
        initial_cid_name=ch.cid_name,
        initial_cid_num=ch.cid_number,
        initial_ip_addr="127.0.0.1",
        initial_dest=ch.initial_destination,
        initial_dialplan="XML",
        initial_context="default",
    )
    return row


def api_show(core: SimCore, arg: str) -> str:
    tokens = arg.split()
    fmt = "delim"
    if len(tokens) >= 2 and tokens[-2].lower() == "as":
        fmt, tokens = tokens[-1].lower(), tokens[:-2]
    what = [t.lower() for t in tokens]
    if not what or what[0] not in ("channels", "calls"):
        return "-USAGE: codec|endpoint|application|api|dialplan|file|timer|calls [count]|channels [count|like <match string>]|calls|detailed_calls|bridged_calls|detailed_bridged_calls|aliases|complete|chat|management|modules|nat_map|say|interfaces|interface_types|tasks|limits|status\n"
    rows = [_channel_row(core, ch) for ch in core.live_channels()]
    if what[0] == "calls":
        rows = [
            {**{k: r[k] for k in _CALL_KEYS}, **{f"b_{k}": "" for k in _CALL_KEYS},
             "call_created_epoch": r["created_epoch"]}
            for r in rows
        ]  # fmt: skip
    if len(what) > 1 and what[1] == "count":
        rows = [{"count": str(len(rows))}]
    if fmt == "json":
        if not rows:
            return '{"row_count": 0}\n'
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
    keys = list(rows[0]) if rows else (SHOW_CHANNEL_KEYS if what[0] == "channels" else _CALL_KEYS)
    lines = [",".join(keys)] + [",".join(r.get(k, "") for k in keys) for r in rows]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def api_status(core: SimCore, arg: str) -> str:
    up = max(0.0, core.now() - core.started_t)
    us = int(up * 1_000_000)
    secs, micro = divmod(us, 1_000_000)
    ms, micro = divmod(micro, 1000)
    mins, s = divmod(secs, 60)
    hours, m = divmod(mins, 60)
    days, h = divmod(hours, 24)
    years, d = divmod(days, 365)
    live = len(core.live_channels())
    return (
        f"UP {_plural(years, 'year')}, {_plural(d, 'day')}, {_plural(h, 'hour')}, "
        f"{_plural(m, 'minute')}, {_plural(s, 'second')}, {_plural(ms, 'millisecond')}, "
        f"{_plural(micro, 'microsecond')}\n"
        "FreeSWITCH (Version 1.10.12 -release 64bit) is ready\n"
        f"{core.sessions_since_start} session(s) since startup\n"
        f"{live} session(s) - peak {core.peak_sessions}, last 5min {core.peak_sessions} \n"
        "0 session(s) per Sec out of max 30, peak 1, last 5min 1 \n"
        "1000 session(s) max\n"
        "min idle cpu 0.00/99.00\n"
        "Current Stack Size/Max 240K/8192K\n"
    )


def api_echo(core: SimCore, arg: str) -> str:
    return arg


def api_version(core: SimCore, arg: str) -> str:
    return "FreeSWITCH Version 1.10.12-release~64bit (-release 64bit)\n"


def api_create_uuid(core: SimCore, arg: str) -> str:
    return str(uuidlib.uuid4())


APIS: dict[str, Callable[[SimCore, str], str]] = {
    "uuid_broadcast": api_uuid_broadcast,
    "uuid_break": api_uuid_break,
    "uuid_kill": api_uuid_kill,
    "uuid_transfer": api_uuid_transfer,
    "uuid_setvar": api_uuid_setvar,
    "uuid_setvar_multi": api_uuid_setvar_multi,
    "uuid_getvar": api_uuid_getvar,
    "uuid_dump": api_uuid_dump,
    "uuid_exists": api_uuid_exists,
    "uuid_answer": api_uuid_answer,
    "uuid_send_dtmf": api_uuid_send_dtmf,
    "uuid_audio_fork": audio_fork_api,
    "uuid_audio_stream": audio_stream_api,
    "hash": api_hash,
    "show": api_show,
    "status": api_status,
    "echo": api_echo,
    "version": api_version,
    "create_uuid": api_create_uuid,
}
API_NAMES = frozenset(APIS)


async def run_api(core: SimCore, command: str, arg: str) -> str:
    """switch_api_execute as mod_event_socket calls it (api and bgapi alike)."""
    handler = APIS.get(command.lower())
    if handler is None:
        return f"-ERR {command} Command not found!\n"
    delay = core.settings.api_delays.get(command) or core.settings.api_delays.get(command.lower())
    if delay:
        await core.clock.sleep(delay)
    try:
        out = handler(core, arg)
    except Exception as exc:  # a simulator bug must not take the connection down
        log.exception("API %s %r failed in the simulator", command, arg)
        out = f"-ERR simulator error in {command}: {exc!r}\n"
    ev = core.new_event("API")
    ev.add("API-Command", command)
    ev.add("API-Command-Argument", arg)
    core.fire(ev)
    return out or "-ERR no reply\n"
