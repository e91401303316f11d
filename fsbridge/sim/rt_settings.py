"""The simulated server's behaviour knobs (UNCONFIRMED server details are knobs too)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fsbridge.sim import rt_errors as E
from fsbridge.sim.rt_stream import StreamSettings

__all__ = ["CloseRequest", "Outgoing", "SimSettings", "failure_error"]


@dataclass(frozen=True)
class SimSettings:
    stream: StreamSettings = field(default_factory=StreamSettings)
    session_max_s: float = 3600.0
    reject_beta: bool = True
    accept_api_key_header: bool = True  # Azure-style `api-key:` header
    accepted_models: Callable[[str], bool] | tuple[str, ...] | None = None  # None: gpt-realtime*
    exhausted: Literal["last", "cycle"] = "last"  # when a reply list runs out
    rate_limits_at: Literal["created", "done"] = "created"  # UNCONFIRMED position
    rate_limit_names: tuple[str, ...] = ("tokens",)  # only `tokens` observed in GA
    tokens_limit: int = 40000
    # semantic_vad is simulated as energy VAD; the silence it waits for depends on the eagerness.
    semantic_silence_ms: Mapping[str, int] = field(
        default_factory=lambda: {"low": 1200, "medium": 700, "auto": 700, "high": 350}
    )
    semantic_prefix_ms: int = 300
    vad_min_speech_ms: int = 30
    transcription_delay_s: float = 0.2  # input transcripts arrive asynchronously
    require_output_rate: bool = False  # gpt-realtime-2.1 reportedly requires output.format.rate
    commit_min_ms: float = 100.0
    max_append_bytes: int = 15 * 1024 * 1024
    default_voice: str = "alloy"
    seed: int | None = None  # deterministic ids (session index is added)
    truncate_too_long_code: str = E.TRUNCATE_TOO_LONG_CODE
    truncate_not_assistant_code: str = E.TRUNCATE_NOT_ASSISTANT_CODE
    expiry_close_code: int = E.SESSION_EXPIRED_CLOSE_CODE
    expiry_close_reason: str = ""

    def model_ok(self, model: str) -> bool:
        if self.accepted_models is None:
            return model.startswith("gpt-realtime")
        if callable(self.accepted_models):
            return bool(self.accepted_models(model))
        return model in self.accepted_models


@dataclass(frozen=True)
class CloseRequest:
    """The session asks its shell to close the socket (after the events queued before it)."""

    code: int
    reason: str = ""


Outgoing = dict[str, Any] | CloseRequest


def failure_error(
    kind: Literal["server_error", "rate_limit"], model: str, tokens_limit: int
) -> dict[str, Any]:
    """The ``status_details.error`` of a failed ``response.done``."""
    if kind == "rate_limit":
        return {
            "type": "tokens",
            "code": E.RATE_LIMIT_CODE,
            "message": E.rate_limit_message(model, tokens_limit),
        }
    return {"type": E.SERVER_ERROR_TYPE, "code": "server_error", "message": E.SERVER_ERROR_MESSAGE}
