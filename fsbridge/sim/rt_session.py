"""One simulated Realtime connection as a state machine (sans-I/O).

Fed client text frames and the time, it queues server events (and at most one close request) in an
outbox and asks to be woken at ``next_deadline()`` for timed work: streaming a reply, delivering an
input transcript, the idle timeout, session expiry. The WebSocket shell (``realtime.py``) only moves
frames and keeps the clock; everything the server decides lives here, so it is tested without I/O.

Seams: ``rt_schema``/``rt_config`` validate, ``rt_input`` holds the input buffer and VAD,
``rt_item_ops`` the conversation commands, ``rt_responder`` the model's responses.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
from collections.abc import Callable
from typing import Any, Literal

from fsbridge.sim import rt_errors as E
from fsbridge.sim.rt_config import (
    check_response_params,
    check_session_update,
    default_session,
    merge_session,
)
from fsbridge.sim.rt_input import InputBuffer
from fsbridge.sim.rt_item_ops import (
    create_item,
    find_item,
    retrieved_item,
    transcription_events,
    truncate_item,
    user_audio_item,
)
from fsbridge.sim.rt_items import Conversation, IdGen, ItemRecord
from fsbridge.sim.rt_responder import Responder
from fsbridge.sim.rt_schema import ParamError, check_envelope
from fsbridge.sim.rt_script import ReplyScript, TranscriptScript
from fsbridge.sim.rt_settings import CloseRequest, Outgoing, SimSettings, failure_error
from fsbridge.sim.rt_stream import ResponseRecord
from fsbridge.sim.rt_vad import VadEvent

__all__ = ["CloseRequest", "SessionCore", "SimSettings"]

Handler = Callable[[dict[str, Any], float], None]


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
        self._transcripts = transcripts
        # recorded truth
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.input_audio = bytearray()
        self.truncations: list[tuple[float, str, int]] = []
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
        self._user_audio_items = 0
        self._idle_gen = 0  # bumping it disarms a pending idle timeout
        self._responder = Responder(
            session=self,
            settings=settings,
            script=script,
            conversation=self.conversation,
            conversation_id=self.conversation_id,
            ids=self._ids,
            emit=self._emit,
            at=self._at,
            on_finished=self._response_finished,
        )
        self.responses: list[ResponseRecord] = self._responder.records
        self._handlers: dict[str, Handler] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "output_audio_buffer.clear": self._output_clear,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    # -- shell interface ------------------------------------------------------------------------
    @property
    def items(self) -> list[dict[str, Any]]:
        """The conversation in order (audio items carry ``audio_ms``)."""
        return [rec.public() for rec in self.conversation]

    @property
    def active_response_id(self) -> str | None:
        return self._responder.active_id

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

    def reject(
        self, code: str, message: str, close: CloseRequest, param: str | None = None
    ) -> None:
        """A connection the server refuses after the upgrade (beta header, bad model)."""
        self._emit(E.error_event(code, message, param=param))
        self._close(close)

    def handle_text(self, text: str, now: float) -> None:
        self.on_timer(now)  # what was due before this frame happens first
        if self.ended:
            return
        try:
            event = json.loads(text)
        except ValueError as exc:
            self.received.append((now, {"_invalid_json": text[:2000]}))
            self._emit(E.error_event("invalid_json", f"Invalid JSON in client event: {exc}."))
            return
        if not isinstance(event, dict):
            self.received.append((now, {"_invalid_json": text[:2000]}))
            self._emit(
                E.error_event("invalid_type", "Invalid client event: expected a JSON object.")
            )
            return
        self.received.append((now, event))
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            self._handlers[check_envelope(event)](event, now)
        except ParamError as err:
            self._emit(E.error_event(err.code, err.message, param=err.param, event_id=event_id))

    def handle_binary(self, data: bytes, now: float) -> None:
        self.on_timer(now)
        if self.ended:
            return
        self.received.append((now, {"_binary": len(data)}))
        self._emit(
            E.error_event(
                "invalid_value", "Binary frames are not supported; send JSON text frames."
            )
        )

    def close(self, req: CloseRequest) -> None:
        """End the session from the server side (shutdown); later input is ignored."""
        if not self.ended:
            self._close(req)

    def crash(self) -> None:
        """The simulator itself failed: a ``server_error`` event, then close 1011."""
        self._emit(E.error_event("server_error", E.SERVER_ERROR_MESSAGE, type=E.SERVER_ERROR_TYPE))
        self._close(CloseRequest(1011, "internal error"))

    def fail_response(
        self, now: float, kind: Literal["server_error", "rate_limit"], when: str = "auto"
    ) -> None:
        """Fault injection: fail the active response now, or the next one."""
        self._responder.fail(now, failure_error(kind, self.model, self.settings.tokens_limit), when)

    # -- plumbing -------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if not self.ended:
            self._outbox.append(
                {"type": event["type"], "event_id": self._ids.new("event"), **event}
            )

    def _close(self, req: CloseRequest) -> None:
        self._outbox.append(req)
        self.ended = True
        self._timers.clear()

    def _at(self, t: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(self._timers, (t, next(self._seq), fn))

    def _expire(self, now: float) -> None:
        message = E.session_expired_message(self.settings.session_max_s)
        self._emit(E.error_event(E.SESSION_EXPIRED_CODE, message))
        self._close(
            CloseRequest(self.settings.expiry_close_code, self.settings.expiry_close_reason)
        )

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

    # -- session --------------------------------------------------------------------------------
    def _session_update(self, event: dict[str, Any], now: float) -> None:
        upd = check_session_update(
            event.get("session"), require_output_rate=self.settings.require_output_rate
        )
        if "model" in upd and upd["model"] != self.model:
            # UNCONFIRMED text; the SDK docs say the model cannot change.
            raise ParamError("invalid_value", "Cannot update a session's model.", "session.model")
        voice = ((upd.get("audio") or {}).get("output") or {}).get("voice")
        if (
            voice is not None
            and voice != self.config["audio"]["output"]["voice"]
            and self._responder.audio_out_present
        ):
            raise ParamError(E.VOICE_LOCKED_CODE, E.VOICE_LOCKED_MESSAGE, None)
        before = self.config["audio"]["input"]
        self.config = merge_session(self.config, upd)
        after = self.config["audio"]["input"]
        if (before["turn_detection"], before["format"]) != (
            after["turn_detection"],
            after["format"],
        ):
            self._configure_input()
        self._emit({"type": "session.updated", "session": self.config})

    # -- input side -----------------------------------------------------------------------------
    def _append(self, event: dict[str, Any], now: float) -> None:
        audio = event.get("audio")
        if audio is None:
            raise ParamError(
                "missing_required_parameter", "Missing required parameter: 'audio'.", "audio"
            )
        try:
            if not isinstance(audio, str):
                raise ValueError
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ParamError("invalid_value", E.INVALID_AUDIO_MESSAGE, "audio") from None
        if len(data) > self.settings.max_append_bytes:
            raise ParamError("invalid_value", "Invalid 'audio': chunk larger than 15 MiB.", "audio")
        self.input_audio.extend(data)
        for vad_event in self._input.append(data):
            self._on_vad(vad_event, now)

    def _commit(self, event: dict[str, Any], now: float) -> None:
        ms = self._input.buffered_ms
        if ms < self.settings.commit_min_ms:
            raise ParamError(E.COMMIT_EMPTY_CODE, E.commit_empty_message(ms), None)
        item_id = self._speech[0] if self._speech else self._ids.new("item")
        self._speech = None
        self._commit_user_audio(now, item_id, self._input.take_all())

    def _clear(self, event: dict[str, Any], now: float) -> None:
        self._input.take_all()
        self._speech = None
        self._emit({"type": "input_audio_buffer.cleared"})

    def _output_clear(self, event: dict[str, Any], now: float) -> None:
        message = "output_audio_buffer.clear is only supported for WebRTC and SIP sessions."
        raise ParamError(E.WEBRTC_ONLY_CODE, message, "type")

    def _on_vad(self, ev: VadEvent, now: float) -> None:
        td = self._td() or {}
        if ev.kind == "start":
            item_id = self._ids.new("item")
            self._speech = (item_id, ev.audio_ms)
            self._idle_gen += 1  # speech disarms the idle timeout
            self._emit(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": ev.audio_ms,
                    "item_id": item_id,
                }
            )
            if td.get("interrupt_response", True):
                self._responder.stop(now, "cancelled", reason="turn_detected")
            return
        item_id, start_ms = self._speech or (self._ids.new("item"), ev.audio_ms)
        self._speech = None
        self._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": ev.audio_ms,
                "item_id": item_id,
            }
        )
        self._commit_user_audio(now, item_id, self._input.take_segment(start_ms, ev.audio_ms))
        if td.get("create_response", True) and self._responder.active_id is None:
            self._start_response(now, "vad", {})

    def _commit_user_audio(self, now: float, item_id: str, audio: bytes) -> None:
        rec = user_audio_item(item_id, audio, self._input.bytes_per_ms)
        prev = self.conversation.add(rec)
        ids = {"previous_item_id": prev, "item_id": item_id}
        self._emit({"type": "input_audio_buffer.committed", **ids})
        self._emit({"type": "conversation.item.added", "previous_item_id": prev, "item": rec.item})
        self._emit({"type": "conversation.item.done", "previous_item_id": prev, "item": rec.item})
        transcription = self.config["audio"]["input"]["transcription"]
        if transcription is not None:
            index, model = self._user_audio_items, str(transcription.get("model") or "whisper-1")
            due = now + self.settings.transcription_delay_s
            self._at(due, lambda t: self._transcribe(rec, index, model))
        self._user_audio_items += 1

    def _transcribe(self, rec: ItemRecord, index: int, model: str) -> None:
        if self.conversation.get(rec.id) is not None:  # not deleted meanwhile
            text = self._transcripts.text_for(self, index)
            for event in transcription_events(rec, model, text):
                self._emit(event)

    def _arm_idle(self, at: float) -> None:
        td = self._td()
        if not td or td["type"] != "server_vad" or not td.get("idle_timeout_ms"):
            return
        self._idle_gen += 1
        gen = self._idle_gen
        self._at(at + td["idle_timeout_ms"] / 1000.0, lambda t: self._idle_fire(t, gen))

    def _idle_fire(self, now: float, gen: int) -> None:
        if gen != self._idle_gen or self._responder.active_id is not None or self._input.in_speech:
            return
        item_id = self._ids.new("item")
        start, end = round(self._input.start_ms), round(self._input.timeline_ms)
        self._emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": start,
                "audio_end_ms": end,
                "item_id": item_id,
            }
        )
        self._commit_user_audio(now, item_id, self._input.take_all())
        if (self._td() or {}).get("create_response", True):
            self._start_response(now, "idle", {})

    # -- conversation items ---------------------------------------------------------------------
    def _item_create(self, event: dict[str, Any], now: float) -> None:
        rec, prev = create_item(
            self.conversation, event, self._ids.new("item"), self._input.bytes_per_ms
        )
        self._emit({"type": "conversation.item.added", "previous_item_id": prev, "item": rec.item})
        self._emit({"type": "conversation.item.done", "previous_item_id": prev, "item": rec.item})

    def _item_truncate(self, event: dict[str, Any], now: float) -> None:
        rec = truncate_item(
            self.conversation,
            event,
            too_long_code=self.settings.truncate_too_long_code,
            not_assistant_code=self.settings.truncate_not_assistant_code,
        )
        end = int(event["audio_end_ms"])
        self.truncations.append((now, rec.id, end))
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": rec.id,
                "content_index": 0,
                "audio_end_ms": end,
            }
        )

    def _item_delete(self, event: dict[str, Any], now: float) -> None:
        rec = find_item(self.conversation, event)
        self.conversation.remove(rec.id)
        self._emit({"type": "conversation.item.deleted", "item_id": rec.id})

    def _item_retrieve(self, event: dict[str, Any], now: float) -> None:
        rec = find_item(self.conversation, event)
        self._emit({"type": "conversation.item.retrieved", "item": retrieved_item(rec)})

    # -- responses ------------------------------------------------------------------------------
    def _response_create(self, event: dict[str, Any], now: float) -> None:
        params = (
            check_response_params(event["response"]) if event.get("response") is not None else {}
        )
        active = self._responder.active_id
        if active is not None:
            raise ParamError(E.ACTIVE_RESPONSE_CODE, E.active_response_message(active), None)
        self._start_response(now, "client", params)

    def _response_cancel(self, event: dict[str, Any], now: float) -> None:
        wanted = event.get("response_id")
        if wanted is not None and wanted != self._responder.active_id:
            raise ParamError(E.CANCEL_NOT_ACTIVE_CODE, E.CANCEL_NOT_ACTIVE_MESSAGE, None)
        if not self._responder.stop(now, "cancelled", reason="client_cancelled"):
            raise ParamError(E.CANCEL_NOT_ACTIVE_CODE, E.CANCEL_NOT_ACTIVE_MESSAGE, None)

    def _start_response(self, now: float, trigger: str, params: dict[str, Any]) -> None:
        self._idle_gen += 1
        self._responder.start(now, trigger, params, self.config)

    def _response_finished(self, rec: ResponseRecord, now: float) -> None:
        if rec.status in ("completed", "incomplete"):
            # the idle timer counts from the end of playback: response.done + the audio's length
            self._arm_idle(now + rec.audio_ms_sent / 1000.0)
