"""Profile overrides from channel variables: applied when allowed, bad values ignored."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsbridge.call.overrides import MAX_INSTRUCTIONS, apply_overrides
from fsbridge.config import GA_VOICES, Profile, Transcription
from fsbridge.realtime.protocol import session_update
from tests.openai_schema import validate_client_event

BASE = Profile(
    instructions="Base instructions.",
    voice="marin",
    allow_overrides=True,
    transcription=Transcription(language="tr"),
)


def test_nothing_changes_unless_the_profile_allows_it() -> None:
    closed = BASE.model_copy(update={"allow_overrides": False})
    channel = {"variable_fsbridge_voice": "cedar", "variable_fsbridge_instructions": "X"}
    profile, notes = apply_overrides(closed, channel)
    assert profile is closed and notes == []


def test_each_variable_overrides_one_field() -> None:
    channel = {
        "variable_fsbridge_instructions": "  Speak like a pirate.  ",
        "variable_fsbridge_voice": "Cedar",
        "variable_fsbridge_language": "en",
        "variable_fsbridge_profile": "english",
    }
    profile, notes = apply_overrides(BASE, channel)
    assert profile.instructions == "Speak like a pirate."
    assert profile.voice == "cedar"
    assert profile.transcription is not None and profile.transcription.language == "en"
    assert profile.transcription.model == BASE.transcription.model  # type: ignore[union-attr]
    assert all(n.applied for n in notes) and len(notes) == 3
    assert BASE.voice == "marin" and BASE.instructions == "Base instructions."  # not mutated
    validate_client_event(session_update(profile))


def test_bad_values_are_ignored_with_a_reason() -> None:
    channel = {
        "variable_fsbridge_voice": "nova",  # a beta voice: noise with GA
        "variable_fsbridge_instructions": "   ",
        "variable_fsbridge_language": "english please",
    }
    profile, notes = apply_overrides(BASE, channel)
    assert profile is BASE
    assert not any(n.applied for n in notes)
    details = {n.variable: n.detail for n in notes}
    assert "not a GA voice" in details["fsbridge_voice"]
    assert details["fsbridge_instructions"] == "empty"
    assert "not a language code" in details["fsbridge_language"]


def test_limits_and_missing_transcription() -> None:
    no_asr = BASE.model_copy(update={"transcription": None})
    channel = {
        "variable_fsbridge_instructions": "x" * (MAX_INSTRUCTIONS + 1),
        "variable_fsbridge_language": "de",
    }
    profile, notes = apply_overrides(no_asr, channel)
    assert profile is no_asr
    assert [n.applied for n in notes] == [False, False]
    assert "no input transcription" in notes[1].detail


def test_plain_variable_names_work_too() -> None:
    profile, _ = apply_overrides(BASE, {"fsbridge_voice": "ash"})
    assert profile.voice == "ash"


@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=30))
def test_any_channel_values_give_a_valid_session(voice: str, text: str, lang: str) -> None:
    channel = {
        "variable_fsbridge_voice": voice,
        "variable_fsbridge_instructions": text,
        "variable_fsbridge_language": lang,
    }
    profile, notes = apply_overrides(BASE, channel)
    assert profile.voice in GA_VOICES
    assert profile.instructions.strip()
    assert len(notes) == 3
    validate_client_event(session_update(profile))
