"""Comparing two traces of one call: the commands the bridge issued, with per-call noise removed.

Pure: fed two ``Trace`` objects, it returns what differs. The commands are the call's ESL commands
and the Realtime client events it sent (appends are audio, not commands). Uuids, ports, chunk and
prompt paths, random fork usernames and ``Event-UUID`` headers change from run to run and are
normalised; a truncate's ``audio_end_ms`` depends on playback timing and may move by
``TOLERANCE_MS``. ESL and Realtime are compared as two separate sequences: their interleaving is a
race even within one build.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

from .trace import Trace

__all__ = ["TOLERANCE_MS", "Cmd", "Diff", "commands_of", "diff"]

PROMPTS = ("greeting", "apology", "goodbye", "busy")
TOLERANCE_MS = 150  # audio_end_ms of a truncate may move this much between runs
_NUMERIC = ("audio_end_ms",)
_USER = re.compile(r"fsb-[0-9a-f]{8}")


@dataclass(frozen=True)
class Cmd:
    t: float
    stream: str  # "esl" | "rt"
    text: str  # normalised, numbers that may drift replaced by <n>
    numbers: tuple[int, ...] = ()

    def show(self) -> str:
        text = self.text
        for n in self.numbers:
            text = text.replace("<n>", str(n), 1)
        return f"[{self.t:7.3f}s] {self.stream} {text}"


def _noise(trace: Trace) -> list[tuple[str, str]]:
    meta = trace.meta
    cfg = meta.get("config", {})
    uuid = str(meta.get("uuid", ""))
    pairs: list[tuple[str, str]] = []
    chunk_dir = str(cfg.get("freeswitch", {}).get("chunk_dir", "")).rstrip("/")
    if chunk_dir:
        pairs.append((f"{chunk_dir}/{uuid}", "<chunks>"))
    public = str(cfg.get("listen", {}).get("public_url", ""))
    if public:
        pairs.append((public, "<public_url>"))
    for key in PROMPTS:
        path = (meta.get("profile") or {}).get(key)
        if path:
            pairs.append((str(path), f"<{key}>"))
    if uuid:
        pairs.append((uuid, "<uuid>"))
    return pairs


def commands_of(trace: Trace) -> list[Cmd]:
    """The call's ESL commands and Realtime client events (appends excepted), normalised."""
    noise = _noise(trace)

    def clean(text: str) -> str:
        for old, new in noise:
            text = text.replace(old, new)
        return _USER.sub("fsb-<id>", text)

    out: list[Cmd] = []
    for rec in trace.records:
        if rec.get("kind") == "esl_command":
            lines = [x for x in str(rec["command"]).split("\n") if not x.startswith("Event-UUID:")]
            out.append(Cmd(rec["t"], "esl", clean("\n".join(lines))))
        elif rec.get("kind") == "rt" and rec.get("dir") == "out":
            event = {k: v for k, v in rec["event"].items() if k != "event_id"}
            if event.get("type") == "input_audio_buffer.append":
                continue
            numbers = tuple(
                int(event[k]) for k in _NUMERIC if isinstance(event.get(k), int | float)
            )
            for k in _NUMERIC:
                if k in event:
                    event[k] = "<n>"
            text = clean(json.dumps(event, sort_keys=True, ensure_ascii=False))
            out.append(Cmd(rec["t"], "rt", text.replace('"<n>"', "<n>"), numbers))
    return out


@dataclass
class Diff:
    lines: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.lines


def diff(old: list[Cmd], new: list[Cmd], *, timing_ms: float | None = None) -> Diff:
    """Where ``new`` differs from ``old``, stream by stream (ESL and Realtime are not interleaved:
    their relative order is a race even within one build)."""
    result = Diff()
    for stream in ("esl", "rt"):
        a = [c for c in old if c.stream == stream]
        b = [c for c in new if c.stream == stream]
        matcher = difflib.SequenceMatcher(
            a=[c.text for c in a], b=[c.text for c in b], autojunk=False
        )
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                for x, y in zip(a[i1:i2], b[j1:j2], strict=True):
                    if any(
                        abs(p - q) > TOLERANCE_MS for p, q in zip(x.numbers, y.numbers, strict=True)
                    ):
                        result.lines += [f"- {x.show()}", f"+ {y.show()}"]
                    elif timing_ms is not None and abs(x.t - y.t) * 1000 > timing_ms:
                        result.moved.append(f"~ {y.show()} (was at {x.t:.3f}s)")
                continue
            result.lines += [f"- {c.show()}" for c in a[i1:i2]]
            result.lines += [f"+ {c.show()}" for c in b[j1:j2]]
    return result
