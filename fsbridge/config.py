"""The one YAML configuration file, as a typed, validated model.

Loaded once at start and passed down explicitly; profiles are frozen values. An unknown key or a
wrong type is an error naming the key path (``profiles.default.voice``) and what was expected, so an
operator finds a typo before the first call instead of during it. Secrets may come from the
environment (``OPENAI_API_KEY``, ``FSBRIDGE_ESL_PASSWORD``, ``FSBRIDGE_ADMIN_TOKEN``) and are held as
``SecretStr`` so that they never print in a repr, a log line or an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

__all__ = [
    "GA_VOICES",
    "Config",
    "ConfigError",
    "Profile",
    "SemanticVad",
    "ServerVad",
    "load_config",
    "parse_config",
]

GA_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
Voice = Literal[
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"
]


class ConfigError(Exception):
    """A configuration problem, already worded for the operator (exit code 2)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ListenConfig(_Model):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = Field(
        "ws://127.0.0.1:8080",
        description="Base URL FreeSWITCH dials for the fork (ws:// or wss://, explicit port).",
    )

    @field_validator("public_url")
    @classmethod
    def _explicit_port(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError("must start with ws:// or wss://")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            # mod_audio_fork's URL regex mis-splits a host ending in digits without a port.
            raise ValueError(
                "must name an explicit port (mod_audio_fork mis-parses URLs without one)"
            )
        return v.rstrip("/")


class FreeSwitchConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8021, ge=1, le=65535)
    password: SecretStr = SecretStr("ClueCon")
    fork_rate: Literal[8000, 16000] = 8000
    fork_module: Literal["audio_fork", "audio_stream"] = "audio_fork"
    chunk_dir: str = Field(
        "/var/lib/fsbridge/chunks",
        description="Where reply chunks are written; FreeSWITCH must read the same absolute path.",
    )
    injection: Literal["sendmsg", "broadcast"] = Field(
        "sendmsg",
        description="How reply chunks are queued: ESL sendmsg execute-playback (no lead-in) "
        "or uuid_broadcast (adds ~100 ms lead-in per file).",
    )
    command_timeout_s: float = Field(5.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    reconnect_max_backoff_s: float = Field(10.0, gt=0)


class RealtimeConfig(_Model):
    url: str = "wss://api.openai.com/v1/realtime"
    session_renew_s: float = Field(
        3300.0, gt=0, description="Open a fresh session (seeded with the transcript) after this."
    )
    heartbeat_s: float = Field(20.0, gt=0, description="WebSocket ping interval (dead peer check).")
    model: str = "gpt-realtime"
    api_key: SecretStr | None = None
    auth: Literal["bearer", "api-key"] = Field(
        "bearer", description="'bearer' (OpenAI) or 'api-key' header (Azure OpenAI)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra handshake headers.")
    connect_timeout_s: float = Field(10.0, gt=0)
    session_ready_timeout_s: float = Field(10.0, gt=0)
    reconnect_attempts: int = Field(
        2,
        ge=1,
        le=10,
        description="New sessions tried when one drops mid-call, before the apology.",
    )
    reconnect_backoff_s: float = Field(
        0.25, ge=0, le=10, description="Wait before attempt n+1: n times this (0.25, 0.5, ...)."
    )


class AudioConfig(_Model):
    resampler: Literal["soxr", "samplerate"] = Field(
        "samplerate",
        description="libsamplerate sinc_medium (6 ms held back) or soxr HQ (cheaper, but holds "
        "back ~44 ms in bursts); see docs/performance.md.",
    )
    append_window_ms: int = Field(
        40, ge=20, le=200, multiple_of=20, description="Caller audio per input_audio_buffer.append."
    )


class PlaybackConfig(_Model):
    first_chunk_ms: int = Field(
        200, ge=20, le=2000, multiple_of=20, description="Audio needed before the first file."
    )
    min_chunk_ms: int = Field(
        200, ge=20, le=5000, multiple_of=20, description="Smallest later file (unless underrun)."
    )
    max_chunk_ms: int = Field(4000, ge=100, le=60000, multiple_of=20, description="Largest file.")
    queue_ahead: int = Field(1, ge=1, le=5, description="Files kept queued behind the playing one.")
    cut_ahead_ms: int | None = Field(
        80,
        ge=20,
        le=2000,
        description="Queue the next file when this much audio is left ahead of it (bigger files, "
        "fewer boundaries); null: as soon as allowed. Margin for event and write latency.",
    )


class ServerVad(_Model):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=0)
    idle_timeout_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True


class SemanticVad(_Model):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


class NoTurnDetection(_Model):
    type: Literal["none"]


TurnDetection = Annotated[ServerVad | SemanticVad | NoTurnDetection, Field(discriminator="type")]


class Transcription(_Model):
    model: str = "gpt-4o-mini-transcribe"
    language: str | None = None
    prompt: str | None = None


