"""Call traces: redaction, the files, pruning old ones, reading back, replay's diff."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fsbridge.trace_retention as retention
from fsbridge.audio.wav import read_wav
from fsbridge.config import ConfigError, Profile, parse_config
from fsbridge.esl.protocol import event_from_headers
from fsbridge.replay import Cmd, commands_of, diff, realtime_sessions
from fsbridge.trace import (
    REDACTED,
    CallTrace,
    Redactor,
    Trace,
    TraceError,
    load_trace,
)
from fsbridge.trace_retention import open_trace_dirs, prune_traces

API_KEY = "sk-live-abcdef123456"
ESL_PW = "EslPw-secret-42"
ADMIN = "admin-token-777"
FORK_PW = "fork-pw-Zq93kLm0"
UUID = "11111111-2222-3333-4444-555555555555"


def config(tmp_path: Path, traces: Mapping[str, Any] | None = None, **profile: Any) -> Any:
    return parse_config(
        {
            "realtime": {"api_key": API_KEY, "headers": {"X-Org-Secret": "org-secret-value"}},
            "freeswitch": {"password": ESL_PW, "chunk_dir": str(tmp_path / "chunks")},
            "admin": {"token": ADMIN},
            "traces": {"dir": str(tmp_path / "traces"), **(traces or {})},
            "profiles": {"english": {"trace": True, **profile}},
        },
        env={},
    )


def fake_call(cfg: Any) -> Any:
    return SimpleNamespace(
        uuid=UUID,
        profile_name="english",
        profile=cfg.profiles["english"],
        channel={"Caller-Caller-ID-Number": "1000", "variable_sip_auth_password": "sip-pw-xyz"},
        started=time.monotonic(),
        state="listening",
    )


def summary() -> Any:
    return SimpleNamespace(as_dict=lambda: {"uuid": UUID, "outcome": "hangup", "turns": 1})


# -- redaction ------------------------------------------------------------------------------------
def test_redactor_learns_fork_credentials_from_the_command_that_sets_them() -> None:
    r = Redactor()
    cmd = f"api uuid_setvar_multi {UUID} MOD_AUDIO_BASIC_AUTH_USERNAME=fsb-1a2b3c4d;MOD_AUDIO_BASIC_AUTH_PASSWORD={FORK_PW}"
    assert FORK_PW not in r.command(cmd) and "fsb-1a2b3c4d" in r.command(cmd)
    # ... and scrubs it everywhere afterwards, whatever the header is called.
    assert r.text(f"Application-Data: x={FORK_PW}") == f"Application-Data: x={REDACTED}"


def test_redactor_learns_stream_extra_headers_basic_token_and_its_password() -> None:
    r = Redactor()
    token = base64.b64encode(f"fsb-user:{FORK_PW}".encode()).decode()
    cmd = f'api uuid_setvar {UUID} STREAM_EXTRA_HEADERS {{"Authorization":"Basic {token}"}}'
    out = r.command(cmd)
    assert token not in out and FORK_PW not in r.text(f"pw {FORK_PW}")


def test_redactor_headers_by_name_and_by_value() -> None:
    r = Redactor([API_KEY])
    headers = {
        "variable_MOD_AUDIO_BASIC_AUTH_PASSWORD": FORK_PW,
        "variable_STREAM_EXTRA_HEADERS": '{"Authorization":"Basic abc"}',
        "Authorization": f"Bearer {API_KEY}",
        "Caller-Caller-ID-Number": "1000",
        "Other": f"contains {API_KEY}",
    }
    out = r.headers(headers)
    assert out["variable_MOD_AUDIO_BASIC_AUTH_PASSWORD"] == REDACTED
    assert out["variable_STREAM_EXTRA_HEADERS"] == REDACTED
    assert out["Authorization"] == REDACTED
    assert out["Caller-Caller-ID-Number"] == "1000"
    assert out["Other"] == f"contains {REDACTED}"
    assert FORK_PW not in r.text(FORK_PW)  # learnt from the header it was redacted in


def test_redactor_for_config_knows_every_configured_secret(tmp_path: Path) -> None:
    r = Redactor.for_config(config(tmp_path))
    text = f"{API_KEY} {ESL_PW} {ADMIN} org-secret-value"
    assert r.text(text) == " ".join([REDACTED] * 4)
    assert r.obj({"session": {"api_key": "zzz-unknown"}, "list": [API_KEY]}) == {
        "session": {"api_key": REDACTED},
        "list": [REDACTED],
    }


@given(st.text(min_size=4, max_size=30).filter(lambda s: s != REDACTED), st.text(max_size=40),
       st.text(max_size=40))  # fmt: skip
def test_a_learnt_secret_never_survives_in_text(secret: str, before: str, after: str) -> None:
    r = Redactor([secret])
    assert secret not in r.text(before + secret + after) or secret in REDACTED


# -- the trace files ------------------------------------------------------------------------------
def record_a_call(tmp_path: Path, cfg: Any = None) -> tuple[Path, bytes, bytes]:
    cfg = cfg or config(tmp_path)
    call = fake_call(cfg)
    trace = CallTrace(cfg)
    trace.call_started(call)
    assert trace.path is not None
    trace.esl_command(
        call,
        f"api uuid_setvar_multi {UUID} MOD_AUDIO_BASIC_AUTH_USERNAME=fsb-1a2b3c4d;"
        f"MOD_AUDIO_BASIC_AUTH_PASSWORD={FORK_PW}",
    )
    trace.fork_audio(call, ['{"uuid":"' + UUID + '"}'])
    caller = np.arange(960, dtype="<i2").tobytes()  # 20 ms at 24 kHz
    model = (np.arange(2400, dtype="<i2") * 3).tobytes()
    trace.realtime_event(call, "in", {"type": "session.created", "session": {"id": "s1"}})
    sent = {"type": "input_audio_buffer.append", "audio": base64.b64encode(caller).decode()}
    trace.realtime_event(call, "out", sent)
    assert sent["audio"] == base64.b64encode(caller).decode()  # the sent event is not touched
    trace.realtime_event(call, "out", sent)
    trace.realtime_event(
        call,
        "in",
        {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1",
         "delta": base64.b64encode(model).decode()},
    )  # fmt: skip
    ev = event_from_headers(
        {
            "Event-Name": "CUSTOM",
            "Event-Subclass": "mod_audio_fork::connect",
            "Unique-ID": UUID,
            "variable_MOD_AUDIO_BASIC_AUTH_PASSWORD": FORK_PW,
            "variable_some_note": f"password is {FORK_PW}",
        }
    )
    trace.esl_event(call, ev)
    trace.state_changed(call)
    trace.call_ended(call, summary())
    return trace.path, caller, model


def test_trace_files_audio_as_wav_with_references(tmp_path: Path) -> None:
    path, caller, model = record_a_call(tmp_path)
    assert sorted(os.listdir(path)) == ["caller.wav", "model.wav", "trace.jsonl"]
    samples, rate = read_wav(path / "caller.wav")
    assert rate == 24000 and samples.tobytes() == caller * 2
    assert read_wav(path / "model.wav")[0].tobytes() == model
    lines = [json.loads(x) for x in (path / "trace.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "meta" and lines[0]["uuid"] == UUID
    assert [x["t"] for x in lines] == sorted(x["t"] for x in lines)
    appends = [x for x in lines if x["kind"] == "rt" and x["dir"] == "out"]
    assert [a["event"]["audio"] for a in appends] == [
        {"$audio": "caller.wav", "offset": 0, "bytes": 1920},
        {"$audio": "caller.wav", "offset": 1920, "bytes": 1920},
    ]
    assert all("base64" not in json.dumps(x) for x in lines)
    assert lines[-1]["kind"] == "end" and lines[-1]["summary"]["outcome"] == "hangup"
    assert (path / "trace.jsonl").stat().st_mode & 0o777 == 0o640


def test_no_secret_anywhere_in_the_trace(tmp_path: Path) -> None:
    path, _, _ = record_a_call(tmp_path)
    blob = b"".join(p.read_bytes() for p in path.iterdir())
    for secret in (API_KEY, ESL_PW, ADMIN, FORK_PW, "org-secret-value", "sip-pw-xyz"):
        assert secret.encode() not in blob, secret


def test_load_trace_restores_audio(tmp_path: Path) -> None:
    path, caller, model = record_a_call(tmp_path)
    trace = load_trace(path / "trace.jsonl")
    rt = [r for r in trace.of("rt")]
    assert base64.b64decode(trace.restored(rt[1]["event"])["audio"]) == caller
    sessions = realtime_sessions(trace)
    assert len(sessions) == 1 and sessions[0][0][0] == 0.0
    delta = sessions[0][1][1]
    assert base64.b64decode(delta["delta"]) == model


def test_a_trace_cut_short_is_read_up_to_the_last_whole_line(tmp_path: Path) -> None:
    path, _, _ = record_a_call(tmp_path)
    events = path / "trace.jsonl"
    whole = events.read_text().splitlines()
    events.write_text("\n".join(whole) + '\n{"t": 9.0, "kind": "rt", "ev')
    assert len(load_trace(path).records) == len(whole)


def test_load_trace_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(tmp_path / "nothing")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "trace.jsonl").write_text('{"t": 0, "kind": "rt"}\n')
    with pytest.raises(TraceError, match="meta"):
        load_trace(tmp_path / "t")
    (tmp_path / "t" / "trace.jsonl").write_text('{"t": 0, "kind": "meta"}\nnot json\n{}\n')
    with pytest.raises(TraceError, match=":2: not a JSON line"):
        load_trace(tmp_path / "t")


def test_tracing_off_writes_nothing_but_still_learns_credentials(tmp_path: Path) -> None:
    cfg = config(tmp_path, trace=False)
    call = fake_call(cfg)
    trace = CallTrace(cfg)
    trace.call_started(call)
    trace.esl_command(call, f"api uuid_setvar_multi {UUID} MOD_AUDIO_BASIC_AUTH_PASSWORD={FORK_PW}")
    assert trace.path is None and not (tmp_path / "traces").exists()
    path = trace.enable(call, live=True)  # turned on later from the admin API
    trace.esl_event(call, event_from_headers({"Event-Name": "X", "Application-Data": FORK_PW}))
    trace.call_ended(call, summary())
    assert FORK_PW.encode() not in (path / "trace.jsonl").read_bytes()
    assert json.loads((path / "trace.jsonl").read_text().splitlines()[0])["live"] is True


def test_a_second_trace_of_the_same_uuid_gets_its_own_directory(tmp_path: Path) -> None:
    first, _, _ = record_a_call(tmp_path)
    second, _, _ = record_a_call(tmp_path)
    assert first != second and second.name == f"{UUID}.1"


def test_unwritable_trace_dir_is_logged_not_raised(tmp_path: Path, caplog: Any) -> None:
    (tmp_path / "traces").write_text("a file, not a directory")
    cfg = config(tmp_path)
    trace = CallTrace(cfg)
    trace.call_started(fake_call(cfg))
    assert trace.path is None and "cannot write the call trace" in caplog.text


# -- pruning old traces ---------------------------------------------------------------------------
def old_trace(base: Path, name: str, age_s: float, size: int = 0) -> Path:
    """A finished trace last written ``age_s`` ago, ``size`` bytes in all."""
    d = base / name
    d.mkdir(parents=True)
    (d / "caller.wav").write_bytes(b"\0" * size)
    events = d / "trace.jsonl"
    events.write_bytes(b"")
    t = time.time() - age_s
    os.utime(events, (t, t))
    os.utime(d, (time.time() - 1000 + age_s,) * 2)  # the directory's own mtime says nothing
    return d


def names(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir())


def test_prune_keeps_the_newest_by_trace_jsonl_mtime(tmp_path: Path) -> None:
    ages = {"e": 50, "a": 40, "d": 30, "b": 20, "c": 10}
    for name, age in ages.items():
        old_trace(tmp_path, name, age)
    removed = prune_traces(tmp_path, 2, None)
    assert [p.name for p in removed] == ["e", "a", "d"]  # oldest first
    assert names(tmp_path) == ["b", "c"]
    assert prune_traces(tmp_path, 2, None) == [] and names(tmp_path) == ["b", "c"]
    assert prune_traces(tmp_path, None, None) == []


def test_prune_by_total_size(tmp_path: Path) -> None:
    for i, name in enumerate("abcd"):
        old_trace(tmp_path, name, 40 - i * 10, size=1000)
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "extra.bin").write_bytes(b"x" * 500)  # nested files count too
    removed = prune_traces(tmp_path, None, 2600)  # 4500 bytes: a, b go (3500, 2500)
    assert [p.name for p in removed] == ["a", "b"] and names(tmp_path) == ["c", "d"]
    removed = prune_traces(tmp_path, 5, 1500)  # under the count, over the size
    assert [p.name for p in removed] == ["c"] and names(tmp_path) == ["d"]
    # the newest goes too when it alone is over the limit
    assert [p.name for p in prune_traces(tmp_path, 5, 1000)] == ["d"] and names(tmp_path) == []


def test_prune_both_limits_must_hold(tmp_path: Path) -> None:
    for i, name in enumerate("abcd"):
        old_trace(tmp_path, name, 40 - i * 10, size=1000)
    assert [p.name for p in prune_traces(tmp_path, 3, 10_000)] == ["a"]
    assert [p.name for p in prune_traces(tmp_path, 3, 1500)] == ["b", "c"]


def test_prune_never_deletes_what_is_not_a_trace(tmp_path: Path) -> None:
    base = tmp_path / "traces"
    for i, name in enumerate("abc"):
        old_trace(base, name, 30 - i * 10, size=100)
    notes = base / "notes"  # an operator's directory, older than every trace
    notes.mkdir()
    (notes / "call.txt").write_bytes(b"n" * 10_000)
    os.utime(notes, (1, 1))
    (base / "README").write_text("kept by hand")
    outside = old_trace(tmp_path / "elsewhere", "kept", 999, size=100)
    (base / "link").symlink_to(outside, target_is_directory=True)
    removed = prune_traces(base, 1, 1)
    assert [p.name for p in removed] == ["a", "b", "c"]
    assert names(base) == ["README", "link", "notes"]
    assert (notes / "call.txt").exists() and (outside / "trace.jsonl").exists()


def test_prune_never_deletes_an_open_trace_but_counts_its_size(tmp_path: Path) -> None:
    open_dir = old_trace(tmp_path, "open", 100, size=5000)  # the oldest, still being written
    for i, name in enumerate("abc"):
        old_trace(tmp_path, name, 30 - i * 10, size=1000)
    exclude = {tmp_path / "x" / ".." / "open"}  # matched however it is spelt
    removed = prune_traces(tmp_path, 2, None, exclude=exclude)
    assert [p.name for p in removed] == ["a"]  # "keep" counts finished traces only
    assert names(tmp_path) == ["b", "c", "open"]
    removed = prune_traces(tmp_path, None, 5500, exclude=exclude)  # 7000 bytes with it
    assert [p.name for p in removed] == ["b", "c"] and names(tmp_path) == ["open"]
    assert open_dir.exists()


def test_prune_tolerates_a_trace_vanishing_meanwhile(tmp_path: Path, monkeypatch: Any) -> None:
    for i, name in enumerate("abcd"):
        old_trace(tmp_path, name, 40 - i * 10)
    real_rmtree = shutil.rmtree

    def racing_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name == "a":
            real_rmtree(path)  # another instance pruned it first
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(retention.shutil, "rmtree", racing_rmtree)
    removed = prune_traces(tmp_path, 2, None)
    assert [p.name for p in removed] == ["b"]  # "a" went, just not by us
    assert names(tmp_path) == ["c", "d"]
    assert prune_traces(tmp_path / "missing", 1, None) == []


def test_prune_logs_an_undeletable_trace_and_goes_on(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    for i, name in enumerate("abcd"):
        old_trace(tmp_path, name, 40 - i * 10)
    real_rmtree = shutil.rmtree

    def stubborn_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name == "a":
            raise PermissionError(13, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(retention.shutil, "rmtree", stubborn_rmtree)
    with caplog.at_level(logging.WARNING, logger="fsbridge.trace"):
        removed = prune_traces(tmp_path, 2, None)
    assert [p.name for p in removed] == ["b", "c"] and names(tmp_path) == ["a", "d"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot delete the old trace" in warnings[0].getMessage()


def test_a_finished_call_prunes_the_oldest_traces(tmp_path: Path) -> None:
    cfg = config(tmp_path, traces={"keep": 2})
    base = tmp_path / "traces"
    for i, name in enumerate(["old-1", "old-2", "old-3"]):
        old_trace(base, name, 300 - i * 100)
    running = CallTrace(cfg)  # a call still going on, its trace the oldest on disk
    other = fake_call(cfg)
    other.uuid = "99999999-2222-3333-4444-555555555555"
    running.call_started(other)
    assert running.path is not None and running.path in open_trace_dirs()
    os.utime(running.path / "trace.jsonl", (1, 1))
    path, _, _ = record_a_call(tmp_path, cfg)
    assert names(base) == sorted(["old-3", path.name, other.uuid])
    running.call_ended(other, summary())  # now finished, and the newest
    assert running.path not in open_trace_dirs()
    assert names(base) == sorted([path.name, other.uuid])


async def test_pruning_runs_off_the_event_loop(tmp_path: Path, monkeypatch: Any) -> None:
    cfg = config(tmp_path, traces={"keep": 1, "max_total_mb": 1})
    base = tmp_path / "traces"
    old_trace(base, "old", 100)
    threads: list[int] = []
    real_prune = retention.prune_traces

    def recording_prune(*args: Any, **kwargs: Any) -> list[Path]:
        threads.append(threading.get_ident())
        return real_prune(*args, **kwargs)

    monkeypatch.setattr(retention, "prune_traces", recording_prune)
    path, _, _ = record_a_call(tmp_path, cfg)
    assert retention._PRUNING  # scheduled, referenced until done
    await asyncio.wait_for(asyncio.gather(*retention._PRUNING), 5)
    assert threads and threads[0] != threading.get_ident()
    assert names(base) == [path.name]


async def test_a_failing_prune_is_logged(tmp_path: Path, monkeypatch: Any, caplog: Any) -> None:
    def broken(*args: Any, **kwargs: Any) -> list[Path]:
        raise RuntimeError("boom")

    monkeypatch.setattr(retention, "prune_traces", broken)
    path, _, _ = record_a_call(tmp_path, config(tmp_path, traces={"keep": 1}))
    pending = list(retention._PRUNING)
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(0)  # the done callback runs on the loop
    assert not retention._PRUNING and "pruning the traces failed" in caplog.text
    assert path.exists()


def test_trace_retention_config() -> None:
    cfg = parse_config({}, env={})
    assert cfg.traces.keep == 200 and cfg.traces.max_total_mb is None
    cfg = parse_config({"traces": {"keep": None, "max_total_mb": 500}}, env={})
    assert cfg.traces.keep is None and cfg.traces.max_total_mb == 500.0
    for bad in ({"keep": 0}, {"max_total_mb": 0}):
        with pytest.raises(ConfigError, match="traces"):
            parse_config({"traces": bad}, env={})


# -- replay's comparison ----------------------------------------------------------------------------
def synthetic(commands: list[str], truncate_ms: int | None = None, uuid: str = UUID) -> Trace:
    meta = {
        "kind": "meta",
        "uuid": uuid,
        "profile": Profile().model_dump(mode="json") | {"greeting": "/prompts/hello.wav"},
        "config": {
            "freeswitch": {"chunk_dir": "/var/chunks"},
            "listen": {"public_url": "ws://h:1"},
        },
    }
    records: list[dict[str, Any]] = [meta]
    for i, c in enumerate(commands):
        records.append({"t": i * 0.1, "kind": "esl_command", "command": c.replace("{U}", uuid)})
    records.append(
        {
            "t": 9,
            "kind": "rt",
            "dir": "out",
            "event": {"type": "input_audio_buffer.append", "audio": {}},
        }
    )
    if truncate_ms is not None:
        event = {"type": "conversation.item.truncate", "item_id": "i1", "content_index": 0,
                 "audio_end_ms": truncate_ms, "event_id": f"e{truncate_ms}"}  # fmt: skip
        records.append({"t": 9.5, "kind": "rt", "dir": "out", "event": event})
    return Trace(Path("."), meta, records)


BASE = [
    "api uuid_setvar_multi {U} MOD_AUDIO_BASIC_AUTH_USERNAME=fsb-1a2b3c4d;MOD_AUDIO_BASIC_AUTH_PASSWORD=[redacted]",
    "bgapi uuid_broadcast {U} {fsbridge_chunk=greeting}/prompts/hello.wav aleg",
    "api uuid_audio_fork {U} start ws://h:1/fork/{U} mono 8k {}",
    "sendmsg {U}\ncall-command: execute\nexecute-app-arg: {fsbridge_chunk=c1}/var/chunks/{U}/c1.wav\nEvent-UUID: 1234",
    "api uuid_break {U} all",
]


def test_commands_are_normalised_per_call() -> None:
    cmds = commands_of(synthetic(BASE, 1200))
    texts = [c.text for c in cmds]
    assert texts[0].endswith("USERNAME=fsb-<id>;MOD_AUDIO_BASIC_AUTH_PASSWORD=[redacted]")
    assert texts[1] == "bgapi uuid_broadcast <uuid> {fsbridge_chunk=greeting}<greeting> aleg"
    assert texts[2] == "api uuid_audio_fork <uuid> start <public_url>/fork/<uuid> mono 8k {}"
    assert "Event-UUID" not in texts[3] and "<chunks>/c1.wav" in texts[3]
    assert [c.stream for c in cmds].count("rt") == 1  # appends are audio, not commands
    assert cmds[-1].numbers == (1200,) and "event_id" not in cmds[-1].text


def test_same_calls_have_no_differences_across_uuids_and_small_drift() -> None:
    old = commands_of(synthetic(BASE, 1200))
    new = commands_of(synthetic(BASE, 1260, uuid="99999999-2222-3333-4444-555555555555"))
    assert diff(old, new).same


def test_differences_are_reported_with_both_sides() -> None:
    old = commands_of(synthetic(BASE, 1200))
    changed = [*BASE[:4], "api uuid_break {U}"]  # the 'all' lost: queued chunks would still play
    d = diff(old, commands_of(synthetic(changed, 2400)))
    assert not d.same
    assert any(x.startswith("- ") and x.endswith("esl api uuid_break <uuid> all") for x in d.lines)
    assert any(x.startswith("+ ") and x.endswith("esl api uuid_break <uuid>") for x in d.lines)
    assert any("2400" in x for x in d.lines)  # a truncate far from the recorded one


def test_timing_moves_are_reported_apart() -> None:
    a = [Cmd(1.0, "esl", "api x")]
    b = [Cmd(1.6, "esl", "api x")]
    assert diff(a, b).same and not diff(a, b).moved
    d = diff(a, b, timing_ms=300)
    assert d.same and len(d.moved) == 1 and "was at 1.000s" in d.moved[0]
