"""EslController (greenswitch in its own thread) against a small asyncio fake of FreeSWITCH.

The fake speaks the real framing (reference/esl-and-greenswitch.md §1): auth/request greeting,
command/reply and api/response, Content-Length-first event frames with url-encoded values, the
bgapi reply with its Job-UUID header and a BACKGROUND_JOB event, the disconnect notice. It is
written here, independently of fsbridge.esl.protocol, so a framing bug cannot hide on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import pytest

from fsbridge.esl import (
    EslAuthError,
    EslCommandError,
    EslConnectError,
    EslController,
    EslDisconnected,
    EslEvent,
)

PASSWORD = "s3cret-pw"
DISCONNECT_BODY = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
FS_SAFE = ",/.-_!$'()*~"  # switch_url_encode leaves these alone


def fs_encode(value: str) -> str:
    return quote(value, safe=FS_SAFE)


def event_frame(headers: dict[str, str], body: str | None = None) -> bytes:
    lines = "".join(f"{k}: {fs_encode(v)}\n" for k, v in headers.items())
    if body:
        payload = (lines + f"Content-Length: {len(body.encode())}\n\n").encode() + body.encode()
    else:
        payload = (lines + "\n").encode()
    return f"Content-Length: {len(payload)}\nContent-Type: text/event-plain\n\n".encode() + payload


def reply_frame(text: str, extra: str = "") -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n{extra}\n".encode()


def api_frame(body: str) -> bytes:
    data = body.encode()
    return f"Content-Type: api/response\nContent-Length: {len(data)}\n\n".encode() + data


def disconnect_frame() -> bytes:
    data = DISCONNECT_BODY.encode()
    return f"Content-Type: text/disconnect-notice\nContent-Length: {len(data)}\n\n".encode() + data


class FakeFreeSwitch:
    """Just enough ESL server for the controller's contract."""

    def __init__(self, *, greet: bool = True, channels: tuple[str, ...] = ("chan-1",)) -> None:
        self.greet = greet
        self.channels = set(channels)
        self.port = 0
        self.commands: list[str] = []
        self.subscriptions: list[str] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.hanging = asyncio.Event()  # set when an 'api hang' arrived
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self.writers:
            w.close()
        for task in list(self._conn_tasks):
            task.cancel()
        await asyncio.gather(*self._conn_tasks, return_exceptions=True)
        await self._server.wait_closed()

    def push(self, frame: bytes) -> None:
        for w in self.writers:
            w.write(frame)

    def drop_all(self) -> None:
        """The peer vanishes: close every socket without a notice."""
        for w in self.writers:
            w.close()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        self.writers.append(writer)
        try:
            if self.greet:
                writer.write(b"Content-Type: auth/request\n\n")
            authed = False
            while True:
                try:
                    raw = await reader.readuntil(b"\n\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = raw.decode().strip("\n").split("\n")
                cmd, headers = lines[0], dict(line.split(": ", 1) for line in lines[1:])
                self.commands.append(cmd)
                if not authed:
                    if cmd == f"auth {PASSWORD}":
                        authed = True
                        writer.write(reply_frame("+OK accepted"))
                    elif cmd.startswith("auth "):
                        writer.write(reply_frame("-ERR invalid") + disconnect_frame())
                        await writer.drain()
                        writer.close()
                        return
                    else:
                        writer.write(reply_frame("-ERR command not found"))
                    continue
                if cmd == "api hang":
                    # Like a slow API in FreeSWITCH: it blocks the connection's only thread,
                    # so nothing after it is answered either (replies stay in order).
                    self.hanging.set()
                    await reader.read()
                    return
                if not self._handle(cmd, headers, writer):
                    await writer.drain()
                    writer.close()
                    return
                await writer.drain()
        finally:
            self._conn_tasks.discard(task)

    def _handle(self, cmd: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        if cmd.startswith("event plain "):
            self.subscriptions.append(cmd)
            writer.write(reply_frame("+OK event listener enabled plain"))
        elif cmd == "exit":
            writer.write(reply_frame("+OK bye") + disconnect_frame())
            return False
        elif cmd.startswith("api "):
            if cmd == "api drop":
                return False  # peer gone mid-command
            elif cmd == "api garbage":
                writer.write(b"this is not ESL\n\n")
            elif cmd == "api torn":
                writer.write(b"Content-Type: api/response\nContent-Length: 50\n\nshort")
                return False
            else:
                writer.write(api_frame(self._api(cmd[4:])))
        elif cmd.startswith("bgapi "):
            job = headers["Job-UUID"]
            writer.write(reply_frame(f"+OK Job-UUID: {job}", f"Job-UUID: {job}\n"))
            if cmd.startswith("bgapi hang"):
                return True  # the job never finishes
            body = self._api(cmd[6:])
            writer.write(
                event_frame(
                    {
                        "Event-Name": "BACKGROUND_JOB",
                        "Job-UUID": job,
                        "Job-Command": cmd[6:].split()[0],
                    },
                    body,
                )
            )
        elif cmd.startswith("sendmsg "):
            uuid = cmd.split()[1]
            if uuid in self.channels and headers.get("call-command") == "execute":
                writer.write(reply_frame("+OK"))
            else:
                writer.write(reply_frame(f"-ERR invalid session id [{uuid}]"))
        else:
            writer.write(reply_frame("-ERR command not found"))
        return True

    @staticmethod
    def _api(cmd: str) -> str:
        name, _, arg = cmd.partition(" ")
        if name == "echo":
            return arg
        if name == "status":
            return "UP 0 years, 0 days\nready: yes\n"
        if name == "uuid_break":
            return "-ERR No such channel!\n"
        return f"-ERR {name} Command not found!\n"


@pytest.fixture
async def fake() -> AsyncIterator[FakeFreeSwitch]:
    server = FakeFreeSwitch()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_controller() -> AsyncIterator[Callable[..., EslController]]:
    made: list[EslController] = []

    def factory(port: int, password: str = PASSWORD, **kw: float) -> EslController:
        kw.setdefault("command_timeout", 2.0)
        kw.setdefault("connect_timeout", 2.0)
        ctl = EslController("127.0.0.1", port, password, **kw)  # type: ignore[arg-type]
        made.append(ctl)
        return ctl

    yield factory
    for ctl in made:
        await ctl.close()
    assert not esl_threads(), "controller threads left behind"


def esl_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fsbridge-esl")]


async def wait_until(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def collect(ctl: EslController, n: int, timeout: float = 3.0) -> list[EslEvent]:
    out: list[EslEvent] = []

    async def run() -> None:
        async for ev in ctl.events():
            out.append(ev)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


# ------------------------------------------------------------------------------ connect


async def test_connect_auth_and_subscribe(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    assert not ctl.connected
    await ctl.connect()
    assert ctl.connected
    assert fake.commands[0] == f"auth {PASSWORD}"
    sub = fake.subscriptions[0]
    assert sub.startswith("event plain CHANNEL_PARK ")
    # Subclasses come after CUSTOM, as FreeSWITCH requires.
    words = sub.split()
    assert words.index("CUSTOM") < words.index("mod_audio_fork::connect")
    assert "mod_audio_stream::error" in words
    await ctl.close()
    assert not ctl.connected
    assert "exit" in fake.commands
    assert not esl_threads()


async def test_wrong_password(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port, password="wrong-guess-123")
    with pytest.raises(EslAuthError) as info:
        await ctl.connect()
    assert "wrong-guess-123" not in str(info.value)
    assert f"127.0.0.1:{fake.port}" in str(info.value)
    assert not ctl.connected
    assert not esl_threads()


async def test_connection_refused(make_controller) -> None:
    # A port that was free a moment ago: nothing listens there.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    ctl = make_controller(port)
    with pytest.raises(EslConnectError) as info:
        await ctl.connect()
    assert not isinstance(info.value, EslAuthError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert PASSWORD not in str(info.value)


async def test_peer_that_never_greets(make_controller) -> None:
    server = FakeFreeSwitch(greet=False)
    await server.start()
    try:
        ctl = make_controller(server.port, connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(EslConnectError, match="handshake"):
            await ctl.connect()
        assert time.monotonic() - started < 2.0
    finally:
        await server.stop()


async def test_calls_before_connect_fail_clearly(make_controller, fake: FakeFreeSwitch) -> None:
    ctl = make_controller(fake.port)
    with pytest.raises(EslDisconnected):
        await ctl.api("echo hi")
    events = [ev async for ev in ctl.events()]
    assert events == []


# ------------------------------------------------------------------------------ commands


async def test_200_concurrent_api_calls(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    results = await asyncio.gather(*(ctl.api(f"echo value-{i}") for i in range(200)))
    assert results == [f"value-{i}" for i in range(200)]


async def test_api_error_reply(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    with pytest.raises(EslCommandError) as info:
        await ctl.api("uuid_break nope all")
    assert info.value.reply == "-ERR No such channel!\n"
    assert info.value.command == "uuid_break"
    # The connection survives an error reply.
    assert await ctl.api("echo still-here") == "still-here"


async def test_api_rejects_newlines(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    with pytest.raises(ValueError):
        await ctl.api("echo a\n\napi evil")
    assert await ctl.api("echo ok") == "ok"


async def test_bgapi_result(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    out, out2 = await asyncio.gather(ctl.bgapi("status"), ctl.bgapi("echo two words"))
    assert out == "UP 0 years, 0 days\nready: yes\n"
    assert out2 == "two words"
    sent = [c for c in fake.commands if c.startswith("bgapi ")]
    assert sent == ["bgapi status", "bgapi echo two words"]
    with pytest.raises(EslCommandError, match="Command not found"):
        await ctl.bgapi("nosuchapi x")


async def test_bgapi_job_not_on_event_stream(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    await ctl.bgapi("status")
    fake.push(event_frame({"Event-Name": "CHANNEL_PARK", "Unique-ID": "chan-1"}))
    (ev,) = await collect(ctl, 1)
    assert ev.name == "CHANNEL_PARK"


async def test_sendmsg(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    headers = {
        "call-command": "execute",
        "execute-app-name": "playback",
        "execute-app-arg": "/tmp/chunk 1.wav",
        "event-lock": "true",
    }
    await ctl.sendmsg("chan-1", headers)
    assert "sendmsg chan-1" in fake.commands
    with pytest.raises(EslCommandError) as info:
        await ctl.sendmsg("gone-uuid", headers)
    assert info.value.reply == "-ERR invalid session id [gone-uuid]"


# ------------------------------------------------------------------------------ events


async def test_events_in_order_and_decoded(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    names = ["CHANNEL_EXECUTE", "PLAYBACK_START", "PLAYBACK_STOP", "CHANNEL_EXECUTE_COMPLETE"]
    for i, name in enumerate(names * 5):
        fake.push(
            event_frame(
                {
                    "Event-Name": name,
                    "Unique-ID": "chan-1",
                    "Event-Sequence": str(i),
                    "Playback-File-Path": "{chunk_id=7}/tmp/a b.wav",
                    "variable_sip_note": "x: y\nsecond line",
                    "variable_fsbridge_profile": "türkçe",
                }
            )
        )
    fake.push(
        event_frame(
            {
                "Event-Name": "CUSTOM",
                "Event-Subclass": "mod_audio_fork::connect_failed",
                "Unique-ID": "chan-1",
            },
            '{"reason":"HS: 100% fail: x"}',
        )
    )
    events = await collect(ctl, 21)
    assert [ev.name for ev in events[:20]] == names * 5
    assert [ev.headers["Event-Sequence"] for ev in events[:20]] == [str(i) for i in range(20)]
    first = events[0]
    assert first.uuid == "chan-1"
    assert first.headers["Playback-File-Path"] == "{chunk_id=7}/tmp/a b.wav"
    assert first.variable("sip_note") == "x: y\nsecond line"
    assert first.variable("fsbridge_profile") == "türkçe"
    custom = events[20]
    assert custom.name == "CUSTOM"
    assert custom.subclass == "mod_audio_fork::connect_failed"
    assert custom.body == '{"reason":"HS: 100% fail: x"}'  # bodies are not url-decoded


# ------------------------------------------------------------------------------ failures


async def test_command_timeout_breaks_connection(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port, command_timeout=0.3)
    await ctl.connect()
    # One command waits behind the hanging one; both must fail, not get each other's reply.
    hang = asyncio.ensure_future(ctl.api("hang"))
    await asyncio.wait_for(fake.hanging.wait(), 2)
    behind = asyncio.ensure_future(ctl.api("echo behind"))
    results = await asyncio.wait_for(asyncio.gather(hang, behind, return_exceptions=True), 3)
    assert all(isinstance(r, EslDisconnected) for r in results), results
    assert "'hang'" in str(results[0]) and "'hang'" in str(results[1])
    assert not ctl.connected
    with pytest.raises(EslDisconnected):
        await ctl.api("echo later")
    # The events iterator ends.
    assert [ev async for ev in ctl.events()] == []


async def test_server_disconnect_fails_pending(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port, command_timeout=5.0)
    await ctl.connect()
    fake.push(event_frame({"Event-Name": "CHANNEL_PARK", "Unique-ID": "chan-1"}))
    started = time.monotonic()
    bg = asyncio.ensure_future(ctl.bgapi("hang-forever-job"))  # reply comes, job never does
    with pytest.raises(EslDisconnected):
        await asyncio.wait_for(ctl.api("drop"), 3)
    with pytest.raises(EslDisconnected):
        await asyncio.wait_for(bg, 3)
    assert time.monotonic() - started < 3.0  # failed at once, not after command_timeout
    await wait_until(lambda: not ctl.connected)
    # Events read before the loss are still delivered, then the stream ends.
    events = [ev async for ev in ctl.events()]
    assert [ev.name for ev in events] == ["CHANNEL_PARK"]
    with pytest.raises(EslDisconnected):
        await ctl.api("echo later")


async def test_peer_vanishes_without_notice(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    assert await ctl.api("echo up") == "up"
    fake.drop_all()
    await asyncio.wait_for(_drain(ctl), 3)
    assert not ctl.connected


async def _drain(ctl: EslController) -> None:
    async for _ in ctl.events():
        pass


async def test_close_is_idempotent_and_leaves_no_thread(fake, make_controller) -> None:
    before = set(threading.enumerate())
    ctl = make_controller(fake.port)
    await ctl.connect()
    assert esl_threads()
    pending = asyncio.ensure_future(_drain(ctl))
    await asyncio.gather(ctl.close(), ctl.close())
    await ctl.close()
    await asyncio.wait_for(pending, 2)
    assert not esl_threads()
    leftover = {t for t in set(threading.enumerate()) - before if not t.name.startswith("asyncio_")}
    assert not leftover, leftover
    with pytest.raises(EslDisconnected):
        await ctl.api("echo after close")


async def test_cancelled_api_does_not_desync(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    task = asyncio.ensure_future(ctl.api("echo first"))
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    results = await asyncio.gather(*(ctl.api(f"echo n{i}") for i in range(20)))
    assert results == [f"n{i}" for i in range(20)]


async def test_repr_has_no_password(fake: FakeFreeSwitch, make_controller) -> None:
    ctl = make_controller(fake.port)
    await ctl.connect()
    assert PASSWORD not in repr(ctl)
    assert PASSWORD not in repr(ctl.__dict__.get("_esl"))


@pytest.mark.parametrize("command", ["garbage", "torn"])
async def test_garbage_from_server_breaks_connection(
    fake: FakeFreeSwitch, make_controller, command: str
) -> None:
    ctl = make_controller(fake.port, command_timeout=5.0)
    await ctl.connect()
    started = time.monotonic()
    with pytest.raises(EslDisconnected) as info:
        await asyncio.wait_for(ctl.api(command), 3)
    assert time.monotonic() - started < 3.0
    if command == "garbage":
        assert "protocol error" in str(info.value)
    await asyncio.wait_for(_drain(ctl), 3)
    assert not ctl.connected
