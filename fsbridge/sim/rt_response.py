"""One response of the simulated model: the GA event sequence with its timing (sans-I/O).

A ``ResponseRun`` is told the time and answers with the events due by then; the session owns the
clock and the socket. The sequence is the captured GA one (reference §5.1):
response.created -> (first-delta delay) output_item.added, conversation.item.added,
content_part.added -> interleaved output_audio.delta / output_audio_transcript.delta ->
output_audio.done, output_audio_transcript.done, content_part.done, output_item.done,
conversation.item.done -> response.done. Function calls follow §8. A cancel or failure emits the
remaining ``*.done`` events with what was sent so far, then ``response.done``.

Audio leaves at ``delivery_speed`` times real time in deltas of ``delta_ms``; with ``odd_deltas``
the chunk boundaries fall on odd byte offsets (the client must carry a byte across deltas).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

from fsbridge.sim.rt_items import Conversation, ItemRecord
from fsbridge.sim.rt_script import FunctionCallReply, Reply
from fsbridge.sim.rt_stream import ResponseRecord, Status, StreamSettings, chunks, word_cut
from fsbridge.sim.rt_usage import (
    InputTally,
    audio_out_tokens,
    response_usage,
    text_tokens,
    zero_usage,
)

__all__ = ["ResponseRecord", "ResponseRun", "StreamSettings"]  # re-exported for callers


class ResponseRun:
    def __init__(
        self,
        *,
        record: ResponseRecord,
        reply: Reply | FunctionCallReply,
        audio: bytes,
        modality: str,
        voice: str,
        out_format: dict[str, Any],
        max_output_tokens: int | str,
        metadata: dict[str, Any] | None,
        conversation_id: str | None,
        conversation: Conversation | None,
        new_id: Callable[[str], str],
        token: Callable[[int], str],
        settings: StreamSettings,
        input_tally: InputTally,
        previous_tally: InputTally | None,
        fail: dict[str, Any] | None = None,
    ) -> None:
        self.record = record
        self._reply = reply
        self._modality = modality
        self._voice = voice
        self._format = out_format
        self._max_tokens = max_output_tokens
        self._metadata = metadata
        self._conv_id = conversation_id
        self._conv = conversation
        self._new_id = new_id
        self._token = token
        self._s = settings
        self._tally = input_tally
        self._prev_tally = previous_tally
        self._fail = fail
        self._first_t = record.created_t + settings.first_delta_delay_s
        self.finished = False
        self._opened = False
        self._k = 0
        self._item: dict[str, Any] | None = None
        self._rec: ItemRecord | None = None
        self._sent_text = ""
        self._limit_hit = False
        bpm = record.bytes_per_ms
        if isinstance(reply, FunctionCallReply):
            record.kind = "function_call"
            self._args = reply.arguments_text()
            step = max(1, settings.args_delta_chars)
            self._pieces: list[Any] = [
                self._args[i : i + step] for i in range(0, len(self._args), step)
            ]
            self._dt = settings.args_delta_interval_s
            self._call_id = reply.call_id or new_id("call")
        elif modality == "text":
            record.kind = "text"
            words = reply.transcript.split(" ")
            n = max(1, settings.text_words_per_delta)
            groups = [" ".join(words[i : i + n]) for i in range(0, len(words), n)]
            self._pieces = [g if i == 0 else " " + g for i, g in enumerate(groups) if g or i == 0]
            self._dt = settings.delta_ms / 1000.0 / settings.delivery_speed
        else:
            self._total = len(audio)  # the transcript is spread over the *whole* reply
            if isinstance(max_output_tokens, int):
                cap = max_output_tokens * 50 * bpm  # ~1 token per 50 ms of output audio
                if len(audio) > cap:
                    audio, self._limit_hit = audio[:cap], True
            self._pieces = chunks(audio, settings.delta_ms * bpm, settings.odd_deltas)
            self._dt = settings.delta_ms / 1000.0 / settings.delivery_speed

    @property
    def input_tally(self) -> InputTally:
        return self._tally

    # -- timing ---------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        if self.finished:
            return None
        return self._first_t + self._k * self._dt

    def start(self) -> list[dict[str, Any]]:
        return [
            {"type": "response.created", "response": self._response("in_progress", None, [], None)}
        ]

    def step(self, now: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while not self.finished and (due := self.next_due()) is not None and due <= now + 1e-9:
            if not self._opened:
                if self._fail is not None:
                    out += self.stop(now, "failed", error=self._fail)
                    break
                out += self._open()
            if self._k < len(self._pieces):
                out += self._delta(now, self._pieces[self._k])
                self._k += 1
            if self._k >= len(self._pieces):
                if self._limit_hit:
                    out += self._finish(now, "incomplete", reason="max_output_tokens")
                else:
                    out += self._finish(now, "completed")
        return out

    def stop(
        self,
        now: float,
        status: Status,
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Cancel (``turn_detected`` / ``client_cancelled``) or fail the response now."""
        if self.finished:
            return []
        return self._finish(now, status, reason=reason, error=error)

    # -- events ---------------------------------------------------------------------------------
    def _ids(self) -> dict[str, Any]:
        assert self._item is not None
        return {"response_id": self.record.id, "item_id": self._item["id"], "output_index": 0}

    def _open(self) -> list[dict[str, Any]]:
        self._opened = True
        item_id = self._new_id("item")
        self.record.item_ids.append(item_id)
        if isinstance(self._reply, FunctionCallReply):
            self._item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": self._reply.name,
                "call_id": self._call_id,
                "arguments": "",
            }
        else:
            self._item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        out: list[dict[str, Any]] = [
            {
                "type": "response.output_item.added",
                "response_id": self.record.id,
                "output_index": 0,
                "item": dict(self._item),
            }
        ]
        if self._conv is not None:
            self._rec = ItemRecord(
                item=dict(self._item),
                bytes_per_ms=self.record.bytes_per_ms,
                output_audio=self.record.kind == "audio",
            )
            prev = self._conv.add(self._rec)
            out.append(
                {
                    "type": "conversation.item.added",
                    "previous_item_id": prev,
                    "item": dict(self._item),
                }
            )
        if not isinstance(self._reply, FunctionCallReply):
            part = (
                {"type": "text", "text": ""}
                if self._modality == "text"
                else {"type": "audio", "transcript": ""}
            )
            out.append(
                {
                    "type": "response.content_part.added",
                    **self._ids(),
                    "content_index": 0,
                    "part": part,
                }
            )
        return out

    def _obf(self, ev: dict[str, Any], text: str) -> dict[str, Any]:
        if self._s.obfuscation:
            ev["obfuscation"] = self._token(max(1, 16 - len(text) % 16))
        return ev

    def _delta(self, now: float, piece: Any) -> list[dict[str, Any]]:
        if self.record.first_delta_t is None:
            self.record.first_delta_t = now
        ids = self._ids()
        if isinstance(self._reply, FunctionCallReply):
            self._sent_text += piece
            return [
                {
                    "type": "response.function_call_arguments.delta",
                    **ids,
                    "call_id": self._call_id,
                    "delta": piece,
                }
            ]
        if self._modality == "text":
            self._sent_text += piece
            return [
                self._obf(
                    {
                        "type": "response.output_text.delta",
                        **ids,
                        "content_index": 0,
                        "delta": piece,
                    },
                    piece,
                )
            ]
        self.record.audio_bytes_sent += len(piece)
        self.record.deltas.append((now, ids["item_id"], len(piece)))
        if self._rec is not None:
            self._rec.audio.extend(piece)
        out: list[dict[str, Any]] = [
            {
                "type": "response.output_audio.delta",
                **ids,
                "content_index": 0,
                "delta": base64.b64encode(piece).decode("ascii"),
            }
        ]
        text = self._reply.transcript
        target = (
            len(text)
            if self._k == len(self._pieces) - 1 and not self._limit_hit
            else word_cut(
                text, math.ceil(len(text) * self.record.audio_bytes_sent / max(1, self._total))
            )
        )
        if target > len(self._sent_text):
            delta = text[len(self._sent_text) : target]
            self._sent_text = text[:target]
            out.append(
                self._obf(
                    {
                        "type": "response.output_audio_transcript.delta",
                        **ids,
                        "content_index": 0,
                        "delta": delta,
                    },
                    delta,
                )
            )
        return out

    def _final_item(self, status: Status) -> dict[str, Any]:
        assert self._item is not None
        item = dict(self._item)
        item["status"] = "completed" if status == "completed" else "incomplete"
        if isinstance(self._reply, FunctionCallReply):
            item["arguments"] = self._sent_text
        elif self._modality == "text":
            item["content"] = [{"type": "output_text", "text": self._sent_text}]
        else:
            item["content"] = [{"type": "output_audio", "transcript": self._sent_text}]
        return item

    def _finish(
        self,
        now: float,
        status: Status,
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        self.finished = True
        out: list[dict[str, Any]] = []
        output: list[dict[str, Any]] = []
        if self._opened:
            ids = self._ids()
            text = self._sent_text
            if isinstance(self._reply, FunctionCallReply):
                out.append(
                    {
                        "type": "response.function_call_arguments.done",
                        **ids,
                        "call_id": self._call_id,
                        "name": self._reply.name,
                        "arguments": text,
                    }
                )
            elif self._modality == "text":
                out.append(
                    {"type": "response.output_text.done", **ids, "content_index": 0, "text": text}
                )
                out.append(
                    {
                        "type": "response.content_part.done",
                        **ids,
                        "content_index": 0,
                        "part": {"type": "text", "text": text},
                    }
                )
            else:
                out.append({"type": "response.output_audio.done", **ids, "content_index": 0})
                out.append(
                    {
                        "type": "response.output_audio_transcript.done",
                        **ids,
                        "content_index": 0,
                        "transcript": text,
                    }
                )
                out.append(
                    {
                        "type": "response.content_part.done",
                        **ids,
                        "content_index": 0,
                        "part": {"type": "audio", "transcript": text},
                    }
                )
            item = self._final_item(status)
            output.append(item)
            item_done = {
                "type": "response.output_item.done",
                "response_id": self.record.id,
                "output_index": 0,
                "item": dict(item),
            }
            conv_done = None
            if self._rec is not None:
                self._rec.item = dict(item)
                self._rec.transcript = text if self.record.kind == "audio" else ""
                conv_done = {
                    "type": "conversation.item.done",
                    "previous_item_id": self._rec.previous_item_id,
                    "item": dict(item),
                }
            pair = (
                [item_done, conv_done] if self._s.output_item_done_first else [conv_done, item_done]
            )
            out += [e for e in pair if e is not None]
        if status == "failed":
            usage = zero_usage()
        else:
            out_audio = audio_out_tokens(self.record.audio_ms_sent)
            usage = response_usage(
                self._tally, self._prev_tally, text_tokens(self._sent_text), out_audio
            )
        details: dict[str, Any] | None = None
        if status != "completed":
            details = {"type": status}
            if reason is not None:
                details["reason"] = reason
            if error is not None:
                details["error"] = error
        self.record.status, self.record.reason, self.record.error = status, reason, error
        self.record.done_t, self.record.usage = now, usage
        self.record.transcript_sent = self._sent_text
        out.append(
            {"type": "response.done", "response": self._response(status, details, output, usage)}
        )
        return out

    def _response(
        self,
        status: str,
        details: dict[str, Any] | None,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.record.id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": self._conv_id,
            "output_modalities": [self._modality],
            "max_output_tokens": self._max_tokens,
            "audio": {"output": {"format": dict(self._format), "voice": self._voice}},
            "usage": usage,
            "metadata": self._metadata,
        }