class WebhookTool(_Model):
    """A function the model may call; the bridge POSTs the arguments and returns the body."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments.",
    )
    url: str
    timeout_s: float = Field(5.0, gt=0, le=60)
    headers_from_env: dict[str, str] = Field(
        default_factory=dict, description="Header name → environment variable holding its value."
    )


class DtmfConfig(_Model):
    forward: bool = Field(True, description="Send caller DTMF to the model as a text item.")
    respond: bool = Field(True, description="Ask for a response after forwarding digits.")
    commit_key: str | None = Field(
        "#", description="With turn_detection none: this key ends the caller's turn."
    )


class WatchdogConfig(_Model):
    silence_s: float | None = Field(
        None, gt=0, description="Prompt the model after this long without caller speech."
    )
    max_prompts: int = Field(2, ge=0, description="After this many prompts, end the call.")
    prompt: str = "The caller has been silent. Ask briefly whether they are still there."
    goodbye_prompt: str = "The caller is not answering. Say a short goodbye."


class LocalBargeIn(_Model):
    enabled: bool = Field(False, description="Stop playback on local speech detection.")
    threshold_db: float = Field(-35.0, le=0, description="Frame energy (dBFS) counted as speech.")
    min_speech_ms: int = Field(120, ge=20, le=2000, multiple_of=20)
    echo_correlation: float = Field(
        0.6, ge=0, le=1, description="Ignore caller audio this correlated with our playback."
    )
    end_silence_ms: int = Field(
        700, ge=100, le=5000, description="With turn_detection none: silence that ends a turn."
    )


class Profile(_Model):
    instructions: str = "You are a helpful voice assistant on a phone call. Keep answers short."
    voice: Voice = "marin"
    model: str | None = Field(None, description="Overrides realtime.model for this profile.")
    greeting: str | None = Field(None, description="WAV played with uuid_broadcast at answer.")
    greeting_mode: Literal["file", "model", "none"] = "file"
    greeting_prompt: str = "Greet the caller briefly and ask how you can help."
    greeting_interruptible: bool = True
    apology: str | None = Field(None, description="WAV played before hangup if the model is down.")
    goodbye: str | None = Field(None, description="WAV played when the bridge ends a call (drain).")
    fallback_transfer: str | None = Field(
        None, description="Extension a call is transferred to when fsbridge cannot serve it."
    )
    busy: str | None = Field(None, description="WAV played to calls over freeswitch.max_calls.")
    turn_detection: TurnDetection = Field(default_factory=ServerVad)
    transcription: Transcription | None = None
    noise_reduction: Literal["near_field", "far_field"] | None = None
    speed: float = Field(1.0, ge=0.25, le=1.5)
    allow_overrides: bool = Field(
        False,
        description="Let channel variables fsbridge_instructions / fsbridge_voice / "
        "fsbridge_language override this profile per call.",
    )
    builtin_tools: list[Literal["end_call", "transfer_call", "send_dtmf"]] = Field(
        default_factory=list
    )
    transfer_allow: list[str] = Field(
        default_factory=list, description="Destinations transfer_call may use."
    )
    tools: list[WebhookTool] = Field(default_factory=list)
    dtmf: DtmfConfig = Field(default_factory=DtmfConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    local_barge_in: LocalBargeIn = Field(default_factory=LocalBargeIn)
    trace: bool = Field(False, description="Write a call trace (traces.dir) for every call.")
    max_call_s: float = Field(3600.0, gt=0)
    max_turns: int | None = Field(None, ge=1)
    max_turns_goodbye_prompt: str = Field(
        "The call has reached its time limit. Thank the caller and say a short goodbye.",
        min_length=1,
        description="What the model is asked to say when max_turns is reached.",
    )


ASSETS = Path(__file__).parent / "assets"

TURKISH_INSTRUCTIONS = (
    "Sen bir telefon hattında çalışan, Türkçe konuşan yardımsever bir sesli asistansın. "
    "Kısa, doğal ve nazik cevaplar ver; arayanın sözünü kesme; emin olmadığın bir şeyi uydurma."
)
ENGLISH_INSTRUCTIONS = (
    "You are a friendly voice assistant answering a phone call. Speak English. "
    "Keep answers short and natural, and never make things up."
)


def default_profiles() -> dict[str, Profile]:
    """The profiles used when the config names none: Turkish by default, English beside it."""
    return {
        "default": Profile(
            instructions=TURKISH_INSTRUCTIONS,
            greeting=str(ASSETS / "greeting-tr-8k.wav"),
            apology=str(ASSETS / "apology-tr-8k.wav"),
            transcription=Transcription(language="tr"),
        ),
        "english": Profile(
            instructions=ENGLISH_INSTRUCTIONS,
            greeting=str(ASSETS / "greeting-en-8k.wav"),
            apology=str(ASSETS / "apology-en-8k.wav"),
            transcription=Transcription(language="en"),
        ),
    }


class AdminConfig(_Model):
    host: str = Field("127.0.0.1", description="Admin API (calls, hangup, say, trace) address.")
    port: int = Field(8081, ge=0, le=65535, description="0: serve the admin API on listen.port.")
    token: SecretStr | None = Field(
        None, description="Bearer token required by endpoints that change things."
    )


class ServiceConfig(_Model):
    max_calls: int = Field(100, ge=1, description="Calls beyond this get the profile's fallback.")
    drain_timeout_s: float = Field(
        90.0, ge=0, description="On SIGTERM, how long active calls may finish on their own."
    )
    instance_id: str | None = Field(
        None, description="Claim calls with 'hash insert' so several instances can share a PBX."
    )


class TranscriptsConfig(_Model):
    dir: str | None = Field(None, description="Write one JSONL transcript per call here.")


class TracesConfig(_Model):
    dir: str = Field("/var/lib/fsbridge/traces", description="Where call traces are written.")
    keep: int | None = Field(
        200, ge=1, description="Keep at most this many finished traces (null: no count limit)."
    )
    max_total_mb: float | None = Field(
        None,
        gt=0,
        description="Delete the oldest finished traces while all traces exceed this (MiB).",
    )


class Price(_Model):
    """USD per 1M tokens (and per minute of audio, for models billed by duration)."""

    text_in: float = 4.0
    text_cached: float = 0.4
    text_out: float = 16.0
    audio_in: float = 32.0
    audio_cached: float = 0.4
    audio_out: float = 64.0
    audio_minute: float | None = Field(
        None, ge=0, description="USD per minute, for transcription billed by duration (whisper-1)."
    )


_MINI = dict(
    text_in=0.6, text_cached=0.06, text_out=2.4, audio_in=10.0, audio_cached=0.3, audio_out=20.0
)

_ASR = dict(text_cached=0.0, audio_cached=0.0, audio_out=0.0)


def default_prices() -> dict[str, Price]:
    return {
        "gpt-realtime": Price(),
        "gpt-realtime-1.5": Price(),
        "gpt-realtime-2": Price(text_out=24.0),
        "gpt-realtime-mini": Price(**_MINI),
        "gpt-realtime-2.1-mini": Price(**_MINI),
        # input transcription (profile.transcription.model), billed apart from the responses
        "gpt-4o-transcribe": Price(**_ASR, text_in=2.5, text_out=10.0, audio_in=6.0),
        "gpt-4o-mini-transcribe": Price(**_ASR, text_in=1.25, text_out=5.0, audio_in=3.0),
        "whisper-1": Price(**_ASR, text_in=0.0, text_out=0.0, audio_in=0.0, audio_minute=0.006),
    }


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


class Config(_Model):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    freeswitch: FreeSwitchConfig = Field(default_factory=FreeSwitchConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    playback: PlaybackConfig = Field(default_factory=PlaybackConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    transcripts: TranscriptsConfig = Field(default_factory=TranscriptsConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    prices: dict[str, Price] = Field(default_factory=default_prices)
    profiles: dict[str, Profile] = Field(default_factory=default_profiles)

    @field_validator("profiles")
    @classmethod
    def _at_least_one(cls, v: dict[str, Profile]) -> dict[str, Profile]:
        if not v:
            raise ValueError("at least one profile is needed")
        return v

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ConfigError(
                f"unknown profile {name!r} (have: {', '.join(self.profiles)})"
            ) from None


# Environment variables that override config keys: secrets belong in the environment.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "OPENAI_API_KEY": ("realtime", "api_key"),
    "FSBRIDGE_ESL_PASSWORD": ("freeswitch", "password"),
    "FSBRIDGE_ADMIN_TOKEN": ("admin", "token"),
}


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {path or '<top>'}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative greeting/apology paths are relative to the config file's directory."""
    for prof in (data.get("profiles") or {}).values():
        if not isinstance(prof, dict):
            continue
        for key in ("greeting", "apology", "goodbye", "busy"):
            val = prof.get(key)
            if isinstance(val, str) and val and not os.path.isabs(val):
                prof[key] = str((base / val).resolve())


