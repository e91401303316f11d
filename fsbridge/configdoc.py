"""Generate docs/configuration.md from the config model, so the reference cannot drift.

``python -m fsbridge.configdoc > docs/configuration.md``; a test checks the file is current.
"""

from __future__ import annotations

import sys
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import ENV_OVERRIDES, Config, Profile

INTRO = """# Configuration reference

fsbridge reads one YAML file (`fsbridge serve --config FILE`). It is validated at start: an unknown
key or a wrong type stops the service with exit code 2 and a message naming the key path, e.g.
`profiles.default.voice: Input should be 'alloy', ...`. Relative `greeting`/`apology` paths are
relative to the config file's directory. Secrets are better kept in the environment:

| environment variable | overrides |
|---|---|
{env}

This page is generated from `fsbridge/config.py` (`python -m fsbridge.configdoc`).
"""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"map {_type_name(k)} → {_type_name(v)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("SecretStr", "secret string")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, dict):
        return "see below" if value else "`{}`"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if value is None:
        return "`null`"
    if isinstance(value, str) and "/assets/" in value:
        return "packaged file"
    if isinstance(value, str) and len(value) > 40:
        return "(text)"
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        tp = field.annotation
        sub = tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None
        desc = (field.description or "").replace("|", "\\|")
        if sub is not None:
            rows.extend(_rows(sub, path + "."))
            continue
        constraints = ", ".join(
            f"{k} {getattr(m, k)}"
            for m in field.metadata
            for k in ("ge", "gt", "le", "lt", "multiple_of")
            if getattr(m, k, None) is not None
        )
        if constraints:
            desc = f"{desc} ({constraints})" if desc else f"({constraints})"
        rows.append(f"| `{path}` | {_type_name(tp)} | {_default(field)} | {desc} |")
    return rows


def render() -> str:
    env = "\n".join(f"| `{var}` | `{s}.{k}` |" for var, (s, k) in ENV_OVERRIDES.items())
    out = [INTRO.format(env=env)]
    out.append("## Sections\n\n| key | type | default | notes |\n|---|---|---|---|")
    out.extend(r for r in _rows(Config, "") if not r.startswith("| `profiles`"))
    out.append(
        "\n## Profiles\n\n`profiles` maps a name (the value of the channel variable "
        "`fsbridge_profile`) to a profile. Without a `profiles` section there are two: `default` "
        "(a Turkish-speaking assistant) and `english`.\n\n"
        "| key | type | default | notes |\n|---|---|---|---|"
    )
    out.extend(_rows(Profile, "profiles.<name>."))
    from .config import SemanticVad, ServerVad, Transcription

    for title, model in (
        ("turn_detection: server_vad (the default)", ServerVad),
        ("turn_detection: semantic_vad", SemanticVad),
        ("transcription", Transcription),
    ):
        out.append(f"\n### {title}\n\n| key | type | default | notes |\n|---|---|---|---|")
        out.extend(_rows(model, ""))
    out.append(
        "\n`turn_detection: {type: none}` turns server VAD off: the bridge commits the input and "
        "asks for each response itself.\n"
    )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
