"""A bare asyncio socket client for wire-exact checks (bytes, ordering, framing)."""

from __future__ import annotations

import asyncio


class RawEsl:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, password: str | None = "ClueCon") -> RawEsl:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w)
        greeting = await c.frame()
        assert greeting == ({"Content-Type": "auth/request"}, b"")
        if password is not None:
            _, h = await c.command(f"auth {password}")
            assert h["Reply-Text"] == "+OK accepted"
        return c

    async def frame(self, timeout: float = 5.0) -> tuple[dict[str, str], bytes]:
        """One server frame: (outer headers, body bytes)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), timeout)
        headers: dict[str, str] = {}
        for line in head.decode().strip("\n").split("\n"):
            k, _, v = line.partition(": ")
            headers[k] = v
        n = int(headers.get("Content-Length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
        return headers, body

    def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\n\n")

    async def command(self, text: str) -> tuple[bytes, dict[str, str]]:
        """Send and return the next reply frame (events are skipped)."""
        self.send(text)
        while True:
            h, body = await self.frame()
            if h.get("Content-Type") in ("command/reply", "api/response", "text/disconnect-notice"):
                return body, h

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except Exception:
            pass


def parse_plain(body: bytes) -> list[tuple[str, str]]:
    """Plain event payload -> ordered (name, still-url-encoded value) pairs."""
    head = body.split(b"\n\n", 1)[0].decode()
    out = []
    for line in head.split("\n"):
        if line:
            k, _, v = line.partition(": ")
            out.append((k, v))
    return out
