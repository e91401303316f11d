"""Ending or diverting a channel politely when no model conversation can (or may any longer) run.

Two situations, one toolbox: a call over ``service.max_calls`` (or arriving while the service
drains) gets the profile's fallback at once — transfer to ``fallback_transfer``, else the ``busy``
file, else the ``apology`` file, else a plain USER_BUSY hangup; a call still running when the drain
time is up gets the ``goodbye`` file and then the transfer or a hangup. Never silence.

These channels have no ``Call``; the service routes their ESL events to a ``ChannelWatch`` so the
helpers here can wait for a prompt to finish playing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from .audio.wav import WavError, read_wav
from .call.player import chunk_id_of
from .call.summary import EslLink
from .config import Profile
from .esl.protocol import EslError, EslEvent, quote_arg

__all__ = ["ChannelWatch", "divert", "end_politely", "play_prompt"]

log = logging.getLogger("fsbridge.service")

Action = Literal["transfer", "busy", "apology", "goodbye", "hangup", "gone"]
_HANGUPS = ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY")


class ChannelWatch:
    """The few events of one channel that the helpers wait for."""

    def __init__(self) -> None:
        self.hungup = asyncio.Event()
        self._stopped: set[str] = set()
        self._changed = asyncio.Event()

    def on_event(self, ev: EslEvent) -> None:
        if ev.name in _HANGUPS:
            self.hungup.set()
        elif ev.name == "PLAYBACK_STOP":
            cid = chunk_id_of(ev.headers)
            if cid:
                self._stopped.add(cid)
        else:
            return
        self._changed.set()

    async def wait_stopped(self, chunk_id: str, timeout: float) -> bool:
        """True once ``chunk_id`` stopped playing; False on hangup or timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while chunk_id not in self._stopped:
                    if self.hungup.is_set():
                        return False
                    self._changed.clear()
                    await self._changed.wait()
                return True
        return False


async def play_prompt(esl: EslLink, watch: ChannelWatch, uuid: str, path: str, tag: str) -> bool:
    """Play a whole prompt file and wait until it has been heard; False if it could not be."""
    try:
        samples, rate = read_wav(path)
    except WavError as exc:
        log.error("cannot play the %s prompt: %s", tag, exc, extra={"fields": {"uuid": uuid}})
        return False
    target = "{fsbridge_chunk=" + tag + "}" + path
    try:
        await esl.bgapi(f"uuid_broadcast {uuid} {quote_arg(target)} aleg")
    except EslError as exc:
        log.warning("%s prompt refused: %s", tag, exc, extra={"fields": {"uuid": uuid}})
        return False
    return await watch.wait_stopped(tag, len(samples) / rate + 3.0)


async def _transfer(esl: EslLink, uuid: str, extension: str) -> bool:
    try:
        await esl.api(f"uuid_transfer {uuid} {quote_arg(extension)}")
        return True
    except EslError as exc:
        log.error("transfer to %s failed: %s", extension, exc, extra={"fields": {"uuid": uuid}})
        return False


async def _hangup(esl: EslLink, uuid: str, cause: str) -> None:
    with contextlib.suppress(EslError):
        await esl.api(f"uuid_kill {uuid} {cause}")


async def divert(esl: EslLink, watch: ChannelWatch, uuid: str, profile: Profile) -> Action:
    """A call we will not serve: transfer, else busy file, else apology, else USER_BUSY."""
    if profile.fallback_transfer and await _transfer(esl, uuid, profile.fallback_transfer):
        return "transfer"
    for action, path in (("busy", profile.busy), ("apology", profile.apology)):
        if path and await play_prompt(esl, watch, uuid, path, action):
            await _hangup(esl, uuid, "NORMAL_CLEARING")
            return action  # type: ignore[return-value]
        if watch.hungup.is_set():
            return "gone"
    await _hangup(esl, uuid, "USER_BUSY")
    return "hangup"


async def end_politely(esl: EslLink, watch: ChannelWatch, uuid: str, profile: Profile) -> Action:
    """A call whose conversation was stopped: goodbye file, then transfer or hangup."""
    if watch.hungup.is_set():
        return "gone"
    with contextlib.suppress(EslError):
        await esl.api(f"uuid_break {uuid} all")  # whatever reply was still queued
    action: Action = "hangup"
    if profile.goodbye and await play_prompt(esl, watch, uuid, profile.goodbye, "goodbye"):
        action = "goodbye"
    if watch.hungup.is_set():
        return "gone"
    if profile.fallback_transfer and await _transfer(esl, uuid, profile.fallback_transfer):
        return "transfer"
    await _hangup(esl, uuid, "NORMAL_CLEARING")
    return action
