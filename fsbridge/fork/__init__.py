"""The fork endpoint: mod_audio_fork / mod_audio_stream WebSockets carrying caller audio."""

from .protocol import (
    MAX_FRAME_BYTES,
    SUBPROTOCOL,
    credentials_match,
    frame_error,
    parse_basic_auth,
    split_text_messages,
)
from .server import ForkServer, ForkServerStats, ForkStream

__all__ = [
    "MAX_FRAME_BYTES",
    "SUBPROTOCOL",
    "ForkServer",
    "ForkServerStats",
    "ForkStream",
    "credentials_match",
    "frame_error",
    "parse_basic_auth",
    "split_text_messages",
]
