"""The two ways of queueing a file on a FreeSWITCH channel, behind one interface.

* ``broadcast``: ``bgapi uuid_broadcast <uuid> <file> aleg`` — the design's method. FreeSWITCH adds
  ``lead-frames: 5`` to every broadcast: ~100 ms of silence before each file, and a
  ``uuid_break`` arriving during that lead-in is lost (the file plays in full).
* ``sendmsg``: the ESL socket command ``sendmsg <uuid>`` with ``call-command: execute``,
  ``execute-app-name: playback`` and ``event-lock: true`` — the same private queue and events with no
  lead-in, so consecutive files join at a frame boundary. ``event-lock`` is essential: without it the
  next file nests inside the playing one.

Both tag the file with ``{fsbridge_chunk=<id>}`` so that PLAYBACK_START/STOP name the chunk.
See docs/conversation.md for the measurement behind the default.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Literal, Protocol

__all__ = ["EslCommands", "Player", "chunk_id_of"]

CHUNK_VAR = "fsbridge_chunk"


class EslCommands(Protocol):
    async def api(self, command: str) -> str: ...
    async def bgapi(self, command: str) -> str: ...
    async def sendmsg(self, uuid: str, headers: dict[str, str]) -> None: ...


def chunk_id_of(headers: dict[str, str] | object) -> str | None:
    """The chunk tag FreeSWITCH echoes on PLAYBACK_START/STOP (from the ``{k=v}`` file prefix)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    value = get(CHUNK_VAR) or get(f"variable_{CHUNK_VAR}")
    if value:
        return value
    path = get("Playback-File-Path") or ""
    marker = "{" + CHUNK_VAR + "="
    if path.startswith(marker):
        end = path.find("}")
        inner = path[1:end] if end > 0 else ""
        for part in inner.split(","):
            k, _, v = part.partition("=")
            if k == CHUNK_VAR:
                return v
    return None


class Player:
    def __init__(
        self, esl: EslCommands, uuid: str, method: Literal["broadcast", "sendmsg"]
    ) -> None:
        self._esl = esl
        self._uuid = uuid
        self.method = method

    async def play(self, path: str, chunk_id: str, *, method: str | None = None) -> None:
        """Queue ``path`` after whatever is queued; returns once FreeSWITCH accepted it."""
        target = "{" + f"{CHUNK_VAR}={chunk_id}" + "}" + path
        if (method or self.method) == "broadcast":
            await self._esl.bgapi(f"uuid_broadcast {self._uuid} {target} aleg")
        else:
            await self._esl.sendmsg(
                self._uuid,
                {
                    "call-command": "execute",
                    "execute-app-name": "playback",
                    "execute-app-arg": target,
                    "event-lock": "true",
                    "Event-UUID": str(uuidlib.uuid4()),
                },
            )

    async def break_all(self) -> None:
        """Stop the playing file and drop every queued one."""
        await self._esl.api(f"uuid_break {self._uuid} all")
