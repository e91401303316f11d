"""A whole scripted conversation through both simulators, with a minimal client of our own.

No service code is involved: a few lines of raw ESL over asyncio, a bare aiohttp fork endpoint and a
bare Realtime client move the audio. What the caller hears is checked sample by sample: the deltas
the Realtime simulator streamed equal the scripted reply exactly, and the caller hears exactly the
samples of the file the client queued.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web

from fsbridge.audio.wav import read_wav, write_wav
from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import RealtimeSim, Reply
from tests.openai_schema import validate_client_event, validate_server_event

ASSETS = Path(__file__).resolve().parents[2] / "fsbridge" / "assets"


async def esl_api(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cmd: str) -> str:
    """One ``api`` command on a connection with no event subscription: the next frame is ours."""
    writer.write(f"api {cmd}\n\n".encode())
    await writer.drain()
    headers: dict[str, str] = {}
    while (line := (await reader.readline()).decode().rstrip("\n")) != "":
        k, _, v = line.partition(": ")
        headers[k] = v
    return (await reader.readexactly(int(headers["Content-Length"]))).decode()


async def test_scripted_call_through_both_simulators(tmp_path: Path) -> None:
    clock = SimClock(2.0)
    caller, _ = read_wav(ASSETS / "caller-en-interrupt-8k.wav")
    reply24, _ = read_wav(ASSETS / "reply-en-short-24k.wav")
    frames: list[bytes] = []
    fork_done = asyncio.Event()

    async def fork_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("audio.drachtio.org",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append(msg.data)
        fork_done.set()
        return ws

    app = web.Application()
    app.router.add_get("/fork/{uuid}", fork_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fork_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            FreeSwitchSim(clock=clock) as fs,
            RealtimeSim(clock=clock, replies=[Reply(audio=reply24, transcript="hi")]) as rt,
            aiohttp.ClientSession() as http,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", fs.esl_port)
            assert (await reader.readuntil(b"\n\n")) == b"Content-Type: auth/request\n\n"
            writer.write(b"auth ClueCon\n\n")
            assert b"+OK accepted" in await reader.readuntil(b"\n\n")
            uuid = await fs.originate(profile="default", caller_audio=caller, caller_rate=8000)
            reply = await esl_api(
                reader,
                writer,
                f"uuid_audio_fork {uuid} start ws://127.0.0.1:{fork_port}/fork/{uuid} mono 8k",
            )
            assert reply.startswith("+OK")
            # Realtime: a bare client; forward the caller's audio, collect the reply's deltas
            ws = await http.ws_connect(
                f"{rt.url}?model=gpt-realtime", headers={"Authorization": "Bearer sk-x"}
            )
            await ws.send_json({"type": "session.update", "session": {"type": "realtime"}})
            deltas = bytearray()
            sent = 0

            async def pump() -> None:
                nonlocal sent
                while True:
                    while sent < len(frames):
                        pcm = np.frombuffer(frames[sent], dtype="<i2")
                        up = (
                            np.repeat(pcm, 3).astype("<i2").tobytes()
                        )  # crude 8k -> 24k, enough for VAD
                        event = {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(up).decode(),
                        }
                        validate_client_event(event)
                        await ws.send_json(event)
                        sent += 1
                    await asyncio.sleep(0.01)

            pumping = asyncio.create_task(pump())
            try:
                async for msg in ws:
                    event = json.loads(msg.data)
                    validate_server_event(event)
                    if event["type"] == "response.output_audio.delta":
                        deltas += base64.b64decode(event["delta"])
                    if event["type"] == "response.done":
                        break
            finally:
                pumping.cancel()
                await asyncio.gather(pumping, return_exceptions=True)
            await ws.close()
            # the reply arrived exactly as scripted
            assert np.array_equal(np.frombuffer(bytes(deltas), dtype="<i2"), reply24)
            # queue it (decimated to the channel rate) and check what the caller heard
            reply8 = reply24[::3].copy()
            path = tmp_path / "reply.wav"
            write_wav(path, reply8, 8000)
            assert (await esl_api(reader, writer, f"uuid_broadcast {uuid} {path} aleg")).startswith(
                "+OK"
            )
            ch = fs.channel(uuid)
            await fs.wait_for(lambda: any(p.stop_t for p in ch.truth.playbacks), timeout=15)
            heard = ch.truth.heard_from(str(path))
            n = len(reply8)
            assert np.array_equal(heard[:n], reply8), "caller must hear the file sample by sample"
            assert not heard[n:].any()  # only the zero padding of the last frame follows
            # and the fork carried the caller's utterance intact
            sent_audio = np.frombuffer(b"".join(frames), dtype="<i2")
            start = int(np.argmax(np.abs(sent_audio) > 0))
            first = int(np.argmax(np.abs(caller) > 0))
            assert np.array_equal(sent_audio[start : start + len(caller) - first], caller[first:])
            await fs.hangup(uuid)
            await asyncio.wait_for(fork_done.wait(), 5)
            writer.close()
    finally:
        await runner.cleanup()
