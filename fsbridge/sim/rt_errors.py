"""Error codes, texts and close codes of the Realtime GA server, as the simulator reproduces them.

Texts come from /work/shared/reference/openai-realtime.md §1.3, §6, §9 and captured frames. Where the
reference marks a code UNCONFIRMED, the constant says so; the session settings can override those.
"""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR_TYPE = "server_error"

# Beta header on a GA endpoint (reference §0.1): error event, then close 4000 with this reason.
BETA_DISABLED_CODE = "beta_api_shape_disabled"
BETA_DISABLED_MESSAGE = (
    "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
)
BETA_CLOSE_CODE = 4000
BETA_CLOSE_REASON = "invalid_request_error.beta_api_shape_disabled"

SESSION_EXPIRED_CODE = "session_expired"
SESSION_EXPIRED_CLOSE_CODE = 1001

ACTIVE_RESPONSE_CODE = "conversation_already_has_active_response"
CANCEL_NOT_ACTIVE_CODE = "response_cancel_not_active"
CANCEL_NOT_ACTIVE_MESSAGE = "Cancellation failed: no active response found"
COMMIT_EMPTY_CODE = "input_audio_buffer_commit_empty"
INVALID_AUDIO_MESSAGE = (
    "Invalid 'audio'. Expected base64-encoded audio bytes (mono PCM16 at 24kHz) but got an "
    "invalid value."
)
VOICE_LOCKED_CODE = "cannot_update_voice"  # openai/openai-python #2607
VOICE_LOCKED_MESSAGE = "Cannot update a conversation's voice if assistant audio is present."
MODEL_NOT_FOUND_CODE = "model_not_found"
# Close code after a connect-time model error. UNCONFIRMED (no capture); 1008 = policy violation.
MODEL_ERROR_CLOSE_CODE = 1008

# Truncation errors: texts from reference §7.2/§9; codes UNCONFIRMED, so named here and overridable.
TRUNCATE_TOO_LONG_CODE = "invalid_value"  # UNCONFIRMED
TRUNCATE_NOT_ASSISTANT_CODE = "invalid_value"  # UNCONFIRMED
TRUNCATE_NOT_ASSISTANT_MESSAGE = "Only model output audio messages can be truncated"
# Unknown item ids (truncate/delete/retrieve/previous_item_id/call_id): code and text UNCONFIRMED.
ITEM_NOT_FOUND_CODE = "item_not_found"  # UNCONFIRMED
CALL_ID_NOT_FOUND_CODE = "invalid_value"  # UNCONFIRMED
# output_audio_buffer.clear is WebRTC/SIP only (reference §4); the WebSocket answer is UNCONFIRMED.
WEBRTC_ONLY_CODE = "invalid_value"  # UNCONFIRMED

SERVER_ERROR_MESSAGE = (
    "The server had an error while processing your request. Sorry about that! You can retry your "
    "request, or contact us through our help center at help.openai.com if the error persists. "
    "(Please include the session ID in your message.)"
)
RATE_LIMIT_CODE = "rate_limit_exceeded"

# HTTP 401 bodies (the usual OpenAI REST error shape). The key itself is never echoed.
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
BAD_KEY_MESSAGE = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."


def http_error_body(message: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": INVALID_REQUEST, "param": None, "code": code}}


def error_event(
    code: str | None,
    message: str,
    *,
    param: str | None = None,
    event_id: str | None = None,
    type: str = INVALID_REQUEST,
) -> dict[str, Any]:
    """An ``error`` server event without its own ``event_id`` (the session stamps that)."""
    return {
        "type": "error",
        "error": {
            "type": type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }


def session_expired_message(max_s: float) -> str:
    minutes = max_s / 60.0
    shown = f"{minutes:.0f}" if abs(minutes - round(minutes)) < 1e-9 else f"{minutes:g}"
    return f"Your session hit the maximum duration of {shown} minutes."


def commit_empty_message(buffered_ms: float) -> str:
    return (
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
        f"but buffer only has {buffered_ms:.2f}ms of audio."
    )


def active_response_message(response_id: str) -> str:
    return (
        f"Conversation already has an active response in progress: {response_id}. Wait until the "
        "response is finished before creating a new one."
    )


def truncate_too_long_message(have_ms: int, want_ms: int) -> str:
    return f"Audio content of {have_ms}ms is already shorter than {want_ms}ms"


def item_not_found_message(item_id: str) -> str:
    return f"Item with item_id '{item_id}' not found in the conversation."


def call_id_not_found_message(call_id: str) -> str:
    return f"No tool call found with call_id '{call_id}'."


def model_not_found_message(model: str) -> str:
    return f"The model `{model}` does not exist or you do not have access to it."


def rate_limit_message(model: str, limit: int) -> str:
    return (
        f"Rate limit reached for {model} in organization org-sim on tokens per min (TPM): "
        f"Limit {limit}, Used {limit}, Requested 1000. Please try again in 1.5s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more."
    )
