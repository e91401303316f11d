"""The inbound Event Socket server (mod_event_socket), one task per client connection.

Commands are handled strictly in order on the connection's task (replies come back in request
order). Events reach the socket only from the connection's event pump, which waits while a
command runs: so a slow ``api`` holds back event delivery on that connection, exactly as in
FreeSWITCH, where events are flushed only from the read loop. ``bgapi`` jobs run on their own
tasks (owned by the server) and report with a BACKGROUND_JOB event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib

from fsbridge.sim.fs_api import run_api
from fsbridge.sim.fs_apps import PrivateMsg, new_playback_record
from fsbridge.sim.fs_core import SimCore
from fsbridge.sim.fs_events import SimEvent, Subscription, canonical_event_name
from fsbridge.sim.fs_wire import (
    CommandParser,
    EslCommand,
    EslProtocolError,
    api_response,
    auth_request,
    command_reply,
    disconnect_notice,
    event_frame,
)

__all__ = ["EslConnection", "EslServer"]

log = logging.getLogger(__name__)
FIRST_COMMAND_TIMEOUT = 25.0  # real seconds, as read_packet's first read
MAX_LOST_EVENTS = 500
NOT_FOUND = "-ERR command not found"


class EslServer:
    def __init__(self, core: SimCore, host: str, port: int) -> None:
        self.core, self.host, self.port = core, host, port
        self._server: asyncio.Server | None = None
        self.connections: set[EslConnection] = set()
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self.jobs: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        conn = EslConnection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass  # only stop() cancels us; ending quietly keeps asyncio's stream callback happy
        except Exception:  # a simulator bug closes this connection, not the server
            log.exception("ESL connection failed in the simulator")
        finally:
            self.connections.discard(conn)
            self._conn_tasks.discard(task)

    def start_job(self, conn: EslConnection, job_uuid: str, command: str, arg: str | None) -> None:
        task = asyncio.create_task(self._job(job_uuid, command, arg), name=f"bgapi-{job_uuid[:8]}")
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)

    async def _job(self, job_uuid: str, command: str, arg: str | None) -> None:
        out = await run_api(self.core, command, arg or "")
        ev = self.core.new_event("BACKGROUND_JOB")
        ev.add("Job-UUID", job_uuid)
        ev.add("Job-Command", command)
        if arg:
            ev.add("Job-Command-Arg", arg)
        ev.body = out
        self.core.fire(ev)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown("The system is being shut down.\n")
        for job in list(self.jobs):
            job.cancel()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        if self._conn_tasks:  # closed sockets end their readers; a stuck api is cancelled
            _, stuck = await asyncio.wait(list(self._conn_tasks), timeout=2.0)
            for t in stuck:
                t.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class EslConnection:
    """One inbound ESL client: auth, subscription, commands, event delivery."""

    def __init__(
        self, server: EslServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server, self.core = server, server.core
        self.reader, self.writer = reader, writer
        self.authed = False
        self.fmt = "plain"
        self.sub = Subscription()
        self.events_enabled = False
        self.myevents_uuid: str | None = None
        self.log_level: str | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(server.core.settings.max_listener_queue)
        self._idle = asyncio.Event()
        self._idle.set()
        self._lost = 0
        self._closing = False

    # ------------------------------------------------------------------ events
    def offer(self, event: SimEvent) -> None:
        if self._closing or not self.authed or not self.events_enabled:
            return
        if self.myevents_uuid is not None and event.get("Unique-ID") != self.myevents_uuid:
            return
        if not self.sub.wants(event):
            return
        try:
            self._queue.put_nowait(event_frame(event.headers, event.body, self.fmt))
        except asyncio.QueueFull:
            self._lost += 1
            if self._lost >= MAX_LOST_EVENTS:
                log.warning("killed listener because of lost events")
                self.shutdown("Disconnected, goodbye.\nKilled: lost events.\n")

    async def _pump(self) -> None:
        while True:
            frame = await self._queue.get()
            await self._idle.wait()
            if self._closing:
                return
            self.writer.write(frame)
            await self.writer.drain()

    # ------------------------------------------------------------------ the connection
    def shutdown(self, text: str) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            self.writer.write(disconnect_notice(text))
            self.writer.close()

    async def run(self) -> None:
        self.writer.write(auth_request())
        parser = CommandParser()
        self.core.listeners.append(self)
        pump = asyncio.create_task(self._pump())
        first = True
        try:
            while not self._closing:
                try:
                    if first:
                        async with asyncio.timeout(FIRST_COMMAND_TIMEOUT):
                            data = await self.reader.read(65536)
                    else:
                        data = await self.reader.read(65536)
                except TimeoutError:
                    break
                first = False
                if not data:
                    break
                try:
                    commands = parser.feed(data)
                except EslProtocolError:
                    break
                for cmd in commands:
                    if not await self._dispatch(cmd):
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            self._closing = True
            if self in self.core.listeners:
                self.core.listeners.remove(self)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            with contextlib.suppress(Exception):
                self.writer.close()
                await self.writer.wait_closed()

    def _reply(self, text: str, extra: list[tuple[str, str]] | None = None) -> None:
        self.writer.write(command_reply(text, extra or []))

    async def _close_with(self, reply: str) -> bool:
        self._closing = True
        self.writer.write(command_reply(reply) + disconnect_notice())
        with contextlib.suppress(Exception):
            await self.writer.drain()
            self.writer.close()
        return False

    async def _dispatch(self, cmd: EslCommand) -> bool:
        """Handle one command; False when the connection is to be closed."""
        self._idle.clear()
        try:
            return await self._handle(cmd)
        finally:
            self._idle.set()

    async def _handle(self, cmd: EslCommand) -> bool:
        line = cmd.line
        low = line.lower()
        if not self.authed:
            if low.startswith("auth "):
                self.core.record_command("socket", "auth ********")
                if line[5:] == self.core.settings.password:
                    self.authed = True
                    self._reply("+OK accepted")
                    return True
                return await self._close_with("-ERR invalid")
            if low.startswith("userauth "):
                self.core.record_command("socket", "userauth ********")
                if line.rsplit(":", 1)[-1] == self.core.settings.password:
                    self.authed = True
                    self._reply("+OK accepted", [("Allowed-Events", "ALL"), ("Allowed-API", "ALL")])
                    return True
                return await self._close_with("-ERR invalid")
            if low.startswith("exit") or line == "...":
                return await self._close_with("+OK bye")
            self.core.record_command("socket", cmd.raw)
            self._reply(NOT_FOUND)
            return True
        if low.startswith("api "):
            return await self._api(cmd, line[4:])
        if low.startswith("bgapi "):
            return self._bgapi(cmd, line[6:])
        if low.startswith("sendmsg"):
            self.core.record_command("sendmsg", _raw_with_body(cmd))
            self._sendmsg(cmd, line[7:].strip())
            return True
        self.core.record_command("socket", cmd.raw)
        if low.startswith("exit") or line == "...":
            return await self._close_with("+OK bye")
        if low.startswith("filter "):
            self._filter(line[7:].strip())
        elif low.startswith("nixevent"):
            ok = self.sub.nix(line[8:].split(" "))
            self._reply("+OK events nixed" if ok else "-ERR no keywords supplied")
        elif low.startswith("noevents"):
            if self.events_enabled:
                self.events_enabled = False
                self.sub.clear()
                while not self._queue.empty():
                    self._queue.get_nowait()
                self._reply("+OK no longer listening for events")
            else:
                self._reply("-ERR not listening for events")
        elif low.startswith("event"):
            self._event(line)
        elif low.startswith("myevents"):
            self._myevents(line[8:].strip())
        elif low.startswith("divert_events"):
            self._reply("-ERR not controlling a session.")
        elif low.startswith("linger") or low.startswith("nolinger"):
            self._reply("-ERR not controlling a session")
        elif low.startswith("nolog"):
            ok, self.log_level = self.log_level is not None, None
            self._reply("+OK no longer logging" if ok else "-ERR not loging")
        elif low.startswith("log"):
            self.log_level = (line[3:].strip() or "debug").upper()
            self._reply(f"+OK log level {self.log_level} [7]")
        elif low.startswith("sendevent"):
            self._sendevent(cmd, line[9:].strip())
        else:
            self._reply(NOT_FOUND)
        return True

    # ------------------------------------------------------------------ command handlers
    async def _api(self, cmd: EslCommand, text: str) -> bool:
        self.core.record_command("api", cmd.raw)
        command, _, arg = text.partition(" ")
        out = await run_api(self.core, command, arg)
        self.writer.write(api_response(out))
        return True

    def _bgapi(self, cmd: EslCommand, text: str) -> bool:
        self.core.record_command("bgapi", cmd.raw)
        command, sep, arg = text.partition(" ")
        job_uuid = cmd.header("Job-UUID") or str(uuidlib.uuid4())
        self._reply(f"+OK Job-UUID: {job_uuid}", [("Job-UUID", job_uuid)])
        self.server.start_job(self, job_uuid, command, arg if sep else None)
        return True

    def _event(self, line: str) -> None:
        tokens = line.split(" ")[1:]
        if tokens and tokens[0].lower() in ("plain", "json", "xml"):
            self.fmt = tokens[0].lower()
            tokens = tokens[1:]
        if not self.sub.enable(tokens):
            self._reply("-ERR no keywords supplied")
            return
        self.events_enabled = True
        self._reply(f"+OK event listener enabled {self.fmt}")

    def _myevents(self, rest: str) -> None:
        uuid, _, fmt = rest.partition(" ")
        ch = self.core.channels.get(uuid)
        if ch is None and fmt:
            self._reply("-ERR invalid uuid")
            return
        if fmt.lower() in ("plain", "json", "xml"):
            self.fmt = fmt.lower()
        self.myevents_uuid = uuid
        self.sub.enable(["ALL"])
        self.events_enabled = True
        self._reply("+OK Events Enabled")

    def _filter(self, rest: str) -> None:
        name, _, value = rest.partition(" ")
        if name.lower() == "delete" and value:
            header, _, hval = value.partition(" ")
            self.sub.delete_filter(header, hval or None)
            self._reply(f"+OK filter deleted. [{header}][{hval}]")
            return
        if name.lower() == "add" and value:
            name, _, value = value.partition(" ")
        if not value:
            self._reply("-ERR invalid syntax")
            return
        self.sub.add_filter(name, value)
        self._reply(f"+OK filter added. [{name}]=[{value}]")

    def _sendmsg(self, cmd: EslCommand, uuid: str) -> None:
        uuid = uuid or (cmd.header("session-id") or "")
        ch = self.core.channels.get(uuid)
        if ch is None or not ch.locatable:
            self._reply(f"-ERR invalid session id [{uuid}]")
            return
        call_command = (cmd.header("call-command") or "").lower()
        app = cmd.header("execute-app-name") or ""
        arg = cmd.header("execute-app-arg") or ""
        ctype = (cmd.header("content-type") or "").lower()
        if cmd.body is not None and ctype == "text/plain":
            arg = cmd.body.decode("utf-8", errors="replace")
        lock = (cmd.header("event-lock") or "").lower() in ("true", "yes", "on", "1")
        lead = cmd.header("lead-frames") or ""
        loops = cmd.header("loops") or "1"
        app_uuid = cmd.header("Event-UUID") or str(uuidlib.uuid4())
        rec = None
        if call_command == "execute" and app == "playback":
            rec = new_playback_record(ch, arg, "sendmsg", app_uuid, lock)
        headers = [("Command", cmd.line), *cmd.headers]
        ch.queue_private(
            PrivateMsg(
                headers,
                call_command,
                method="sendmsg",
                app=app,
                arg=arg,
                event_lock=lock,
                lead_frames=int(lead) if lead.isdigit() else 0,
                app_uuid=app_uuid,
                loops=int(loops) if loops.lstrip("-").isdigit() else 1,
                hangup_cause=(cmd.header("hangup-cause") or "NORMAL_CLEARING").upper(),
                record=rec,
            )
        )
        self._reply("+OK")

    def _sendevent(self, cmd: EslCommand, name: str) -> None:
        event_name = canonical_event_name(name) or "CUSTOM"
        subclass = cmd.header("Event-Subclass") if event_name == "CUSTOM" else None
        ev = self.core.new_event(event_name, subclass)
        event_uuid = str(uuidlib.uuid4())
        ev.add("Event-UUID", event_uuid)
        ev.extend((k, v) for k, v in cmd.headers if k.lower() not in ("content-length",))
        if cmd.body:
            ev.body = cmd.body.decode("utf-8", errors="replace")
        self.core.fire(ev)
        self._reply(f"+OK {event_uuid}")


def _raw_with_body(cmd: EslCommand) -> str:
    if cmd.body:
        return cmd.raw + "\n\n" + cmd.body.decode("utf-8", errors="replace")
    return cmd.raw
