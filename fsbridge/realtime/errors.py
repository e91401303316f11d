"""The exceptions of the Realtime layer, in a module of their own.

Both halves of the protocol raise them (:mod:`~fsbridge.realtime.events` the parse errors,
:mod:`~fsbridge.realtime.protocol` the session check) and the protocol module re-exports the
event records, so they live below both: each half imports them and no import cycle can arise.
Import them from :mod:`fsbridge.realtime.protocol` or :mod:`fsbridge.realtime` as before.
"""

from __future__ import annotations

__all__ = ["RealtimeError", "RealtimeProtocolError", "SessionMismatch"]


class RealtimeError(Exception):
    """Base of everything the Realtime layer raises."""


class RealtimeProtocolError(RealtimeError):
    """A server event of a known type lacks a field or carries a bad value (e.g. base64)."""

    def __init__(self, event_type: str, problem: str) -> None:
        super().__init__(f"malformed {event_type!r} event: {problem}")
        self.event_type = event_type


class SessionMismatch(RealtimeError):
    """The session the server echoed is not the one fsbridge needs (audio/pcm 24 kHz, GA)."""
