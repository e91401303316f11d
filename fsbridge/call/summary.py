"""What a call may ask of FreeSWITCH, and what it reports when it ends.

``EslLink`` is the call's view of FreeSWITCH (the service implements it over its ESL controller);
``ObservedEsl`` wraps it so every command is reported to the call's observer (for traces).
``CallSummary`` is the per-call record logged at hangup and kept by the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .call import Call

__all__ = ["CallSummary", "EslLink", "ObservedEsl"]


class EslLink:
    """What a call may ask of FreeSWITCH (implemented by the service over its ESL controller)."""

    async def api(self, command: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    async def bgapi(self, command: str) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:  # pragma: no cover
        raise NotImplementedError


@dataclass
class CallSummary:
    uuid: str
    profile: str
    outcome: str = "completed"
    duration_s: float = 0.0
    turns: int = 0
    barge_ins: int = 0
    local_barge_ins: int = 0
    first_audio_ms: list[float] = field(default_factory=list)
    uplink_bytes_in: int = 0
    uplink_bytes_24k: int = 0
    downlink_bytes_24k: int = 0
    downlink_bytes_out: int = 0
    files: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None  # responses + input transcription (when it has a price)
    transcription: dict[str, Any] | None = None
    transcription_cost_usd: float | None = None
    transcript: str | None = None
    transcript_turns: int = 0
    sessions: int = 1
    renewals: int = 0
    reconnects: int = 0
    prompts: int = 0
    digits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ObservedEsl(EslLink):
    """The call's ESL commands, reported to its observer (for traces)."""

    def __init__(self, inner: EslLink, call: Call) -> None:
        self._inner = inner
        self._call = call

    async def api(self, command: str) -> str:
        self._call.observer.esl_command(self._call, f"api {command}")
        return await self._inner.api(command)

    async def bgapi(self, command: str) -> str:
        self._call.observer.esl_command(self._call, f"bgapi {command}")
        return await self._inner.bgapi(command)

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None:
        lines = "\n".join(f"{k}: {v}" for k, v in headers.items())
        self._call.observer.esl_command(self._call, f"sendmsg {uuid}\n{lines}")
        await self._inner.sendmsg(uuid, headers)
