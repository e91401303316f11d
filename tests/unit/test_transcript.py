"""Transcripts (order, truncation, JSONL, re-seeding), token usage and cost, CDR variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsbridge.call.transcript import Transcript, cut_to_fraction, format_setvars
from fsbridge.call.usage import TranscriptionTotals, UsageTotals, price_for
from fsbridge.config import Price, default_prices
from tests.openai_schema import validate_client_event

# the usage object observed in a GA response.done (reference 5.3)
USAGE = {
    "total_tokens": 320,
    "input_tokens": 132,
    "output_tokens": 188,
    "input_token_details": {
        "text_tokens": 59,
        "audio_tokens": 73,
        "image_tokens": 0,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 64, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 41, "audio_tokens": 147},
}


def test_turns_keep_conversation_order_when_text_arrives_late() -> None:
    tr = Transcript()
    tr.user_audio("item_u1", 1.0)
    tr.assistant_audio("item_a1", 1.5)
    tr.assistant_text("item_a1", "We open at nine.", 3.0)
    tr.user_text("item_u1", " When do you open? ", 3.2)  # transcription after the reply
    tr.user_audio("item_u2", 4.0)  # transcription off for this one: no text, not written
    assert [(t.role, t.text) for t in tr.spoken()] == [
        ("user", "When do you open?"),
        ("assistant", "We open at nine."),
    ]
    lines = [json.loads(line) for line in tr.to_jsonl().splitlines()]
    assert lines[0] == {
        "role": "user",
        "text": "When do you open?",
        "item_id": "item_u1",
        "start_s": 1.0,
        "end_s": 1.0,
    }
    assert lines[1]["item_id"] == "item_a1" and lines[1]["end_s"] == 3.0
    assert tr.count() == 2 and tr.count("assistant") == 1


@pytest.mark.parametrize("order", ["text_first", "truncate_first"])
def test_a_truncated_reply_keeps_what_was_heard(order: str) -> None:
    text = "We are open from nine in the morning until six in the evening."
    tr = Transcript()
    tr.assistant_audio("item_a", 0.0)
    if order == "text_first":
        tr.assistant_text("item_a", text, 1.0)
        tr.truncated("item_a", 1500, 4000)
    else:
        tr.truncated("item_a", 1500, 4000)
        tr.assistant_text("item_a", text, 1.0)
    (turn,) = tr.spoken()
    assert turn.text == "We are open from nine"  # 37.5 % of 62 characters, whole words only
    assert turn.truncated and turn.full_text == text
    line = json.loads(tr.to_jsonl())
    assert line["truncated"] is True and line["heard_fraction"] == 0.375


def test_truncation_of_unknown_or_user_items_is_ignored() -> None:
    tr = Transcript()
    tr.user_audio("item_u", 0.0)
    tr.user_text("item_u", "hello", 0.5)
    tr.truncated("item_u", 10, 100)
    tr.truncated("item_nope", 10, 100)
    assert tr.spoken()[0].text == "hello" and not tr.spoken()[0].truncated


def test_cut_to_fraction_edges() -> None:
    assert cut_to_fraction("one two three", 1.0) == "one two three"
    assert cut_to_fraction("one two three", 0.0) == ""
    assert cut_to_fraction("one two three", 0.5) == "one"  # "one two" would need 7/13
    assert cut_to_fraction("one two three", 7 / 13) == "one two"
    assert cut_to_fraction("", 0.5) == ""
    assert cut_to_fraction("abc", 2.0) == "abc"


@given(st.text(max_size=80), st.floats(0, 1))
def test_cut_is_a_prefix_of_whole_words(text: str, fraction: float) -> None:
    cut = cut_to_fraction(text, fraction)
    assert text.startswith(cut)
    assert len(cut) <= max(len(text) * fraction + 1e-6, 0) or cut == text


def test_notes_and_seed_events_for_a_new_session() -> None:
    tr = Transcript()
    tr.user_audio("item_u1", 1.0)
    tr.user_text("item_u1", "hello", 1.2)
    tr.assistant_audio("item_a1", 1.5)
    tr.assistant_text("item_a1", "hi there", 2.0)
    tr.note("user", "The caller pressed 5", 2.5, "dtmf")
    tr.note("system", "The caller is a VIP.", 2.6, "text")
    tr.user_audio("item_u2", 3.0)  # waiting for its transcription: seeded next time
    events, upto = tr.seed_events()
    for event in events:
        validate_client_event(event)
    items = [e["item"] for e in events]
    assert [(i["role"], i["content"][0]["type"], i["content"][0]["text"]) for i in items] == [
        ("user", "input_text", "hello"),
        ("assistant", "output_text", "hi there"),
        ("user", "input_text", "The caller pressed 5"),
        ("system", "input_text", "The caller is a VIP."),
    ]
    assert upto == 4
    tr.user_text("item_u2", "bye", 3.5)
    more, upto = tr.seed_events(upto)
    assert [e["item"]["content"][0]["text"] for e in more] == ["bye"] and upto == 5
    assert tr.seed_events(upto) == ([], 5)
    assert json.loads(tr.to_jsonl().splitlines()[2])["source"] == "dtmf"


def test_write_is_atomic_jsonl(tmp_path: Path) -> None:
    tr = Transcript()
    tr.note("user", "Merhaba, siparişim nerede?", 0.1, "text")
    path = tmp_path / "deep" / "call.jsonl"
    tr.write(path)
    assert json.loads(path.read_text(encoding="utf-8"))["text"] == "Merhaba, siparişim nerede?"
    assert [p.name for p in path.parent.iterdir()] == ["call.jsonl"]


def test_usage_sums_and_prices_cached_tokens_apart() -> None:
    u = UsageTotals()
    u.add(USAGE)
    u.add(USAGE)
    u.add(None)
    u.add({"input_tokens": "x"})  # a mangled usage counts as a response with no tokens
    assert (u.input_tokens, u.output_tokens, u.responses) == (264, 376, 3)
    assert (u.text_in, u.audio_in, u.cached_text, u.cached_audio) == (118, 146, 0, 128)
    assert (u.text_out, u.audio_out) == (82, 294)
    price = Price()  # gpt-realtime: 4 / 0.4 / 16 text, 32 / 0.4 / 64 audio
    expected = (118 * 4.0 + 0 * 0.4 + (146 - 128) * 32.0 + 128 * 0.4 + 82 * 16.0 + 294 * 64.0) / 1e6
    assert u.cost_usd(price) == pytest.approx(expected)
    assert u.cost_usd(price) == pytest.approx(0.0212272, abs=1e-9)


def test_usage_without_details_counts_as_text() -> None:
    u = UsageTotals()
    u.add({"input_tokens": 100, "output_tokens": 10})
    assert u.cost_usd(Price()) == pytest.approx((100 * 4.0 + 10 * 16.0) / 1e6)
    only_total = UsageTotals()
    only_total.add({"input_tokens": 100, "input_token_details": {"text_tokens": 100,
                                                                 "cached_tokens": 40}})  # fmt: skip
    assert only_total.cached_text == 40


def test_price_lookup_by_model_and_snapshot() -> None:
    prices = default_prices()
    assert price_for(prices, "gpt-realtime-mini") is prices["gpt-realtime-mini"]
    assert price_for(prices, "gpt-realtime-2025-08-28") is prices["gpt-realtime"]
    assert price_for(prices, "gpt-realtime-mini-2025-10-06") is prices["gpt-realtime-mini"]
    assert price_for(prices, "my-own-model") is None


def test_setvars_argument() -> None:
    text = format_setvars({"fsbridge_turns": "3", "fsbridge_transcript": "/a;b/c.jsonl"})
    assert text == "fsbridge_turns=3;fsbridge_transcript=/a,b/c.jsonl"


def test_transcription_usage_by_tokens_and_by_duration() -> None:
    prices = default_prices()
    t = TranscriptionTotals()
    tokens = {"type": "tokens", "input_tokens": 60, "output_tokens": 9, "total_tokens": 69,
              "input_token_details": {"text_tokens": 10, "audio_tokens": 50}}  # fmt: skip
    t.add(tokens)
    t.add({"type": "tokens", "input_tokens": 40, "output_tokens": 5})  # no split: audio
    t.add(None)  # no usage: not a transcription we can count
    assert (t.items, t.audio_in, t.text_in, t.text_out, t.seconds) == (2, 90, 10, 14, 0.0)
    mini = prices["gpt-4o-mini-transcribe"]  # 3 audio, 1.25 text in, 5 text out per 1M
    assert t.cost_usd(mini) == pytest.approx((90 * 3.0 + 10 * 1.25 + 14 * 5.0) / 1e6)
    w = TranscriptionTotals()
    w.add({"type": "duration", "seconds": 2.4})
    w.add({"type": "duration", "seconds": "lots"})  # odd: counts as an item of 0 s
    assert (w.items, w.seconds) == (2, 2.4)
    assert w.cost_usd(prices["whisper-1"]) == pytest.approx(2.4 / 60 * 0.006)
    assert w.cost_usd(Price()) is None  # seconds with no per-minute rate: not priced
    assert w.as_dict()["seconds"] == 2.4
