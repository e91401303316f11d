"""Events as FreeSWITCH's core holds them, and one listener's subscription (sans-I/O).

An event is an ordered list of headers (duplicates allowed, as in switch_event_add_header) plus an
optional body. ``Subscription`` is the per-connection state of ``event`` / ``nixevent`` /
``noevents`` / ``filter`` and decides, exactly like mod_event_socket's event_handler, whether an
event reaches that connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["EVENT_NAMES", "SimEvent", "Subscription", "canonical_event_name"]

EVENT_NAMES: tuple[str, ...] = (
    "CUSTOM", "CLONE", "CHANNEL_CREATE", "CHANNEL_DESTROY", "CHANNEL_STATE", "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_OUTGOING",
    "CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_APPLICATION", "CHANNEL_ORIGINATE", "CHANNEL_UUID",
    "API", "LOG", "INBOUND_CHAN", "OUTBOUND_CHAN", "STARTUP", "SHUTDOWN", "PUBLISH", "UNPUBLISH",
    "TALK", "NOTALK", "SESSION_CRASH", "MODULE_LOAD", "MODULE_UNLOAD", "DTMF", "MESSAGE",
    "PRESENCE_IN", "NOTIFY_IN", "PRESENCE_OUT", "PRESENCE_PROBE", "MESSAGE_WAITING",
    "MESSAGE_QUERY", "ROSTER", "CODEC", "BACKGROUND_JOB", "DETECTED_SPEECH", "DETECTED_TONE",
    "PRIVATE_COMMAND", "HEARTBEAT", "TRAP", "ADD_SCHEDULE", "DEL_SCHEDULE", "EXE_SCHEDULE",
    "RE_SCHEDULE", "RELOADXML", "NOTIFY", "PHONE_FEATURE", "PHONE_FEATURE_SUBSCRIBE",
    "SEND_MESSAGE", "RECV_MESSAGE", "REQUEST_PARAMS", "CHANNEL_DATA", "GENERAL", "COMMAND",
    "SESSION_HEARTBEAT", "CLIENT_DISCONNECTED", "SERVER_DISCONNECTED", "SEND_INFO", "RECV_INFO",
    "RECV_RTCP_MESSAGE", "SEND_RTCP_MESSAGE", "CALL_SECURE", "NAT", "RECORD_START", "RECORD_STOP",
    "PLAYBACK_START", "PLAYBACK_STOP", "CALL_UPDATE", "FAILURE", "SOCKET_DATA", "MEDIA_BUG_START",
    "MEDIA_BUG_STOP", "CONFERENCE_DATA_QUERY", "CONFERENCE_DATA", "CALL_SETUP_REQ",
    "CALL_SETUP_RESULT", "CALL_DETAIL", "DEVICE_STATE", "TEXT", "SHUTDOWN_REQUESTED", "ALL",
)  # fmt: skip
_KNOWN = frozenset(EVENT_NAMES)


def canonical_event_name(token: str) -> str | None:
    """switch_name_event: case-insensitive, an optional ``SWITCH_EVENT_`` prefix; None if unknown."""
    name = token.upper()
    if name.startswith("SWITCH_EVENT_"):
        name = name[len("SWITCH_EVENT_") :]
    return name if name in _KNOWN else None


@dataclass
class SimEvent:
    """One fired event: ordered headers (duplicates kept), optional body, the sim time it fired."""

    name: str
    headers: list[tuple[str, str]]
    body: str | None = None
    subclass: str | None = None
    t: float = 0.0

    def get(self, name: str) -> str | None:
        """First header of that name (case-insensitive), like switch_event_get_header."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def add(self, name: str, value: object) -> None:
        text = str(value)
        if text != "":  # FreeSWITCH never stores a header with an empty value
            self.headers.append((name, text))

    def extend(self, headers: Iterable[tuple[str, str]]) -> None:
        for k, v in headers:
            self.add(k, v)


@dataclass
class Subscription:
    """What one ESL connection listens to (event_list, event_hash, filters)."""

    names: set[str] = field(default_factory=set)
    subclasses: set[str] = field(default_factory=set)
    filters: list[tuple[str, str]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.names or self.subclasses)

    def enable(self, tokens: Iterable[str]) -> bool:
        """``event`` keywords; True if at least one was valid. After CUSTOM, tokens are subclasses."""
        custom = False
        valid = 0
        for token in tokens:
            if custom:
                self.subclasses.add(token)
                continue
            name = canonical_event_name(token)
            if name is None:
                continue
            valid += 1
            if name == "ALL":
                self.names.update(EVENT_NAMES)
            else:
                self.names.add(name)
            if name == "CUSTOM":
                custom = True
        return valid > 0

    def nix(self, tokens: Iterable[str]) -> bool:
        """``nixevent``: removing a name after ALL leaves "all but that one"."""
        custom = False
        valid = 0
        for token in tokens:
            if custom:
                self.subclasses.discard(token)
                continue
            name = canonical_event_name(token)
            if name is None:
                continue
            valid += 1
            if name == "CUSTOM":
                custom = True  # what follows are subclasses to drop
            elif name == "ALL":
                self.names.clear()
            else:
                self.names.discard("ALL")  # "ALL" becomes "all but these"
                self.names.discard(name)
        return valid > 0

    def clear(self) -> None:
        self.names.clear()
        self.subclasses.clear()

    def add_filter(self, header: str, value: str) -> None:
        self.filters.append((header, value))

    def delete_filter(self, header: str, value: str | None) -> None:
        if header.lower() == "all":
            self.filters.clear()
            return
        self.filters = [
            (h, v)
            for h, v in self.filters
            if not (h.lower() == header.lower() and (value is None or v == value))
        ]

    def wants(self, event: SimEvent) -> bool:
        """mod_event_socket event_handler: subscription, then filters."""
        if "ALL" in self.names:
            send = True
        elif event.name in self.names:
            send = event.name != "CUSTOM" or not event.subclass or event.subclass in self.subclasses
        else:
            send = False
        if not send or not self.filters:
            return send
        send = False
        for header, raw in self.filters:
            hval = event.get(header)
            if hval is None:
                continue
            pos = True
            comp = raw
            while comp and comp[0] in "+- ":
                if comp[0] == "+":
                    pos = True
                elif comp[0] == "-":
                    pos = False
                comp = comp[1:]
            if send and pos:
                continue
            if not comp:
                continue
            if raw.startswith("/"):
                try:
                    hit = re.search(comp.strip("/"), hval) is not None
                except re.error:
                    hit = False
            else:
                hit = hval.lower() == comp.lower()
            if hit:
                if pos:
                    send = True
                else:
                    return False
        return send
