"""The model's side of a session: one response at a time, scripted, timed by the session (pure).

The session decides *when* a response starts (VAD end of turn, ``response.create``, idle timeout)
and when one is cut short (barge-in, ``response.cancel``, an injected failure); the ``Responder``
picks the scripted reply, builds the ``ResponseRun``, drives it from the session's timers, keeps the
usage bookkeeping across responses and sends one ``rate_limits.updated`` per response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fsbridge.sim.rt_audio import bytes_per_ms, encode_output
from fsbridge.sim.rt_items import Conversation, IdGen
from fsbridge.sim.rt_response import ResponseRun
from fsbridge.sim.rt_script import FunctionCallReply, ReplyScript
from fsbridge.sim.rt_settings import SimSettings
from fsbridge.sim.rt_stream import ResponseRecord
from fsbridge.sim.rt_usage import InputTally, rate_limits, tally_conversation

__all__ = ["Responder"]

Emit = Callable[[dict[str, Any]], None]
Schedule = Callable[[float, Callable[[float], None]], None]


class Responder:
    def __init__(
        self,
        *,
        session: Any,
        settings: SimSettings,
        script: ReplyScript,
        conversation: Conversation,
        conversation_id: str,
        ids: IdGen,
        emit: Emit,
        at: Schedule,
        on_finished: Callable[[ResponseRecord, float], None],
    ) -> None:
        self._session = session  # handed to reply callables
        self._s = settings
        self._script = script
        self._conv = conversation
        self._conv_id = conversation_id
        self._ids = ids
        self._emit = emit
        self._at = at
        self._on_finished = on_finished
        self.records: list[ResponseRecord] = []
        self.audio_out_present = False  # locks the voice (cannot_update_voice)
        self._active: ResponseRun | None = None
        self._failures: list[dict[str, Any]] = []
        self._prev_tally: InputTally | None = None
        self._tokens_used = 0

    @property
    def active_id(self) -> str | None:
        return self._active.record.id if self._active is not None else None

    def start(
        self, now: float, trigger: str, params: dict[str, Any], config: dict[str, Any]
    ) -> None:
        """Begin the next scripted reply; ``params`` are the validated ``response.create`` options."""
        out_cfg = config["audio"]["output"]
        override = (params.get("audio") or {}).get("output") or {}
        fmt = dict(override.get("format") or out_cfg["format"])
        if fmt.get("type", "audio/pcm") == "audio/pcm":
            fmt = {"type": "audio/pcm", "rate": 24000}
        voice = override.get("voice", out_cfg["voice"])
        voice = voice["id"] if isinstance(voice, dict) else voice  # the response shows a string
        modality = (params.get("output_modalities") or config["output_modalities"])[0]
        reply = self._script.reply_for(self._session, len(self.records))
        audio = b""
        if modality == "audio" and not isinstance(reply, FunctionCallReply):
            audio = encode_output(fmt, self._script.pcm(reply))
        record = ResponseRecord(
            id=self._ids.new("resp"),
            trigger=trigger,
            created_t=now,
            instructions=params.get("instructions"),
            bytes_per_ms=bytes_per_ms(fmt),
        )
        in_conv = params.get("conversation", "auto") != "none"  # "none": out of band
        instructions = params.get("instructions", config["instructions"])
        run = ResponseRun(
            record=record,
            reply=reply,
            audio=audio,
            modality=modality,
            voice=voice,
            out_format=fmt,
            max_output_tokens=params.get("max_output_tokens", config["max_output_tokens"]),
            metadata=params.get("metadata"),
            conversation_id=self._conv_id if in_conv else None,
            conversation=self._conv if in_conv else None,
            new_id=self._ids.new,
            token=self._ids.token,
            settings=self._s.stream,
            input_tally=tally_conversation(instructions, self._conv),
            previous_tally=self._prev_tally,
            fail=self._failures.pop(0) if self._failures else None,
        )
        self.records.append(record)
        self._active = run
        self._emit_all(run.start())
        if self._s.rate_limits_at == "created":
            self._emit_rate_limits()
        self._schedule(run)

    def stop(
        self,
        now: float,
        status: Literal["cancelled", "failed"],
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Cut the active response short; False when none is active."""
        run = self._active
        if run is None:
            return False
        self._emit_all(run.stop(now, status, reason=reason, error=error))
        self._finished(run, now)
        return True

    def fail(self, now: float, error: dict[str, Any], when: str = "auto") -> None:
        """Fault injection: fail the active response now (``auto``/``now``), else the next one."""
        if not (when in ("auto", "now") and self.stop(now, "failed", error=error)):
            self._failures.append(error)

    def _schedule(self, run: ResponseRun) -> None:
        due = run.next_due()
        if due is not None:
            self._at(due, lambda t: self._pump(run, t))

    def _pump(self, run: ResponseRun, now: float) -> None:
        if run is not self._active:  # a stale timer of a response already stopped
            return
        self._emit_all(run.step(now))
        if run.finished:
            self._finished(run, now)
        else:
            self._schedule(run)

    def _finished(self, run: ResponseRun, now: float) -> None:
        self._active = None
        rec = run.record
        if rec.status != "failed":
            self._prev_tally = run.input_tally
        self._tokens_used += (rec.usage or {}).get("total_tokens", 0)
        if self._s.rate_limits_at == "done":
            self._emit_rate_limits()
        self._on_finished(rec, now)

    def _emit_all(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            if ev["type"] == "response.output_audio.delta":
                self.audio_out_present = True
            self._emit(ev)

    def _emit_rate_limits(self) -> None:
        limits = rate_limits(self._s.rate_limit_names, self._s.tokens_limit, self._tokens_used)
        self._emit({"type": "rate_limits.updated", "rate_limits": limits})
