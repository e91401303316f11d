"""Our repairs of greenswitch's ``InboundESL`` reader and sender, kept apart from the thread.

``gthread`` owns the dedicated thread and its gevent hub; this module is only the patched
connection object that runs inside it. Everything here executes in that gevent thread (the reader
greenlet, or a job greenlet calling ``send``) and never in the asyncio one. The seam is there
because these overrides reimplement parts of greenswitch's reader and sender and lean on its
private attributes (``_commands_sent``, ``_esl_event_queue``, ``sock_file``, ``_run``): when
greenswitch changes, this is the file to re-check first, without wading through the thread/job
machinery. (``gthread``'s teardown also touches the reader greenlets and the event queue.)
"""

from __future__ import annotations

from typing import Any

import gevent.event
import gevent.lock
from greenswitch.esl import InboundESL, NotConnectedError

from .protocol import (
    MAX_BODY_BYTES,
    EslDisconnected,
    EslProtocolError,
    event_from_headers,
    parse_plain_event,
)

__all__ = ["_InboundESL"]


class _InboundESL(InboundESL):  # type: ignore[misc]
    """greenswitch's InboundESL with three local repairs, all inside the gevent thread.

    * ``send`` uses ``sendall`` under a lock: greenswitch ignores partial sends, and the FIFO of
      reply waiters must match the order commands hit the wire.
    * ``text/event-plain`` payloads are parsed by our own parser (values decoded one by one, the
      body kept apart and not url-decoded) instead of greenswitch's whole-block unquote.
    * Bodies are read as bytes until complete or EOF; greenswitch's reader spins forever on EOF
      in the middle of a body and dies on invalid UTF-8. Any such failure, and any garbage its
      own header parsing chokes on, ends the reader cleanly (``fsb_error`` says why) instead of
      killing its greenlet with a traceback.
    """

    def __init__(self, host: str, port: int, password: str, timeout: float) -> None:
        super().__init__(host, port, password, timeout=timeout)
        self._send_lock = gevent.lock.Semaphore()
        self.fsb_error: str | None = None

    def __repr__(self) -> str:  # never show the password
        return f"<_InboundESL {self.host}:{self.port}>"

    def send(self, data: str) -> Any:
        if not self.connected:
            raise NotConnectedError()
        result = gevent.event.AsyncResult()
        raw = (data + "\n\n").encode("utf-8")
        with self._send_lock:
            self._commands_sent.append(result)
            self.sock.sendall(raw)
        return result.get()

    def receive_events(self) -> None:
        try:
            super().receive_events()
        except Exception as exc:  # e.g. a header line greenswitch cannot parse
            self._broken(exc)

    def _broken(self, exc: Exception) -> None:
        self.fsb_error = f"ESL protocol error: {exc.__class__.__name__}: {exc}"
        self._run = False
        self.connected = False

    def handle_event(self, event: Any) -> None:
        try:
            ctype = event.headers.get("Content-Type")
            if ctype == "api/response":
                raw = self._read_body(event.headers.get("Content-Length", "0"))
                event.data = raw.decode("utf-8", errors="replace")
                self._commands_sent.pop(0).set(event)
            elif ctype == "text/event-plain":
                raw = self._read_body(event.headers.get("Content-Length", "0"))
                headers, body = parse_plain_event(raw)
                event.headers = headers  # greenswitch routes on Event-Name / Event-Subclass
                event.fsb_event = event_from_headers(headers, body)
                self._esl_event_queue.put(event)
            else:
                super().handle_event(event)
        except Exception as exc:
            # An unsolicited reply, a torn frame or garbage: the stream cannot be trusted.
            self._broken(exc)

    def _read_body(self, length_text: str) -> bytes:
        length = int(length_text.strip())
        if not 0 <= length <= MAX_BODY_BYTES:
            raise EslProtocolError(f"bad Content-Length {length}")
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            chunk = self.sock_file.read(remaining)
            if not chunk:
                raise EslDisconnected("connection closed in the middle of a frame")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
