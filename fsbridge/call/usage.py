"""Token usage of a call and what it cost.

The server bills per response (``response.done.response.usage``); the whole conversation is input to
every response, so the per-call figure is the sum over responses. Cached input tokens are a subset
of the input tokens and cost the cached price (reference, section 11):

    cost = (text_in - cached_text) * text_in$ + cached_text * text_cached$
         + (audio_in - cached_audio) * audio_in$ + cached_audio * audio_cached$
         + text_out * text_out$ + audio_out * audio_out$            (prices per 1M tokens)

Prices come from ``config.prices[model]`` (never from code). Image tokens have no price and are
not counted. The input transcription is billed apart, at the ASR model's price, from the ``usage``
of each ``conversation.item.input_audio_transcription.completed``: tokens (``gpt-4o-transcribe``
and its mini) or seconds (``whisper-1``) — :class:`TranscriptionTotals`. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..config import Price

__all__ = ["TranscriptionTotals", "UsageTotals", "price_for"]


def _int(obj: Any, key: str) -> int:
    if not isinstance(obj, Mapping):
        return 0
    val = obj.get(key)
    return val if isinstance(val, int) and not isinstance(val, bool) and val > 0 else 0


@dataclass
class UsageTotals:
    """Token counts summed over the responses of one call (every Realtime session of it)."""

    input_tokens: int = 0
    output_tokens: int = 0
    text_in: int = 0
    audio_in: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    text_out: int = 0
    audio_out: int = 0
    responses: int = 0

    def add(self, usage: Mapping[str, Any] | None) -> None:
        """Add one ``response.done`` usage object; missing or odd fields count as zero."""
        if not isinstance(usage, Mapping):
            return
        self.responses += 1
        inp, out = _int(usage, "input_tokens"), _int(usage, "output_tokens")
        self.input_tokens += inp
        self.output_tokens += out
        din = usage.get("input_token_details")
        dout = usage.get("output_token_details")
        if isinstance(din, Mapping):
            text, audio = _int(din, "text_tokens"), _int(din, "audio_tokens")
            cached = din.get("cached_tokens_details")
            if isinstance(cached, Mapping):
                ctext, caudio = _int(cached, "text_tokens"), _int(cached, "audio_tokens")
            else:  # only a total: without a split, count it as text (the cheaper guess)
                ctext, caudio = _int(din, "cached_tokens"), 0
            self.text_in += text
            self.audio_in += audio
            self.cached_text += min(ctext, text) if text else ctext
            self.cached_audio += min(caudio, audio) if audio else caudio
        else:
            self.text_in += inp
        if isinstance(dout, Mapping):
            self.text_out += _int(dout, "text_tokens")
            self.audio_out += _int(dout, "audio_tokens")
        else:
            self.text_out += out

    def cost_usd(self, price: Price) -> float:
        """The estimated cost in USD at ``price`` (USD per 1M tokens)."""
        uncached_text = max(0, self.text_in - self.cached_text)
        uncached_audio = max(0, self.audio_in - self.cached_audio)
        total = (
            uncached_text * price.text_in
            + self.cached_text * price.text_cached
            + uncached_audio * price.audio_in
            + self.cached_audio * price.audio_cached
            + self.text_out * price.text_out
            + self.audio_out * price.audio_out
        )
        return total / 1_000_000

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class TranscriptionTotals:
    """The input transcription's usage summed over one call's transcribed turns."""

    items: int = 0
    audio_in: int = 0
    text_in: int = 0  # the transcription prompt
    text_out: int = 0
    seconds: float = 0.0

    def add(self, usage: Mapping[str, Any] | None) -> None:
        """Add one ``input_audio_transcription.completed`` usage; odd fields count as zero."""
        if not isinstance(usage, Mapping):
            return
        self.items += 1
        if usage.get("type") == "duration":
            secs = usage.get("seconds")
            if isinstance(secs, int | float) and not isinstance(secs, bool) and secs > 0:
                self.seconds += float(secs)
            return
        details = usage.get("input_token_details")
        if isinstance(details, Mapping):
            self.audio_in += _int(details, "audio_tokens")
            self.text_in += _int(details, "text_tokens")
        else:  # no split: transcription input is audio
            self.audio_in += _int(usage, "input_tokens")
        self.text_out += _int(usage, "output_tokens")

    def cost_usd(self, price: Price) -> float | None:
        """USD at ``price``; None when part of the usage cannot be priced (seconds, no rate)."""
        if self.seconds and price.audio_minute is None:
            return None
        tokens = self.audio_in * price.audio_in + self.text_in * price.text_in
        tokens += self.text_out * price.text_out
        return tokens / 1_000_000 + self.seconds / 60.0 * (price.audio_minute or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def price_for(prices: Mapping[str, Price], model: str) -> Price | None:
    """The price of ``model``: an exact key, else the longest key it starts with (snapshots such
    as ``gpt-realtime-2025-08-28`` cost what ``gpt-realtime`` costs), else None."""
    if model in prices:
        return prices[model]
    best = max((k for k in prices if model.startswith(k + "-")), key=len, default=None)
    return prices[best] if best is not None else None
