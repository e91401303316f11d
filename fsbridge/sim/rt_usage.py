"""Token usage the simulated server reports, with the sums the real one keeps (reference §5.3).

Rates (OpenAI realtime-costs guide): input audio about 1 token per 100 ms, output audio about 1 per
50 ms; text about 1 token per 4 characters. The whole conversation is the input of every response;
what the previous response already read counts as cached, in 64-token steps. Invariants:
total = input + output; input = text + audio + image; cached = sum(cached details) <= input;
output = text + audio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fsbridge.sim.rt_items import ItemRecord

CACHE_STEP = 64


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def audio_in_tokens(ms: float) -> int:
    return round(ms / 100.0)


def audio_out_tokens(ms: float) -> int:
    return round(ms / 50.0)


@dataclass(frozen=True)
class InputTally:
    text: int = 0
    audio: int = 0


def tally_conversation(instructions: str, items: Iterable[ItemRecord]) -> InputTally:
    """Input tokens of a response over ``instructions`` and the conversation items."""
    text, audio = text_tokens(instructions), 0
    for rec in items:
        item = rec.item
        if rec.type == "message":
            for part in item.get("content", []):
                kind = part.get("type")
                if kind in ("input_text", "output_text"):
                    text += text_tokens(str(part.get("text") or ""))
                elif kind in ("input_audio", "output_audio"):
                    audio += audio_in_tokens(rec.audio_ms)
        elif rec.type == "function_call":
            text += text_tokens(str(item.get("name", "")) + str(item.get("arguments", "")))
        elif rec.type == "function_call_output":
            text += text_tokens(str(item.get("output", "")))
    return InputTally(text=text, audio=audio)


def _floor_step(n: int) -> int:
    return (n // CACHE_STEP) * CACHE_STEP


def response_usage(
    inp: InputTally, previous: InputTally | None, out_text: int, out_audio: int
) -> dict[str, Any]:
    cached_text = _floor_step(min(previous.text, inp.text)) if previous else 0
    cached_audio = _floor_step(min(previous.audio, inp.audio)) if previous else 0
    input_tokens = inp.text + inp.audio
    output_tokens = out_text + out_audio
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": inp.text,
            "audio_tokens": inp.audio,
            "image_tokens": 0,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": 0,
            },
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


def zero_usage() -> dict[str, Any]:
    """Failed responses have shown all-zero usage (reference §11)."""
    return response_usage(InputTally(), None, 0, 0)


def rate_limits(names: Sequence[str], tokens_limit: int, tokens_used: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in names:
        if name == "requests":
            out.append(
                {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012}
            )
        else:
            remaining = max(0, tokens_limit - tokens_used)
            out.append(
                {
                    "name": "tokens",
                    "limit": tokens_limit,
                    "remaining": remaining,
                    "reset_seconds": round(60.0 * (tokens_limit - remaining) / tokens_limit, 3),
                }
            )
    return out


def transcription_usage(model: str, audio_ms: float, transcript: str) -> dict[str, Any]:
    """Usage of ``input_audio_transcription.completed``: seconds for whisper-1, else tokens."""
    if model == "whisper-1":
        return {"type": "duration", "seconds": round(audio_ms / 1000.0, 3)}
    audio = audio_in_tokens(audio_ms)
    out = text_tokens(transcript)
    return {
        "type": "tokens",
        "input_tokens": audio,
        "output_tokens": out,
        "total_tokens": audio + out,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio},
    }
