"""The bridge's own ``response.create`` requests, sequenced around the server's responses.

Only one response may be active in a conversation; a ``response.create`` while one runs fails with
``conversation_already_has_active_response`` and is simply lost. The bridge asks for responses from
several places (the model greeting, DTMF, the no-input watchdog, the goodbye, ``Call.say``, tool
results) while server VAD starts its own, so every request goes through this queue: sent at once
when nothing is active or in flight, otherwise kept until the active response is done, and put back
when the server refused it as a race.

Each request carries a tag in ``response.metadata`` (``{"fsbridge": tag}``), echoed by
``response.created``: that is how the call tells its goodbye from a VAD reply. Pure.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ..realtime import protocol as rtp

__all__ = ["TAG_KEY", "Request", "ResponseQueue"]

TAG_KEY = "fsbridge"
STALE_S = 15.0  # an in-flight request without response.created after this is given up


@dataclass(frozen=True)
class Request:
    instructions: str | None
    tag: str


class ResponseQueue:
    def __init__(self) -> None:
        self.active: str | None = None  # the server's active response id
        self.active_tag: str | None = None  # its tag; None for responses the server started
        self._in_flight: tuple[Request, str, float] | None = None  # request, event_id, sent at
        self._pending: deque[Request] = deque()
        self._ids = itertools.count(1)
        self.sent = 0
        self.retried = 0

    @property
    def busy(self) -> bool:
        """A response is active, asked for, or waiting to be asked for."""
        return self.active is not None or self._in_flight is not None or bool(self._pending)

    @property
    def waiting(self) -> bool:
        return self._in_flight is not None or bool(self._pending)

    def request(self, instructions: str | None, tag: str, now: float) -> dict | None:
        """The event to send now, or None if the request was queued behind the active response."""
        req = Request(instructions, tag)
        if (self._in_flight is not None and self._in_flight[0] == req) or req in self._pending:
            return None  # the same request twice (e.g. two DTMF bursts) is one response
        self._pending.append(req)
        return self._next(now)

    def _next(self, now: float) -> dict | None:
        if self.active is not None or self._in_flight is not None or not self._pending:
            return None
        req = self._pending.popleft()
        event_id = f"fsb_resp_{next(self._ids)}"
        self._in_flight = (req, event_id, now)
        self.sent += 1
        event = rtp.response_create(req.instructions, metadata={TAG_KEY: req.tag})
        event["event_id"] = event_id
        return event

    def created(self, response_id: str, metadata: Mapping[str, object] | None) -> str | None:
        """A response started; returns its tag (None: the server started it on its own)."""
        value = (metadata or {}).get(TAG_KEY)
        tag = value if isinstance(value, str) else None
        self.active, self.active_tag = response_id, tag
        if tag is not None and self._in_flight is not None and self._in_flight[0].tag == tag:
            self._in_flight = None
        return tag

    def done(self, response_id: str, now: float) -> dict | None:
        """A response finished; returns the next queued request to send, if any."""
        if response_id == self.active:
            self.active, self.active_tag = None, None
        return self._next(now)

    def error(self, code: str | None, event_id: str | None, now: float) -> dict | None:
        """An ``error`` event: a refused request is queued again (or dropped if it was invalid)."""
        if self._in_flight is None:
            return None
        req, sent_id, _ = self._in_flight
        if code == "conversation_already_has_active_response":
            self._in_flight = None
            self._pending.appendleft(req)
            self.retried += 1
            return self._next(now)
        if event_id is not None and event_id == sent_id:
            self._in_flight = None  # the server refused it for good: do not retry forever
            return self._next(now)
        return None

    def expire(self, now: float) -> dict | None:
        """Give up an in-flight request the server never answered (lost with a dead session)."""
        if self._in_flight is not None and now - self._in_flight[2] > STALE_S:
            self._in_flight = None
        return self._next(now)

    def reset(self, now: float) -> dict | None:
        """A new session: nothing is active there; an unanswered request is asked again."""
        self.active, self.active_tag = None, None
        if self._in_flight is not None:
            self._pending.appendleft(self._in_flight[0])
            self._in_flight = None
        return self._next(now)
