"""Tiny schema combinators that reject JSON the way the OpenAI API does (sans-I/O).

Each checker takes ``(value, dotted_path)`` and returns the value or raises ``ParamError`` with the
server's code, message and ``param`` path: ``unknown_parameter``, ``invalid_type``,
``invalid_value``, ``missing_required_parameter``, range errors. ``rt_config`` builds the GA session
schema from them; ``check_envelope`` checks the top level of every client event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CLIENT_EVENT_FIELDS",
    "Checker",
    "ParamError",
    "anything",
    "array",
    "bad_value",
    "boolean",
    "check_envelope",
    "enum",
    "nullable",
    "number",
    "obj",
    "string",
    "tagged",
]


class ParamError(Exception):
    """A rejected parameter: becomes an ``error`` event with this code, message and param."""

    def __init__(self, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


Checker = Callable[[Any, str], Any]


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def bad_type(path: str, expected: str, value: Any) -> ParamError:
    return ParamError(
        "invalid_type",
        f"Invalid type for '{path}': expected {expected}, but got {kind(value)} instead.",
        path,
    )


def bad_value(path: str, value: Any, allowed: tuple[Any, ...]) -> ParamError:
    shown = [f"'{a}'" for a in allowed]
    listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f", and {shown[-1]}"
    return ParamError(
        "invalid_value", f"Invalid value: '{value}'. Supported values are: {listed}.", path
    )


def string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise bad_type(path, "a string", value)
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise bad_type(path, "a boolean", value)
    return value


def number(lo: float | None, hi: float | None, *, integer: bool = False) -> Checker:
    word = "integer" if integer else "decimal"

    def check(value: Any, path: str) -> Any:
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            raise bad_type(path, f"an {word}" if integer else "a decimal", value)
        if lo is not None and value < lo:
            raise ParamError(
                "decimal_below_min_value" if not integer else "integer_below_min_value",
                f"Invalid '{path}': {word} below minimum value. Expected a value >= {lo:g}, "
                f"but got {value} instead.",
                path,
            )
        if hi is not None and value > hi:
            raise ParamError(
                "decimal_above_max_value" if not integer else "integer_above_max_value",
                f"Invalid '{path}': {word} above maximum value. Expected a value <= {hi:g}, "
                f"but got {value} instead.",
                path,
            )
        return value

    return check


def enum(*allowed: Any) -> Checker:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, type(allowed[0])):
            raise bad_type(path, kind(allowed[0]), value)
        if value not in allowed:
            raise bad_value(path, value, allowed)
        return value

    return check


def nullable(inner: Checker) -> Checker:
    return lambda value, path: None if value is None else inner(value, path)


def array(item: Checker, *, max_items: int | None = None) -> Checker:
    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise bad_type(path, "an array", value)
        if max_items is not None and len(value) > max_items:
            raise ParamError(
                "array_above_max_length",
                f"Invalid '{path}': array too long. Expected an array with maximum length "
                f"{max_items}, but got an array with length {len(value)} instead.",
                path,
            )
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return check


def anything(value: Any, path: str) -> Any:
    return value


def obj(fields: Mapping[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise bad_type(path, "an object", value)
        for key in value:
            if key not in fields:
                raise ParamError(
                    "unknown_parameter", f"Unknown parameter: '{path}.{key}'.", f"{path}.{key}"
                )
        for key in required:
            if key not in value:
                raise ParamError(
                    "missing_required_parameter",
                    f"Missing required parameter: '{path}.{key}'.",
                    f"{path}.{key}",
                )
        return {key: fields[key](v, f"{path}.{key}") for key, v in value.items()}

    return check


def tagged(tags: Mapping[str, Checker]) -> Checker:
    """An object whose ``type`` picks the schema (formats, VAD kinds, tools)."""

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise bad_type(path, "an object", value)
        if "type" not in value:
            raise ParamError(
                "missing_required_parameter",
                f"Missing required parameter: '{path}.type'.",
                f"{path}.type",
            )
        tag = enum(*tags)(value["type"], f"{path}.type")
        return tags[tag](value, path)

    return check


# The fields each GA client event may carry besides ``type`` and ``event_id``.
CLIENT_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "session.update": ("session",),
    "input_audio_buffer.append": ("audio",),
    "input_audio_buffer.commit": (),
    "input_audio_buffer.clear": (),
    "output_audio_buffer.clear": (),
    "conversation.item.create": ("item", "previous_item_id"),
    "conversation.item.truncate": ("item_id", "content_index", "audio_end_ms"),
    "conversation.item.delete": ("item_id",),
    "conversation.item.retrieve": ("item_id",),
    "response.create": ("response",),
    "response.cancel": ("response_id",),
}


def check_envelope(event: dict[str, Any]) -> str:
    """The event's type, once its top level is known to be a GA client event."""
    etype = event.get("type")
    if etype is None:
        raise ParamError(
            "missing_required_parameter", "Missing required parameter: 'type'.", "type"
        )
    if not isinstance(etype, str):
        raise bad_type("type", "a string", etype)
    if etype not in CLIENT_EVENT_FIELDS:
        raise bad_value("type", etype, tuple(CLIENT_EVENT_FIELDS))
    for key in event:
        if key not in ("type", "event_id", *CLIENT_EVENT_FIELDS[etype]):
            raise ParamError("unknown_parameter", f"Unknown parameter: '{key}'.", key)
    if "event_id" in event and not isinstance(event["event_id"], str):
        raise bad_type("event_id", "a string", event["event_id"])
    return str(etype)
