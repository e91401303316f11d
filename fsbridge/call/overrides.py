"""Per-call profile overrides from channel variables (``fsbridge_instructions`` and friends).

The dialplan picks a profile with ``fsbridge_profile``; a profile with ``allow_overrides`` also lets
the dialplan (or whoever set the channel's variables) replace single fields for one call. Channel
variables are not config: nothing here may fail a call. A value that is not acceptable (an unknown
voice, an empty instruction, a malformed language tag) is reported and ignored, and the profile's
own value stays. Pure: headers in, a new frozen profile and notes out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import GA_VOICES, Profile

__all__ = ["MAX_INSTRUCTIONS", "Override", "apply_overrides", "channel_variable"]

MAX_INSTRUCTIONS = 16_000  # characters; a runaway variable must not become a huge session.update
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # ISO 639 (+ region), as ASR expects


@dataclass(frozen=True)
class Override:
    """One channel variable that was looked at: applied, or ignored and why."""

    variable: str
    applied: bool
    detail: str


def channel_variable(channel: Mapping[str, str], name: str) -> str | None:
    """A channel variable as the CHANNEL_PARK headers carry it (``variable_<name>``)."""
    value = channel.get(f"variable_{name}")
    if value is None:
        value = channel.get(name)
    return value


def apply_overrides(profile: Profile, channel: Mapping[str, str]) -> tuple[Profile, list[Override]]:
    """Return ``profile`` with the channel's overrides applied (only if it allows them)."""
    if not profile.allow_overrides:
        return profile, []
    notes: list[Override] = []
    update: dict[str, object] = {}

    text = channel_variable(channel, "fsbridge_instructions")
    if text is not None:
        text = text.strip()
        if not text:
            notes.append(Override("fsbridge_instructions", False, "empty"))
        elif len(text) > MAX_INSTRUCTIONS:
            notes.append(
                Override("fsbridge_instructions", False, f"longer than {MAX_INSTRUCTIONS} chars")
            )
        else:
            update["instructions"] = text
            notes.append(Override("fsbridge_instructions", True, f"{len(text)} chars"))

    voice = channel_variable(channel, "fsbridge_voice")
    if voice is not None:
        voice = voice.strip().lower()
        if voice in GA_VOICES:
            update["voice"] = voice
            notes.append(Override("fsbridge_voice", True, voice))
        else:
            notes.append(
                Override(
                    "fsbridge_voice",
                    False,
                    f"{voice[:40]!r} is not a GA voice ({', '.join(GA_VOICES)})",
                )
            )

    language = channel_variable(channel, "fsbridge_language")
    if language is not None:
        language = language.strip()
        if not _LANGUAGE.match(language):
            notes.append(
                Override("fsbridge_language", False, f"{language[:20]!r} is not a language code")
            )
        elif profile.transcription is None:
            notes.append(
                Override("fsbridge_language", False, "the profile has no input transcription")
            )
        else:
            update["transcription"] = profile.transcription.model_copy(
                update={"language": language}
            )
            notes.append(Override("fsbridge_language", True, language))

    if not update:
        return profile, notes
    return profile.model_copy(update=update), notes
