"""When the caller goes quiet, and how a call ends politely.

``Watchdog`` is the no-input rule of a profile: after ``silence_s`` with the line idle (the caller
not speaking, nothing playing, no reply being made) the model is prompted to ask whether the caller
is still there; after ``max_prompts`` prompts the next silence ends the call with a goodbye. Server
VAD's own ``idle_timeout_ms`` (``input_audio_buffer.timeout_triggered``) counts as a prompt too.
The caller speaking resets the count.

``Farewell`` is "hang up once this reply has been heard": armed by the watchdog's goodbye, by
``max_turns`` and by the ``end_call`` tool, bound to the response it waits for (by the metadata tag
the call put on its ``response.create``, or simply the next response), and released once that
response is done and the played-audio ledger says nothing of it is still to be heard.

Both are pure: the call feeds them times and facts, and does what they answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import WatchdogConfig

__all__ = ["Farewell", "Watchdog", "WatchdogAction"]

WatchdogAction = Literal["prompt", "goodbye"]


class Watchdog:
    def __init__(self, cfg: WatchdogConfig) -> None:
        self.cfg = cfg
        self.prompts = 0
        self.finished = False  # the goodbye was asked for: nothing more to do
        self._idle_since: float | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.silence_s is not None and not self.finished

    def caller_spoke(self) -> None:
        """The caller is there: start counting again."""
        self.prompts = 0
        self._idle_since = None

    def poll(self, now: float, idle: bool) -> tuple[WatchdogAction | None, float | None]:
        """What to do now, and in how many seconds to ask again (None: when something changes)."""
        if not self.enabled or not idle:
            self._idle_since = None
            return None, None
        if self._idle_since is None:
            self._idle_since = now
        assert self.cfg.silence_s is not None
        due = self._idle_since + self.cfg.silence_s
        if now < due:
            return None, due - now
        self._idle_since = None
        return self._next(), None

    def server_prompted(self) -> WatchdogAction:
        """Server VAD's idle timeout fired (and, with create_response, it prompts by itself)."""
        if self.finished:
            return "goodbye"
        self._idle_since = None
        return self._next()

    def _next(self) -> WatchdogAction:
        if self.prompts < self.cfg.max_prompts:
            self.prompts += 1
            return "prompt"
        self.finished = True
        return "goodbye"


@dataclass
class Farewell:
    """Hang up once a given reply has been heard in full (or at once if it has no audio)."""

    reason: str | None = None
    tag: str | None = None  # the response.create metadata value to wait for; None: the next one
    response_id: str | None = None
    done: bool = False  # the response finished on the server side
    had_audio: bool = False

    @property
    def armed(self) -> bool:
        return self.reason is not None

    def arm(self, reason: str, tag: str | None = None) -> None:
        if self.armed:  # the first reason wins; a later one must not move the goal
            return
        self.reason, self.tag = reason, tag

    def created(self, response_id: str, tag: str | None) -> None:
        if self.armed and self.response_id is None and (self.tag is None or self.tag == tag):
            self.response_id = response_id

    def response_done(self, response_id: str, had_audio: bool) -> None:
        if self.armed and response_id == self.response_id:
            self.done = True
            self.had_audio = had_audio

    def abandon_response(self) -> None:
        """The session was replaced before the reply finished: wait for the next one instead."""
        if self.armed and not self.done:
            self.response_id = None
            self.tag = None

    def due(self, playing: bool) -> bool:
        """Whether to hang up now: the reply is done and none of it is left to be heard."""
        return self.armed and self.done and (not self.had_audio or not playing)