def parse_config(
    data: Any, *, base_dir: Path | None = None, env: dict[str, str] | None = None
) -> Config:
    """Validate a parsed YAML document, applying environment overrides for secrets."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("invalid configuration: the top level must be a mapping of sections")
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if isinstance(data.get("profiles"), dict):
        data["profiles"] = {
            k: (dict(v) if isinstance(v, dict) else v) for k, v in data["profiles"].items()
        }
    env = os.environ if env is None else env
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            sect = data.setdefault(section, {})
            if isinstance(sect, dict):
                sect[key] = env[var]
    if base_dir is not None:
        _resolve_paths(data, base_dir)
    try:
        return _validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def _validate(data: dict[str, Any]) -> Config:
    # Strict types (no "8000" for 8000), but SecretStr fields accept plain strings from YAML/env.
    for section, key in (("realtime", "api_key"), ("freeswitch", "password"), ("admin", "token")):
        sect = data.get(section)
        if isinstance(sect, dict) and isinstance(sect.get(key), str):
            sect[key] = SecretStr(sect[key])
    return Config.model_validate(data)


def load_config(path: str | os.PathLike[str], *, env: dict[str, str] | None = None) -> Config:
    """Read and validate the YAML file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config {p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    return parse_config(data, base_dir=p.parent.resolve(), env=env)
