"""Token usage of a call and what it cost.

The server bills per response (``response.done.response.usage``); the whole conversation is input to
every response, so the per-call figure is the sum over responses. Cached input tokens are a subset
of the input tokens and cost the cached price (reference, section 11):

    cost = (text_in - cached_text) * text_in$ + cached_text * text_cached$
         + (audio_in - cached_audio) * audio_in$ + cached_audio * audio_cached$
         + text_out * text_out$ + audio_out * audio_out$            (prices per 1M tokens)

Prices come from ``config.prices[model]`` (never from code). Image tokens and the input
transcription's own usage have no price in the config and are not counted. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..config import Price

__all__ = ["UsageTotals", "price_for"]


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


def price_for(prices: Mapping[str, Price], model: str) -> Price | None:
    """The price of ``model``: an exact key, else the longest key it starts with (snapshots such
    as ``gpt-realtime-2025-08-28`` cost what ``gpt-realtime`` costs), else None."""
    if model in prices:
        return prices[model]
    best = max((k for k in prices if model.startswith(k + "-")), key=len, default=None)
    return prices[best] if best is not None else None
