"""FreeSWITCH Event Socket: a pure protocol core and the greenswitch-thread controller."""

from .controller import DEFAULT_EVENTS, EslController
from .protocol import (
    EslAuthError,
    EslCommandError,
    EslConnectError,
    EslDisconnected,
    EslError,
    EslEvent,
    EslFrame,
    EslParser,
    EslProtocolError,
    check_reply,
    event_from_headers,
    quote_arg,
    sendmsg_text,
)

__all__ = [
    "DEFAULT_EVENTS",
    "EslAuthError",
    "EslCommandError",
    "EslConnectError",
    "EslController",
    "EslDisconnected",
    "EslError",
    "EslEvent",
    "EslFrame",
    "EslParser",
    "EslProtocolError",
    "check_reply",
    "event_from_headers",
    "quote_arg",
    "sendmsg_text",
]
