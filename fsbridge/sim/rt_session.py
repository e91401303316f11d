"""One simulated Realtime connection as a state machine (sans-I/O).

Fed client text frames and the time, it queues server events (and at most one close request) in an
outbox and asks to be woken at ``next_deadline()`` for timed work: streaming a reply, delivering an
input transcript, the idle timeout, session expiry. The WebSocket shell (``realtime.py``) only moves
frames and keeps the clock; everything the server decides lives here, so it is tested without I/O.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fsbridge.sim import rt_errors as E
from fsbridge.sim.rt_audio import bytes_per_ms, encode_output
from fsbridge.sim.rt_config import (
    ParamError,
    check_response_params,
    check_session_update,
    default_session,
    merge_session,
)
from fsbridge.sim.rt_input import InputBuffer
from fsbridge.sim.rt_items import Conversation, IdGen, ItemRecord, parse_client_item
from fsbridge.sim.rt_response import ResponseRecord, ResponseRun, StreamSettings
from fsbridge.sim.rt_script import FunctionCallReply, ReplyScript, TranscriptScript
from fsbridge.sim.rt_usage import InputTally, rate_limits, tally_conversation, transcription_usage
from fsbridge.sim.rt_vad import VadEvent

__all__ = ["CloseRequest", "SessionCore", "SimSettings"]

_FIELDS: dict[str, tuple[str, ...]] = {
    "session.update": ("session",),
    "input_audio_buffer.append": ("audio",),
    "input_audio_buffer.commit": (),
    "input_audio_buffer.clear": (),
    "output_audio_buffer.clear": (),
    "conversation.item.create": ("item", "previous_item_id"),
    "conversation.item.truncate": ("item_id", "content_index", "audio_end_ms"),
    "conversation.item.delete": ("item_id",),
    "conversation.item.retrieve": ("item_id",),
    "response.create": ("response",),
    "response.cancel": ("response_id",),
}


def _cut_words(text: str, fraction: float) -> str:
    """The words of ``text`` heard within ``fraction`` of its audio (a word cut in half is dropped)."""
    n = math.floor(len(text) * min(1.0, max(0.0, fraction)))
    if n >= len(text):
        return text
    if not text[n].isspace():
        head = text[:n]
        n = head.rfind(" ") if " " in head else 0
    return text[:n].rstrip()


@dataclass(frozen=True)
class SimSettings:
    """Every behaviour knob of the simulated server (UNCONFIRMED server details are knobs too)."""

    stream: StreamSettings = field(default_factory=StreamSettings)
    session_max_s: float = 3600.0
    reject_beta: bool = True
    accept_api_key_header: bool = True  # Azure-style `api-key:` header
    accepted_models: Callable[[str], bool] | tuple[str, ...] | None = None  # None: gpt-realtime*
    exhausted: Literal["last", "cycle"] = "last"
    rate_limits_at: Literal["created", "done"] = "created"  # UNCONFIRMED position
    rate_limit_names: tuple[str, ...] = ("tokens",)  # only `tokens` observed in GA
    tokens_limit: int = 40000
    semantic_silence_ms: Mapping[str, int] = field(
        default_factory=lambda: {"low": 1200, "medium": 700, "auto": 700, "high": 350}
    )
    semantic_prefix_ms: int = 300
    vad_min_speech_ms: int = 30
    transcription_delay_s: float = 0.2
    require_output_rate: bool = False  # gpt-realtime-2.1 reportedly requires output.format.rate
    commit_min_ms: float = 100.0
    max_append_bytes: int = 15 * 1024 * 1024
    default_voice: str = "alloy"
    seed: int | None = None
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
    code: int
    reason: str = ""


Outgoing = dict[str, Any] | CloseRequest


class SessionCore:
    def __init__(
        self,
        *,
        index: int,
        model: str,
        settings: SimSettings,
        script: ReplyScript,
        transcripts: TranscriptScript,
    ) -> None:
        self.index = index
        self.model = model
        self.settings = settings
        self._script = script
        self._transcripts = transcripts
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.input_audio = bytearray()
        self.truncations: list[tuple[float, str, int]] = []
        self.responses: list[ResponseRecord] = []
        self.conversation = Conversation()
        self.config: dict[str, Any] = {}
        self.ended = False
        self._ids = IdGen(None if settings.seed is None else settings.seed + index)
        self.session_id = self._ids.new("sess")
        self.conversation_id = self._ids.new("conv")
        self._outbox: list[Outgoing] = []
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._input = InputBuffer()
        self._speech: tuple[str, int] | None = None  # (item_id, audio_start_ms)
        self._active: ResponseRun | None = None
        self._audio_out_present = False
        self._failures: list[dict[str, Any]] = []
        self._user_audio_items = 0
        self._prev_tally: InputTally | None = None
        self._tokens_used = 0
        self._idle_gen = 0

    # -- shell interface ------------------------------------------------------------------------
    @property
    def items(self) -> list[dict[str, Any]]:
        return [rec.public() for rec in self.conversation]

    @property
    def active_response_id(self) -> str | None:
        return self._active.record.id if self._active is not None else None

    def take_outbox(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers and not self.ended else None

    def on_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now + 1e-9 and not self.ended:
            _, _, fn = heapq.heappop(self._timers)
            fn(now)

    def open(self, now: float, expires_at: int) -> None:
        """Start the session: ``session.created`` first, expiry armed."""
        self.config = default_session(
            session_id=self.session_id,
            model=self.model,
            expires_at=expires_at,
            voice=self.settings.default_voice,
        )
        self._configure_input()
        self._emit({"type": "session.created", "session": self.config})
        self._at(now + self.settings.session_max_s, self._expire)

    def reject(self, now: float, code: str, message: str, close: CloseRequest, param: str | None = None) -> None:
        """A connection the server refuses after the upgrade (beta header, bad model)."""
        self._emit(E.error_event(code, message, param=param))
        self._close(close)

    def handle_text(self, text: str, now: float) -> None:
        self.on_timer(now)  # what was due before this frame happens first
        if self.ended:
            return
        try:
            obj = json.loads(text)
        except ValueError as exc:
            self.received.append((now, {"_invalid_json": text[:2000]}))
            self._emit(E.error_event("invalid_json", f"Invalid JSON in client event: {exc}."))
            return
        if not isinstance(obj, dict):
            self.received.append((now, {"_invalid_json": text[:2000]}))
            self._emit(E.error_event("invalid_type", "Invalid client event: expected a JSON object."))
            return
        self.received.append((now, obj))
        event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
        try:
            self._dispatch(obj, now)
        except ParamError as err:
            self._error(err.code, err.message, err.param, event_id)

    def handle_binary(self, data: bytes, now: float) -> None:
        self.on_timer(now)
        self.received.append((now, {"_binary": len(data)}))
        self._emit(E.error_event("invalid_value", "Binary frames are not supported; send JSON text frames."))

    def fail_response(self, now: float, kind: Literal["server_error", "rate_limit"], when: str = "auto") -> None:
        """Fault injection: fail the active response now, or the next one."""
        if kind == "rate_limit":
            err = {
                "type": "tokens",
                "code": E.RATE_LIMIT_CODE,
                "message": E.rate_limit_message(self.model, self.settings.tokens_limit),
            }
        else:
            err = {"type": E.SERVER_ERROR_TYPE, "code": "server_error", "message": E.SERVER_ERROR_MESSAGE}
        if self._active is not None and when in ("auto", "now"):
            self._stop_active(now, "failed", error=err)
        else:
            self._failures.append(err)

    # -- plumbing -------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.ended:
            return
        self._outbox.append({"type": event["type"], "event_id": self._ids.new("event"), **event})

    def _error(self, code: str | None, message: str, param: str | None = None, event_id: str | None = None) -> None:
        self._emit(E.error_event(code, message, param=param, event_id=event_id))

    def _close(self, req: CloseRequest) -> None:
        self._outbox.append(req)
        self.ended = True
        self._timers.clear()

    def _at(self, t: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(self._timers, (t, next(self._seq), fn))

    def _expire(self, now: float) -> None:
        self._emit(E.error_event(E.SESSION_EXPIRED_CODE, E.session_expired_message(self.settings.session_max_s)))
        self._close(CloseRequest(self.settings.expiry_close_code, self.settings.expiry_close_reason))

    def _td(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"]["turn_detection"]

    def _configure_input(self) -> None:
        self._input.set_format(self.config["audio"]["input"]["format"])
        self._input.configure_vad(
            self._td(),
            min_speech_ms=self.settings.vad_min_speech_ms,
            semantic_silence_ms=self.settings.semantic_silence_ms,
            semantic_prefix_ms=self.settings.semantic_prefix_ms,
        )
        self._speech = None

    # -- dispatch -------------------------------------------------------------------------------
    def _dispatch(self, obj: dict[str, Any], now: float) -> None:
        etype = obj.get("type")
        if etype is None:
            raise ParamError("missing_required_parameter", "Missing required parameter: 'type'.", "type")
        if etype not in _FIELDS:
            allowed = ", ".join(f"'{t}'" for t in _FIELDS)
            raise ParamError("invalid_value", f"Invalid value: '{etype}'. Supported values are: {allowed}.", "type")
        for key in obj:
            if key not in ("type", "event_id", *_FIELDS[etype]):
                raise ParamError("unknown_parameter", f"Unknown parameter: '{key}'.", key)
        if "event_id" in obj and not isinstance(obj["event_id"], str):
            raise ParamError("invalid_type", "Invalid type for 'event_id': expected a string.", "event_id")
        ev_id = obj.get("event_id")
        handler = getattr(self, "_on_" + str(etype).replace(".", "_"))
        handler(obj, now, ev_id)

    def _on_session_update(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        upd = check_session_update(obj.get("session"), require_output_rate=self.settings.require_output_rate)
        if "model" in upd and upd["model"] != self.model:
            # UNCONFIRMED text; the SDK docs say the model cannot change.
            raise ParamError("invalid_value", "Cannot update a session's model.", "session.model")
        new_voice = ((upd.get("audio") or {}).get("output") or {}).get("voice")
        if new_voice is not None and new_voice != self.config["audio"]["output"]["voice"] and self._audio_out_present:
            raise ParamError(E.VOICE_LOCKED_CODE, E.VOICE_LOCKED_MESSAGE, None)
        old_input = self.config["audio"]["input"]
        self.config = merge_session(self.config, upd)
        new_input = self.config["audio"]["input"]
        if (old_input["turn_detection"], old_input["format"]) != (new_input["turn_detection"], new_input["format"]):
            self._configure_input()
        self._emit({"type": "session.updated", "session": self.config})

    def _on_input_audio_buffer_append(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        audio = obj.get("audio")
        if audio is None:
            raise ParamError("missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
        if not isinstance(audio, str):
            raise ParamError("invalid_value", E.INVALID_AUDIO_MESSAGE, "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ParamError("invalid_value", E.INVALID_AUDIO_MESSAGE, "audio") from None
        if len(data) > self.settings.max_append_bytes:
            raise ParamError("invalid_value", "Invalid 'audio': chunk larger than 15 MiB.", "audio")
        self.input_audio.extend(data)
        for ev in self._input.append(data):
            self._on_vad(ev, now)

    def _on_input_audio_buffer_commit(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        ms = self._input.buffered_ms
        if ms < self.settings.commit_min_ms:
            raise ParamError(E.COMMIT_EMPTY_CODE, E.commit_empty_message(ms), None)
        item_id = self._speech[0] if self._speech else self._ids.new("item")
        self._speech = None
        self._commit_user_audio(now, item_id, self._input.take_all())

    def _on_input_audio_buffer_clear(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        self._input.take_all()
        self._speech = None
        self._emit({"type": "input_audio_buffer.cleared"})

    def _on_output_audio_buffer_clear(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        raise ParamError(E.WEBRTC_ONLY_CODE, "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.", "type")

    def _on_conversation_item_create(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        rec = parse_client_item(obj.get("item"), self._ids.new("item"), self._input.bytes_per_ms)
        if self.conversation.get(rec.id) is not None:
            raise ParamError("invalid_value", f"Item with id '{rec.id}' already exists.", "item.id")
        if rec.type == "function_call_output" and rec.item["call_id"] not in self.conversation.call_ids():
            raise ParamError(E.CALL_ID_NOT_FOUND_CODE, E.call_id_not_found_message(rec.item["call_id"]), "item.call_id")
        prev = obj.get("previous_item_id")
        try:
            prev_id = self.conversation.add(rec, prev if isinstance(prev, str) else None)
        except KeyError:
            raise ParamError(E.ITEM_NOT_FOUND_CODE, E.item_not_found_message(str(prev)), "previous_item_id") from None
        self._emit({"type": "conversation.item.added", "previous_item_id": prev_id, "item": rec.item})
        self._emit({"type": "conversation.item.done", "previous_item_id": prev_id, "item": rec.item})

    def _item_or_error(self, obj: dict[str, Any]) -> ItemRecord:
        item_id = obj.get("item_id")
        if not isinstance(item_id, str):
            raise ParamError("missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id")
        rec = self.conversation.get(item_id)
        if rec is None:
            raise ParamError(E.ITEM_NOT_FOUND_CODE, E.item_not_found_message(item_id), "item_id")
        return rec

    def _on_conversation_item_truncate(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        for key in ("item_id", "content_index", "audio_end_ms"):
            if key not in obj:
                raise ParamError("missing_required_parameter", f"Missing required parameter: '{key}'.", key)
        end = obj["audio_end_ms"]
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            raise ParamError("invalid_value", "Invalid 'audio_end_ms': expected a non-negative integer.", "audio_end_ms")
        rec = self._item_or_error(obj)
        if not rec.is_assistant_audio:
            raise ParamError(self.settings.truncate_not_assistant_code, E.TRUNCATE_NOT_ASSISTANT_MESSAGE, "item_id")
        if obj["content_index"] != 0:
            raise ParamError("invalid_value", "Invalid 'content_index': the item has one audio part (0).", "content_index")
        have = rec.audio_ms
        if end > have:
            raise ParamError(self.settings.truncate_too_long_code, E.truncate_too_long_message(math.floor(have), end), "audio_end_ms")
        keep = _cut_words(rec.transcript, end / have if have > 0 else 1.0)
        rec.truncated_ms = end
        rec.transcript = keep
        for part in rec.item.get("content", []):
            if part.get("type") == "output_audio":
                part["transcript"] = keep
        self.truncations.append((now, rec.id, end))
        self._emit({"type": "conversation.item.truncated", "item_id": rec.id, "content_index": 0, "audio_end_ms": end})

    def _on_conversation_item_delete(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        rec = self._item_or_error(obj)
        self.conversation.remove(rec.id)
        self._emit({"type": "conversation.item.deleted", "item_id": rec.id})

    def _on_conversation_item_retrieve(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        rec = self._item_or_error(obj)
        item = json.loads(json.dumps(rec.item))
        audio = bytes(rec.audio[: round(rec.audio_ms * rec.bytes_per_ms)])
        for part in item.get("content", []):
            if part.get("type") in ("input_audio", "output_audio"):
                part["audio"] = base64.b64encode(audio).decode("ascii")
        self._emit({"type": "conversation.item.retrieved", "item": item})

    def _on_response_create(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        params = check_response_params(obj["response"]) if obj.get("response") is not None else {}
        if self._active is not None:
            raise ParamError(E.ACTIVE_RESPONSE_CODE, E.active_response_message(self._active.record.id), None)
        self._start_response(now, "client", params)

    def _on_response_cancel(self, obj: dict[str, Any], now: float, ev_id: str | None) -> None:
        wanted = obj.get("response_id")
        if self._active is None or (wanted is not None and wanted != self._active.record.id):
            raise ParamError(E.CANCEL_NOT_ACTIVE_CODE, E.CANCEL_NOT_ACTIVE_MESSAGE, None)
        self._stop_active(now, "cancelled", reason="client_cancelled")

    # -- input side -----------------------------------------------------------------------------
    def _on_vad(self, ev: VadEvent, now: float) -> None:
        td = self._td() or {}
        if ev.kind == "start":
            item_id = self._ids.new("item")
            self._speech = (item_id, ev.audio_ms)
            self._idle_gen += 1  # speech disarms the idle timeout
            self._emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": ev.audio_ms, "item_id": item_id})
            if td.get("interrupt_response", True) and self._active is not None:
                self._stop_active(now, "cancelled", reason="turn_detected")
            return
        item_id, start_ms = self._speech or (self._ids.new("item"), ev.audio_ms)
        self._speech = None
        self._emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ev.audio_ms, "item_id": item_id})
        self._commit_user_audio(now, item_id, self._input.take_segment(start_ms, ev.audio_ms))
        if td.get("create_response", True) and self._active is None:
            self._start_response(now, "vad", {})

    def _commit_user_audio(self, now: float, item_id: str, audio: bytes) -> None:
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        rec = ItemRecord(item=item, audio=bytearray(audio), bytes_per_ms=self._input.bytes_per_ms)
        prev = self.conversation.add(rec)
        self._emit({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item_id})
        self._emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        self._emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})
        transcription = self.config["audio"]["input"]["transcription"]
        if transcription is not None:
            index = self._user_audio_items
            model = str(transcription.get("model") or "whisper-1")
            self._at(now + self.settings.transcription_delay_s, lambda t: self._transcribe(rec, index, model))
        self._user_audio_items += 1

    def _transcribe(self, rec: ItemRecord, index: int, model: str) -> None:
        if self.conversation.get(rec.id) is None:
            return
        text = self._transcripts.text_for(self, index)
        ids = {"item_id": rec.id, "content_index": 0}
        if model != "whisper-1" and text:
            self._emit({"type": "conversation.item.input_audio_transcription.delta", **ids, "delta": text})
        rec.item["content"][0]["transcript"] = text
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                **ids,
                "transcript": text,
                "usage": transcription_usage(model, rec.audio_ms, text),
            }
        )

    def _arm_idle(self, at: float) -> None:
        td = self._td()
        if not td or td["type"] != "server_vad" or not td.get("idle_timeout_ms"):
            return
        self._idle_gen += 1
        gen = self._idle_gen
        self._at(at + td["idle_timeout_ms"] / 1000.0, lambda t: self._idle_fire(t, gen))

    def _idle_fire(self, now: float, gen: int) -> None:
        if gen != self._idle_gen or self._active is not None or self._input.in_speech:
            return
        item_id = self._ids.new("item")
        start, end = round(self._input.start_ms), round(self._input.timeline_ms)
        self._emit({"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": start, "audio_end_ms": end, "item_id": item_id})
        self._commit_user_audio(now, item_id, self._input.take_all())
        if (self._td() or {}).get("create_response", True):
            self._start_response(now, "idle", {})

    # -- responses ------------------------------------------------------------------------------
    def _start_response(self, now: float, trigger: str, params: dict[str, Any]) -> None:
        cfg = self.config
        out_cfg = cfg["audio"]["output"]
        override = (params.get("audio") or {}).get("output") or {}
        fmt = dict(override.get("format") or out_cfg["format"])
        if fmt.get("type", "audio/pcm") == "audio/pcm":
            fmt = {"type": "audio/pcm", "rate": 24000}
        voice = override.get("voice", out_cfg["voice"])
        voice = voice["id"] if isinstance(voice, dict) else voice
        modality = (params.get("output_modalities") or cfg["output_modalities"])[0]
        reply = self._script.reply_for(self, len(self.responses))
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
        in_conv = params.get("conversation", "auto") != "none"
        instructions = params.get("instructions", cfg["instructions"])
        tally = tally_conversation(instructions, self.conversation)
        run = ResponseRun(
            record=record,
            reply=reply,
            audio=audio,
            modality=modality,
            voice=voice,
            out_format=fmt,
            max_output_tokens=params.get("max_output_tokens", cfg["max_output_tokens"]),
            metadata=params.get("metadata"),
            conversation_id=self.conversation_id if in_conv else None,
            conversation=self.conversation if in_conv else None,
            new_id=self._ids.new,
            token=self._ids.token,
            settings=self.settings.stream,
            input_tally=tally,
            previous_tally=self._prev_tally,
            fail=self._failures.pop(0) if self._failures else None,
        )
        self.responses.append(record)
        self._active = run
        self._idle_gen += 1
        self._emit_all(run.start())
        if self.settings.rate_limits_at == "created":
            self._emit_rate_limits()
        self._schedule(run)

    def _schedule(self, run: ResponseRun) -> None:
        due = run.next_due()
        if due is not None:
            self._at(due, lambda t: self._pump(run, t))

    def _pump(self, run: ResponseRun, now: float) -> None:
        if run is not self._active:
            return
        self._emit_all(run.step(now))
        if run.finished:
            self._after(run, now)
        else:
            self._schedule(run)

    def _stop_active(self, now: float, status: Literal["cancelled", "failed"], *, reason: str | None = None, error: dict[str, Any] | None = None) -> None:
        run = self._active
        if run is None:
            return
        self._emit_all(run.stop(now, status, reason=reason, error=error))
        self._after(run, now)

    def _after(self, run: ResponseRun, now: float) -> None:
        self._active = None
        rec = run.record
        self._prev_tally = run.input_tally if rec.status != "failed" else self._prev_tally
        self._tokens_used += (rec.usage or {}).get("total_tokens", 0)
        if self.settings.rate_limits_at == "done":
            self._emit_rate_limits()
        if rec.status in ("completed", "incomplete"):
            self._arm_idle(now + rec.audio_ms_sent / 1000.0)

    def _emit_all(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            if ev["type"] == "response.output_audio.delta":
                self._audio_out_present = True
            self._emit(ev)

    def _emit_rate_limits(self) -> None:
        self._emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": rate_limits(self.settings.rate_limit_names, self.settings.tokens_limit, self._tokens_used),
            }
        )
