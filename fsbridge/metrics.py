"""Metric definitions (Prometheus) and the per-call observer that updates them.

Every figure lives in one ``Metrics`` object per ``Service``, on its own ``CollectorRegistry``
(never the global one: tests and the demo run several services in one process). ``CallMetrics`` is
the ``CallObserver`` of one call: it turns the call's hooks into metric updates and keeps the few
running figures the admin view shows (last latency, tokens and cost so far). Nothing here runs per
audio frame; the append events it sees (~25/s) only cost a length computation.

Latency definitions (see docs/operations.md):
* first-audio latency of a turn: the caller stopped speaking (the end of speech that the server's
  ``speech_stopped`` names, mapped back to when that audio left the bridge) → first reply sample
  playing on the channel (PLAYBACK_START of the reply's first file).
* bridge latency, downlink: the reply's first audio delta received → its first sample playing.
* bridge latency, uplink: caller audio's wait in the bridge before its append batch is sent.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from . import __version__
from .call.observer import CallObserver
from .call.usage import TranscriptionTotals, UsageTotals, price_for
from .config import Price

if TYPE_CHECKING:
    from .call.call import Call
    from .call.downlink import ReplyStats, Truncation
    from .call.summary import CallSummary
    from .esl.protocol import EslEvent

__all__ = ["CONTENT_TYPE_LATEST", "TOKEN_KINDS", "CallMetrics", "Metrics", "token_kinds"]

TOKEN_KINDS = (
    "input_text",
    "input_cached_text",
    "input_audio",
    "input_cached_audio",
    "output_text",
    "output_audio",
)
# Outcomes an operator alerts on (others appear when they happen).
OUTCOMES = (
    "hangup",
    "realtime_failed",
    "realtime_closed",
    "fork_failed",
    "fork_closed",
    "esl_error",
    "error",
    "service_stopped",
    "over_capacity",
    "draining",
    "rejected",
)
_CODE_RE = re.compile(r"^[a-z0-9_.\-]{1,64}$")
_B64_PER_MS = 64  # base64 characters per ms of 24 kHz int16 audio (48 bytes * 4/3)


def token_kinds(t: UsageTotals) -> dict[str, int]:
    """Billable token counts by kind (cached input is part of the input counts: taken out)."""
    return {
        "input_text": max(0, t.text_in - t.cached_text),
        "input_cached_text": t.cached_text,
        "input_audio": max(0, t.audio_in - t.cached_audio),
        "input_cached_audio": t.cached_audio,
        "output_text": t.text_out,
        "output_audio": t.audio_out,
    }


class Metrics:
    """All of one service's metrics, on a registry of its own."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices = dict(prices or {})
        r = self.registry = CollectorRegistry()
        self.info = Gauge("fsbridge_build_info", "fsbridge version", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.calls_active = Gauge("fsbridge_calls_active", "Calls being served now", registry=r)
        self.calls = Counter("fsbridge_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.fallbacks = Counter(
            "fsbridge_fallbacks",
            "Calls not (or no longer) served by the model: why, and what they got",
            ["reason", "action"],
            registry=r,
        )
        self.call_duration = Histogram(
            "fsbridge_call_duration_seconds",
            "Duration of served calls",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
            registry=r,
        )
        self.call_turns = Histogram(
            "fsbridge_call_turns",
            "Model responses per call",
            buckets=(0, 1, 2, 3, 5, 8, 13, 21, 34, 55),
            registry=r,
        )
        self.turns = Counter("fsbridge_turns", "Model responses started", registry=r)
        self.first_audio = Histogram(
            "fsbridge_first_audio_latency_seconds",
            "Caller's end of speech -> first reply sample playing, per turn",
            buckets=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0),
            registry=r,
        )
        self.bridge_latency = Histogram(
            "fsbridge_bridge_latency_seconds",
            "Latency the bridge adds: downlink = first delta -> first sample playing, "
            "uplink = caller audio held before its append",
            ["direction"],
            buckets=(0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
            registry=r,
        )
        self.barge_ins = Counter("fsbridge_barge_ins", "Replies the caller talked over", registry=r)
        self.barge_in_reaction = Histogram(
            "fsbridge_barge_in_reaction_seconds",
            "speech_started received -> uuid_break acknowledged",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        self.truncations = Counter(
            "fsbridge_truncations", "conversation.item.truncate sent", registry=r
        )
        self.truncated_audio = Histogram(
            "fsbridge_truncated_audio_seconds",
            "Reply audio received but never heard, per truncation",
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.playback_files = Counter(
            "fsbridge_playback_files", "Reply chunk files queued", registry=r
        )
        self.playback_gaps = Histogram(
            "fsbridge_playback_gap_seconds",
            "Silence between consecutive chunk files of one reply",
            buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.12, 0.16, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.realtime_errors = Counter(
            "fsbridge_realtime_errors", "Realtime error events, by code", ["code"], registry=r
        )
        self.esl_connected = Gauge(
            "fsbridge_esl_connected", "1 while the event socket is logged in", registry=r
        )
        self.esl_reconnects = Counter(
            "fsbridge_esl_reconnects", "Event socket connections lost and re-made", registry=r
        )
        self.realtime_sessions = Counter(
            "fsbridge_realtime_sessions",
            "Realtime sessions opened for calls: first, renewal (before the 60 min limit), "
            "reconnect (after a lost session)",
            ["kind"],
            registry=r,
        )
        self.draining = Gauge("fsbridge_draining", "1 while shutting down", registry=r)
        self.tokens = Counter(
            "fsbridge_tokens", "Realtime tokens used, by kind", ["kind"], registry=r
        )
        self.cost = Counter(
            "fsbridge_cost_usd",
            "Estimated cost (config 'prices'), by model: Realtime responses and input transcription",
            ["model"],
            registry=r,
        )
        for kind in TOKEN_KINDS:
            self.tokens.labels(kind)
        for kind in ("first", "renewal", "reconnect"):
            self.realtime_sessions.labels(kind)
        for outcome in OUTCOMES:  # present from the start, so rate() and alerts see zeros
            self.calls.labels(outcome)
        self.bridge_latency.labels("uplink")
        self.bridge_latency.labels("downlink")

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def realtime_error(self, code: str | None) -> None:
        label = code if code and _CODE_RE.match(code) else "other"
        self.realtime_errors.labels(label).inc()

    def call_observer(self, model: str) -> CallMetrics:
        return CallMetrics(self, model)


class CallMetrics(CallObserver):
    """One call's hooks → metrics; also the running figures of the admin view."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.m = metrics
        self.model = model
        self.price = price_for(metrics.prices, model)
        self.totals = UsageTotals()
        self.transcription_cost = 0.0  # USD, counted under the transcription model's name
        self.last_first_audio_ms: float | None = None
        self.last_bridge_ms: float | None = None
        self._speech_end_t: float | None = None
        self._sent_ms = 0.0  # caller audio appended so far (the server's input timeline)
        self._appends: deque[tuple[float, float]] = deque(maxlen=512)  # (end ms, time sent)
        self._counted: dict[str, tuple[int, int]] = {}  # response id -> (files, gaps) counted
        self._active = False
        self._sessions = 0

    # -- lifetime
    def call_started(self, call: Call) -> None:
        self._active = True
        self.m.calls_active.inc()

    def call_ended(self, call: Call, summary: CallSummary) -> None:
        self._sweep(call)
        self.m.realtime_sessions.labels("renewal").inc(_count(summary, "renewals"))
        self.m.realtime_sessions.labels("reconnect").inc(_count(summary, "reconnects"))
        if self._active:
            self._active = False
            self.m.calls_active.dec()
        self.m.calls.labels(summary.outcome).inc()
        self.m.call_duration.observe(max(0.0, summary.duration_s))
        self.m.call_turns.observe(summary.turns)

    # -- Realtime
    def realtime_event(self, call: Call, direction: Literal["in", "out"], event: dict) -> None:
        kind = event.get("type")
        if direction == "out":
            if kind == "input_audio_buffer.append":
                audio = event.get("audio")
                if isinstance(audio, str):
                    self._sent_ms += len(audio) / _B64_PER_MS
                    self._appends.append((self._sent_ms, time.monotonic()))
            return
        if kind == "response.created":
            self.m.turns.inc()
        elif kind == "session.created" and not self._sessions:
            self._sessions = 1
            self.m.realtime_sessions.labels("first").inc()
        elif kind == "input_audio_buffer.speech_stopped":
            self._speech_end_t = self._when_sent(event.get("audio_end_ms"))

    def _when_sent(self, audio_end_ms: Any) -> float:
        """When the audio at ``audio_end_ms`` of the input timeline left the bridge."""
        now = time.monotonic()
        if not isinstance(audio_end_ms, int | float):
            return now
        for end_ms, t in self._appends:
            if end_ms >= audio_end_ms:
                return t - (end_ms - audio_end_ms) / 1000
        return now

    def realtime_error(self, call: Call, code: str | None) -> None:
        self.m.realtime_error(code)

    @property
    def tokens(self) -> int:
        return self.totals.input_tokens + self.totals.output_tokens

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return self.totals.cost_usd(self.price) + self.transcription_cost

    def usage(self, call: Call, usage: dict[str, Any]) -> None:
        one = UsageTotals()
        one.add(usage)
        self.totals.add(usage)
        for kind, n in token_kinds(one).items():
            if n:
                self.m.tokens.labels(kind).inc(n)
        if self.price is not None:
            self.m.cost.labels(self.model).inc(one.cost_usd(self.price))

    def transcription_usage(self, call: Call, usage: dict[str, Any]) -> None:
        asr = call.profile.transcription
        price = price_for(self.m.prices, asr.model) if asr is not None else None
        if price is None:
            return
        one = TranscriptionTotals()
        one.add(usage)
        cost = one.cost_usd(price)
        if cost:
            self.transcription_cost += cost
            self.m.cost.labels(asr.model).inc(cost)

    # -- playback
    def reply_heard(self, call: Call, reply: ReplyStats) -> None:
        bridge = reply.first_audio_latency_ms
        if bridge is not None:
            self.last_bridge_ms = bridge
            self.m.bridge_latency.labels("downlink").observe(bridge / 1000)
        heard = reply.first_heard_t
        if self._speech_end_t is not None and heard is not None and heard >= self._speech_end_t:
            latency = heard - self._speech_end_t
            self.last_first_audio_ms = latency * 1000
            self.m.first_audio.observe(latency)
        self._speech_end_t = None

    def esl_event(self, call: Call, event: EslEvent) -> None:
        if event.name in ("PLAYBACK_START", "PLAYBACK_STOP"):
            self._sweep(call)

    def reply_done(self, call: Call, reply: ReplyStats) -> None:
        self._sweep(call)

    def _sweep(self, call: Call) -> None:
        """Count files and gaps the replies gained since the last look."""
        for reply in call.playout.replies.values():
            files, gaps = self._counted.get(reply.response_id, (0, 0))
            if reply.files > files:
                self.m.playback_files.inc(reply.files - files)
            for gap in reply.gaps_ms[gaps:]:
                self.m.playback_gaps.observe(max(0.0, gap) / 1000)
            self._counted[reply.response_id] = (reply.files, len(reply.gaps_ms))

    def barge_in(self, call: Call, reaction_ms: float) -> None:
        self.m.barge_ins.inc()
        self.m.barge_in_reaction.observe(max(0.0, reaction_ms) / 1000)

    def truncated(self, call: Call, truncation: Truncation) -> None:
        self.m.truncations.inc()
        unheard = max(0.0, truncation.received_ms - truncation.audio_end_ms) / 1000
        self.m.truncated_audio.observe(unheard)

    def uplink_latency(self, call: Call, held_ms: float) -> None:
        self.m.bridge_latency.labels("uplink").observe(max(0.0, held_ms) / 1000)


def _count(summary: Any, name: str) -> int:
    """A counter of the summary (fields other helpers add; absent means none)."""
    value = getattr(summary, name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
