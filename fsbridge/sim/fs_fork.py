"""mod_audio_fork (drachtio) and mod_audio_stream as WebSocket clients: one media bug each.

FreeSWITCH's side of the fork, modelled on the module sources summarised in the reference:

* on connect: the CUSTOM ``::connect`` event, then the metadata as the first TEXT frame
  (mod_audio_stream: after ``stream_metadata_after_frames`` audio frames);
* every channel read (20 ms tick) appends one frame of L16 at the requested rate to a buffer of
  ``fork_buffer_secs``; the sender ships *everything buffered* as one BINARY frame when the socket
  is writable, so a slow server sees merged frames, and a server that stops reading fills the
  buffer: one ``::buffer_overrun`` event, the buffer is dropped, streaming goes on;
* server TEXT messages (playAudio, killAudio, transcription, transfer, disconnect, error, json)
  become events exactly as the module fires them; BINARY frames are discarded;
* stop / hangup: optional final TEXT frame, then Close 1000; audio still buffered is not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import TYPE_CHECKING

import aiohttp
import numpy as np

from fsbridge.sim.fs_audio import LinearResampler
from fsbridge.sim.fs_fork_messages import b64_prefix_decode, compact_json, handle_server_text
from fsbridge.sim.fs_truth import ForkRecord, Utterance

if TYPE_CHECKING:
    from fsbridge.sim.fs_channel import SimChannel
    from fsbridge.sim.fs_core import SimCore

__all__ = ["ConnectFailed", "ForkSession"]


class ConnectFailed(Exception):
    def __init__(self, reason: str, code: int = 6) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class ForkSession:
    """One fork: the media bug that buffers audio and the WebSocket task that ships it."""

    def __init__(
        self,
        core: SimCore,
        ch: SimChannel,
        *,
        module: str,
        host: str,
        port: int,
        path: str,
        tls: bool,
        record: ForkRecord,
        metadata: str | None,
        headers: dict[str, str],
        deflate: bool = False,
        heartbeat: float | None = None,
    ) -> None:
        self.core, self.ch, self.record = core, ch, record
        self.module = module  # "mod_audio_fork" | "mod_audio_stream"
        self.drachtio = module == "mod_audio_fork"
        self.host, self.port, self.path, self.tls = host, port, path, tls
        self.metadata = metadata
        self.headers = headers
        self.deflate, self.heartbeat = deflate, heartbeat
        self.channels = 2 if record.mix == "stereo" else 1
        self.frame_bytes = 2 * self.channels * record.rate * core.settings.frame_ms // 1000
        self.capacity = int(
            self.frame_bytes * (1000 / core.settings.frame_ms) * core.settings.fork_buffer_secs
        )
        self.state = "connecting"
        self.paused = False
        self.graceful = False
        self._graceful_sent = False
        self._stopping = False
        self._final_text: str | None = None
        self._server_closed = False
        self._overrun_fired = False
        self._buf = bytearray()
        self._buf_utts: list[Utterance] = []
        self._texts: list[str] = []
        self._metadata_after: int | None = None
        self._audio_frames_sent = 0
        self._wake = asyncio.Event()
        self._resamplers = [LinearResampler(ch.rate, record.rate) for _ in range(self.channels)]
        self.files: list[str] = []
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ control (from the API)
    def start(self) -> None:
        self.record.started_t = self.core.now()
        self._task = asyncio.create_task(self._run(), name=f"fork-{self.ch.uuid[:8]}")

    def stop(self, text: str | None) -> None:
        """Bug removed: final text (if any) then Close 1000; buffered audio is not sent."""
        if self._stopping:
            return
        self._stopping = True
        self._final_text = text
        self.ch.forks.pop(self.record.bugname, None)
        if self.state == "connecting" and self._task is not None:
            self.state = "closed"
            self.record.closed_t, self.record.closed_by = self.core.now(), "us"
            self._task.cancel()
        self._wake.set()

    def send_text(self, text: str) -> None:
        if self.state == "connected" and not self.graceful and not self._stopping:
            self._texts.append(text)
            self._wake.set()  # silently dropped otherwise (still +OK), as in the module

    def pause(self) -> None:
        self.paused = True
        self._buf.clear()

    def resume(self) -> None:
        self.paused = False
        self._buf.clear()

    def graceful_shutdown(self) -> None:
        self.graceful = True
        self._buf.clear()
        self._wake.set()

    async def wait_closed(self, timeout: float) -> None:
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)  # never raises its result
        if not done:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------------ the media bug
    def on_read(
        self, read: np.ndarray, written: np.ndarray | None, started: list[Utterance], tick: int
    ) -> None:
        """SWITCH_ABC_TYPE_READ: one channel frame into the fork's buffer."""
        if (
            self._stopping
            or self.paused
            or self.graceful
            or self._server_closed  # the pipe is gone; the bug stays attached but idle
            or self.state not in ("connecting", "connected")
        ):
            return
        if self.state == "connecting" and not self.core.settings.fork_connect_backlog:
            return
        w = written if written is not None else np.zeros_like(read)
        mix = self.record.mix
        if mix == "mono":
            chans = [read]
        elif mix == "mixed":
            chans = [np.clip(read.astype(np.int32) + w, -32768, 32767).astype(np.int16)]
        else:
            chans = [read, w]
        outs = [r.process(c) for r, c in zip(self._resamplers, chans, strict=True)]
        if len(outs) == 2:
            n = min(len(outs[0]), len(outs[1]))
            pcm = np.empty(2 * n, dtype=np.int16)
            pcm[0::2], pcm[1::2] = outs[0][:n], outs[1][:n]
        else:
            pcm = outs[0]
        data = pcm.astype("<i2").tobytes()
        if len(self._buf) + len(data) > self.capacity:
            self.record.overruns += 1
            if self.drachtio and not self._overrun_fired:
                self._overrun_fired = True
                self.fire("buffer_overrun")
            self._buf.clear()  # "dropping packets!": everything buffered is discarded
        self._buf += data
        self._buf_utts += started
        self._wake.set()

    # ------------------------------------------------------------------ events
    def fire(self, name: str, body: str | None = None) -> None:
        """A CUSTOM ``<module>::<name>`` event with the channel's headers and all variables."""
        self.ch.fire("CUSTOM", subclass=f"{self.module}::{name}", body=body)

    # ------------------------------------------------------------------ the WebSocket side
    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        http = self.core.http
        if http is None or http.closed:
            raise ConnectFailed("no HTTP client (the simulator is not started)")
        scheme = "wss" if self.tls else "ws"
        url = f"{scheme}://{self.host}:{self.port}{self.path}"
        allow_self_signed = self.ch.variables.get("MOD_AUDIO_FORK_ALLOW_SELFSIGNED", "")
        ssl: bool = not (self.tls and allow_self_signed.lower() in ("true", "yes", "on", "1"))
        protocols = (self.core.settings.fork_subprotocol,) if self.drachtio else ()
        origin = self.host if self.drachtio else f"http://{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.core.settings.fork_connect_timeout_s):
                ws = await http.ws_connect(
                    url,
                    protocols=protocols,
                    headers=self.headers,
                    compress=15 if self.deflate else 0,
                    autoping=True,
                    heartbeat=self.heartbeat,
                    origin=origin,
                    ssl=ssl,
                    timeout=aiohttp.ClientWSTimeout(
                        ws_receive=None, ws_close=self.core.settings.fork_close_timeout_s
                    ),
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise ConnectFailed("HS: ws upgrade unauthorized", 6) from None
            raise ConnectFailed(f"HS: ws upgrade response not 101 ({exc.status})", 6) from None
        except TimeoutError:
            raise ConnectFailed("timeout", 10) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectFailed(f"connect failed: {exc.__class__.__name__}", 6) from None
        # lws rejects a subprotocol it did not ask for ("HS: PROTOCOL malformed")
        resp = getattr(ws, "_response", None)
        offered = resp.headers.get("Sec-WebSocket-Protocol") if resp is not None else None
        if self.drachtio and offered and offered.strip() not in protocols:
            await ws.close()
            raise ConnectFailed("HS: PROTOCOL malformed", 11)
        sock = ws.get_extra_info("socket")
        if sock is not None and self.core.settings.fork_sndbuf:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.core.settings.fork_sndbuf)
        return ws

    async def _run(self) -> None:
        rec = self.record
        try:
            ws = await self._connect()
        except asyncio.CancelledError:
            rec.closed_t, rec.closed_by, self.state = self.core.now(), "us", "closed"
            self._cleanup_files()
            return
        except ConnectFailed as exc:
            self._connect_failed(exc)
            return
        self.state = "connected"
        rec.connected_t = self.core.now()
        rec.subprotocol = ws.protocol
        if self.drachtio:
            self.fire("connect")
        else:
            self.fire("connect", compact_json({"status": "connected"}))
        self.ch.on_fork_connected(rec.connected_t)
        if self.metadata:
            after = 0 if self.drachtio else self.core.settings.stream_metadata_after_frames
            if after <= 0:
                self._texts.insert(0, self.metadata)
            else:
                self._metadata_after = after
        receiver = asyncio.create_task(self._receive(ws))
        try:
            await self._send_loop(ws)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            self.ch.truth.errors.append(f"{self.module}: send failed: {exc!r}")
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.core.settings.fork_close_timeout_s):
                        await ws.close(code=1000)
                rec.close_code, rec.closed_by = 1000, rec.closed_by or "us"
            rec.closed_t = rec.closed_t or self.core.now()
            self.state = "closed"
            self._cleanup_files()

    def _connect_failed(self, exc: ConnectFailed) -> None:
        self.state = "failed"
        self.record.failed_reason = exc.reason
        self.ch.truth.errors.append(
            f"{self.module}: connect to {self.record.url} failed: {exc.reason}"
        )
        if self.drachtio:
            self.fire("connect_failed", '{"reason":"' + exc.reason + '"}')  # not JSON-escaped
        else:
            body = {"status": "error", "message": {"code": exc.code, "error": exc.reason}}
            self.fire("error", compact_json(body))
            self.ch.forks.pop(self.record.bugname, None)  # on error the bug is closed

    async def _send_text(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        await ws.send_str(text)
        rec = self.record
        rec.texts_sent.append(text)
        if self.metadata and rec.metadata_sent is None and text.startswith(self.metadata):
            rec.metadata_sent, rec.metadata_sent_t = self.metadata, self.core.now()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            if self._stopping:
                if self._final_text is not None and not self.graceful:
                    await self._send_text(ws, self._final_text)
                return
            if self._server_closed or ws.closed:
                return
            if self._texts and not self.graceful:
                if self.drachtio:  # pending texts are one appended string in drachtio's module
                    text, self._texts = "".join(self._texts), []
                else:
                    text = self._texts.pop(0)
                await self._send_text(ws, text)
                continue
            if self.graceful:
                if not self._graceful_sent:
                    self._graceful_sent = True
                    await ws.send_bytes(b"")
                    self.record.frames_sent += 1
                    continue
            elif self._buf:
                await self._send_audio(ws)
                continue
            self._wake.clear()
            await self._wake.wait()

    async def _send_audio(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self.drachtio:
            data, utts = bytes(self._buf), self._buf_utts
            self._buf.clear()
            self._buf_utts = []
        else:  # mod_audio_stream: one 20 ms frame per message
            data = bytes(self._buf[: self.frame_bytes])
            del self._buf[: self.frame_bytes]
            utts, self._buf_utts = self._buf_utts, []
        await ws.send_bytes(data)
        t = self.core.now()
        rec = self.record
        rec.frames_sent += 1
        rec.bytes_sent += len(data)
        self.ch.truth.caller_frames.append((t, len(data)))
        for u in utts:
            if u.t_first_frame is None:
                u.t_first_frame = t
        self._audio_frames_sent += 1
        if self._metadata_after is not None and self._audio_frames_sent >= self._metadata_after:
            self._metadata_after = None
            self._texts.append(self.metadata or "")

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        reason = ""
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_server_text(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    continue  # discarded by the module
                else:
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        reason = str(msg.extra or "")
                    break
        except (aiohttp.ClientError, ConnectionError):
            pass
        if self._stopping:
            return
        rec = self.record
        self._server_closed = True
        rec.closed_by, rec.close_code, rec.closed_t = "server", ws.close_code, self.core.now()
        if self.drachtio:
            self.fire("disconnect")
        else:
            code = ws.close_code or 1006
            body = {"status": "disconnected", "message": {"code": code, "reason": reason}}
            self.fire("disconnect", compact_json(body))
        self._wake.set()

    # ------------------------------------------------------------------ server -> module messages
    def _on_server_text(self, text: str) -> None:
        self.record.server_messages.append(text)
        if not self._stopping:  # once the bug is gone, late messages are dropped
            handle_server_text(self, text)

    def write_temp_file(self, ext: str, b64: str) -> str:
        """``<temp_dir>/<uuid>_<N>.tmp<ext>`` (N counts across all calls), deleted with the fork."""
        self.core.fork_file_counter += 1
        name = f"{self.ch.uuid}_{self.core.fork_file_counter}.tmp{ext}"
        path = os.path.join(self.core.temp_dir, name)
        with open(path, "wb") as f:
            f.write(b64_prefix_decode(b64))
        self.files.append(path)
        return path

    def _cleanup_files(self) -> None:
        for path in self.files:
            with contextlib.suppress(OSError):
                os.remove(path)
        self.files.clear()
