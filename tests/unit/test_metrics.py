"""Metric definitions and the per-call observer: figures from hooks, exposition, token cost."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fsbridge.call.downlink import ReplyStats, Truncation
from fsbridge.call.usage import UsageTotals
from fsbridge.config import default_prices
from fsbridge.esl.protocol import event_from_headers
from fsbridge.metrics import TOKEN_KINDS, Metrics, token_kinds

GA_USAGE = {
    "total_tokens": 300,
    "input_tokens": 200,
    "output_tokens": 100,
    "input_token_details": {
        "text_tokens": 120,
        "audio_tokens": 80,
        "image_tokens": 0,
        "cached_tokens": 96,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 32, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 10, "audio_tokens": 90},
}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample's value from the rendered exposition (so the text format is what is tested)."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def fake_call(replies: dict[str, ReplyStats] | None = None) -> Any:
    return SimpleNamespace(
        uuid="u-1",
        playout=SimpleNamespace(replies=replies if replies is not None else {}),
        summary=SimpleNamespace(turns=0, barge_ins=0, usage={}),
    )


def summary(outcome: str = "hangup", duration_s: float = 12.0, turns: int = 2) -> Any:
    return SimpleNamespace(outcome=outcome, duration_s=duration_s, turns=turns)


# -- tokens and cost --------------------------------------------------------------------------------
def totals(*usages: Any) -> UsageTotals:
    t = UsageTotals()
    for u in usages:
        t.add(u)
    return t


def test_token_kinds_take_cached_out_of_plain_input() -> None:
    assert token_kinds(totals(GA_USAGE)) == {
        "input_text": 56,
        "input_cached_text": 64,
        "input_audio": 48,
        "input_cached_audio": 32,
        "output_text": 10,
        "output_audio": 90,
    }
    assert sum(token_kinds(totals(GA_USAGE)).values()) == GA_USAGE["total_tokens"]


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.dictionaries(st.sampled_from(
                        ["input_tokens", "output_tokens", "input_token_details",
                         "output_token_details", "cached_tokens_details", "text_tokens",
                         "audio_tokens", "cached_tokens"]), c, max_size=5), max_leaves=20))  # fmt: skip
def test_token_kinds_never_raise_or_go_negative(usage: Any) -> None:
    counts = token_kinds(
        totals(usage if isinstance(usage, dict) else {"input_token_details": usage})
    )
    assert set(counts) == set(TOKEN_KINDS) and all(v >= 0 for v in counts.values())


# -- the observer ------------------------------------------------------------------------------------
def test_each_service_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.calls_active.inc()
    assert sample(a, "fsbridge_calls_active") == 1 and sample(b, "fsbridge_calls_active") == 0


def test_call_lifetime_counts_active_outcome_duration_turns() -> None:
    m = Metrics(default_prices())
    obs, call = m.call_observer("gpt-realtime"), fake_call()
    obs.call_started(call)
    assert sample(m, "fsbridge_calls_active") == 1
    obs.realtime_event(call, "in", {"type": "response.created", "response": {}})
    assert sample(m, "fsbridge_turns_total") == 1
    obs.realtime_event(call, "in", {"type": "session.created", "session": {}})
    obs.realtime_event(call, "in", {"type": "session.created", "session": {}})  # a renewal
    ended = summary("hangup", 12.0, 2)
    ended.renewals, ended.reconnects = 1, 2
    obs.call_ended(call, ended)
    assert sample(m, "fsbridge_realtime_sessions_total", kind="first") == 1
    assert sample(m, "fsbridge_realtime_sessions_total", kind="renewal") == 1
    assert sample(m, "fsbridge_realtime_sessions_total", kind="reconnect") == 2
    assert sample(m, "fsbridge_calls_active") == 0
    assert sample(m, "fsbridge_calls_total", outcome="hangup") == 1
    assert sample(m, "fsbridge_call_duration_seconds_sum") == 12.0
    assert sample(m, "fsbridge_call_turns_sum") == 2


def test_first_audio_latency_maps_speech_end_back_to_the_append_that_carried_it() -> None:
    m = Metrics()
    obs, call = m.call_observer("gpt-realtime"), fake_call()
    # 10 appends of 40 ms (1920 bytes = 2560 base64 chars each): 400 ms of input audio.
    for _ in range(10):
        obs.realtime_event(call, "out", {"type": "input_audio_buffer.append", "audio": "A" * 2560})
    sent_t = time.monotonic()
    # Speech ended at 300 ms of the input timeline.
    obs.realtime_event(
        call, "in", {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 300}
    )
    reply = ReplyStats("r1", "i1", first_delta_t=sent_t + 0.5, first_heard_t=sent_t + 0.6)
    obs.reply_heard(call, reply)
    latency = sample(m, "fsbridge_first_audio_latency_seconds_sum")
    # 300 ms is in the append that ended at 320 ms (sent last but two): 0.6 s + 20 ms before it.
    assert 0.615 <= latency <= 0.65
    assert sample(m, "fsbridge_bridge_latency_seconds_sum", direction="downlink") == pytest.approx(
        0.1
    )
    assert obs.last_first_audio_ms == pytest.approx(latency * 1000)
    assert obs.last_bridge_ms == pytest.approx(100)
    # A reply heard without a new end of speech (e.g. a model greeting) is not a turn latency.
    obs.reply_heard(call, ReplyStats("r2", "i2", first_delta_t=1.0, first_heard_t=1.05))
    assert sample(m, "fsbridge_first_audio_latency_seconds_count") == 1
    assert sample(m, "fsbridge_bridge_latency_seconds_count", direction="downlink") == 2


def test_files_and_gaps_are_counted_once_as_they_appear() -> None:
    m = Metrics()
    reply = ReplyStats("r1", "i1", files=1)
    call = fake_call({"r1": reply})
    obs = m.call_observer("gpt-realtime")
    start = event_from_headers({"Event-Name": "PLAYBACK_START", "Unique-ID": "u-1"})
    obs.esl_event(call, start)
    assert sample(m, "fsbridge_playback_files_total") == 1
    reply.files, reply.gaps_ms = 3, [2.0, 120.0]
    obs.esl_event(call, start)
    obs.esl_event(call, start)  # nothing new: nothing counted twice
    assert sample(m, "fsbridge_playback_files_total") == 3
    assert sample(m, "fsbridge_playback_gap_seconds_count") == 2
    assert sample(m, "fsbridge_playback_gap_seconds_sum") == pytest.approx(0.122)
    reply.gaps_ms.append(10.0)
    obs.call_ended(call, summary())  # the final sweep
    assert sample(m, "fsbridge_playback_gap_seconds_count") == 3


def test_barge_in_truncation_errors_usage_uplink() -> None:
    m = Metrics(default_prices())
    obs, call = m.call_observer("gpt-realtime-2025-08-28"), fake_call()
    obs.barge_in(call, 12.5)
    obs.truncated(call, Truncation("i1", audio_end_ms=1200, heard_ms=1200.0, received_ms=4200.0))
    obs.realtime_error(call, "rate_limit_exceeded")
    obs.realtime_error(call, "Weird Code {with} spaces")
    obs.realtime_error(call, None)
    obs.usage(call, GA_USAGE)
    obs.uplink_latency(call, 45.0)
    assert sample(m, "fsbridge_barge_ins_total") == 1
    assert sample(m, "fsbridge_barge_in_reaction_seconds_sum") == pytest.approx(0.0125)
    assert sample(m, "fsbridge_truncations_total") == 1
    assert sample(m, "fsbridge_truncated_audio_seconds_sum") == pytest.approx(3.0)
    assert sample(m, "fsbridge_realtime_errors_total", code="rate_limit_exceeded") == 1
    assert sample(m, "fsbridge_realtime_errors_total", code="other") == 2
    assert sample(m, "fsbridge_tokens_total", kind="output_audio") == 90
    cost = sample(m, "fsbridge_cost_usd_total", model="gpt-realtime-2025-08-28")
    # The per-call figure and the counter agree, at gpt-realtime's prices (a dated snapshot).
    expected = (56 * 4 + 64 * 0.4 + 48 * 32 + 32 * 0.4 + 10 * 16 + 90 * 64) / 1e6
    assert cost == pytest.approx(expected) and obs.cost_usd == pytest.approx(expected)
    assert obs.tokens == 300
    assert sample(m, "fsbridge_bridge_latency_seconds_sum", direction="uplink") == pytest.approx(
        0.045
    )


def test_transcription_cost_is_counted_under_the_transcription_model() -> None:
    m = Metrics(default_prices())
    obs = m.call_observer("gpt-realtime")
    call = fake_call()
    call.profile = SimpleNamespace(transcription=SimpleNamespace(model="gpt-4o-transcribe"))
    obs.usage(call, GA_USAGE)
    realtime = obs.cost_usd
    obs.transcription_usage(call, {"type": "tokens", "input_tokens": 100, "output_tokens": 20})
    asr = (100 * 6.0 + 20 * 10.0) / 1e6  # gpt-4o-transcribe: 6 audio in, 10 text out per 1M
    assert sample(m, "fsbridge_cost_usd_total", model="gpt-4o-transcribe") == pytest.approx(asr)
    assert obs.cost_usd == pytest.approx(realtime + asr)
    call.profile = SimpleNamespace(transcription=SimpleNamespace(model="asr-with-no-price"))
    obs.transcription_usage(call, {"type": "tokens", "input_tokens": 100, "output_tokens": 20})
    assert obs.cost_usd == pytest.approx(realtime + asr)


def test_unknown_model_counts_tokens_but_no_cost() -> None:
    m = Metrics(default_prices())
    obs = m.call_observer("not-priced")
    obs.usage(fake_call(), GA_USAGE)
    assert obs.price is None and obs.cost_usd is None
    assert sample(m, "fsbridge_tokens_total", kind="input_text") == 56
