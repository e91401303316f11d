"""What a call reports as it runs, for metrics, traces and the admin view.

The call calls these hooks at the few points where things happen; it never knows who listens.
Every hook must be cheap and must not raise (a failing observer is logged and ignored) — they run
on the call's own coroutines, some per Realtime event. Nothing here is called per audio frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..esl.protocol import EslEvent
    from .call import Call, CallSummary
    from .downlink import ReplyStats, Truncation

__all__ = ["CallObserver", "Observers"]

log = logging.getLogger("fsbridge.call")


class CallObserver:
    """No-op base: override what you need."""

    def call_started(self, call: Call) -> None: ...
    def state_changed(self, call: Call) -> None: ...
    def esl_event(self, call: Call, event: EslEvent) -> None: ...
    def esl_command(self, call: Call, command: str) -> None: ...
    def realtime_event(self, call: Call, direction: Literal["in", "out"], event: dict) -> None: ...
    def realtime_error(self, call: Call, code: str | None) -> None: ...
    def fork_audio(self, call: Call, metadata: Sequence[str]) -> None: ...
    def reply_heard(self, call: Call, reply: ReplyStats) -> None: ...
    def reply_done(self, call: Call, reply: ReplyStats) -> None: ...
    def barge_in(self, call: Call, reaction_ms: float) -> None: ...
    def truncated(self, call: Call, truncation: Truncation) -> None: ...
    def usage(self, call: Call, usage: dict[str, Any]) -> None: ...
    def transcription_usage(self, call: Call, usage: dict[str, Any]) -> None: ...
    # How long the oldest caller audio of an append batch waited in the bridge (sampled, ~1/s).
    def uplink_latency(self, call: Call, held_ms: float) -> None: ...
    def call_ended(self, call: Call, summary: CallSummary) -> None: ...


class Observers(CallObserver):
    """Fans every hook out to several observers, isolating their failures.

    The fan-out is bound once per hook at construction, and only to the observers that override
    that hook, so a hook nobody listens to costs one empty loop (some run per Realtime event).
    """

    def __init__(self, observers: Sequence[CallObserver] = ()) -> None:
        self.observers = list(observers)
        for name in _HOOKS:
            listeners = [
                getattr(obs, name)
                for obs in self.observers
                if getattr(type(obs), name, None) is not getattr(CallObserver, name)
            ]
            setattr(self, name, _fan_out(name, listeners))


_HOOKS = tuple(
    name
    for name, value in vars(CallObserver).items()
    if callable(value) and not name.startswith("_")
)


def _fan_out(name: str, listeners: list[Callable[..., None]]) -> Callable[..., None]:
    def fan_out(*args: Any) -> None:
        for hook in listeners:
            try:
                hook(*args)
            except Exception:
                log.exception(
                    "observer hook %s failed (%s)", name, getattr(hook, "__qualname__", hook)
                )

    return fan_out
