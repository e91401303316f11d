"""``fsbridge calls``: the live calls, from FreeSWITCH and from the bridge, joined by uuid.

FreeSWITCH knows every channel (``show channels as json``; ours carry ``fsbridge_profile``, read
with ``uuid_getvar`` since no single API lists a variable for all channels); the bridge knows what
each call it serves is doing (its admin API's ``/calls``). Either may be down: the report keeps
what the other said and names the one that did not answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .esl.protocol import EslError
from .peers import CliError, EslPeer

__all__ = [
    "CallsReport",
    "Source",
    "gather_calls",
    "human_duration",
    "human_tokens",
    "render_table",
]

PROFILE_VAR = "fsbridge_profile"


@dataclass
class Source:
    name: str
    where: str
    ok: bool = False
    error: str | None = None


@dataclass
class CallsReport:
    calls: list[dict[str, Any]]
    esl: Source
    admin: Source
    at: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "sources": {
                s.name: {"ok": s.ok, "where": s.where, "error": s.error} for s in self.sources
            },
        }

    @property
    def sources(self) -> tuple[Source, Source]:
        return (self.esl, self.admin)


async def _esl_channels(peer: EslPeer, src: Source) -> list[dict[str, Any]]:
    try:
        text = await peer.api("show channels as json")
        rows = json.loads(text).get("rows", []) if text.strip() else []
        out = []
        for row in rows:
            uuid = row.get("uuid")
            if not uuid:
                continue
            try:
                profile = (await peer.api(f"uuid_getvar {uuid} {PROFILE_VAR}")).strip()
            except EslError:
                continue  # hung up between the two commands
            if profile and profile != "_undef_":
                out.append({**row, "profile": profile})
        src.ok = True
        return out
    except (EslError, OSError, ValueError, AttributeError) as exc:
        src.error = str(exc) or type(exc).__name__
        await peer.close()
        return []


async def _admin_calls(http: aiohttp.ClientSession, base: str, src: Source) -> list[dict]:
    try:
        async with http.get(f"{base}/calls") as resp:
            if resp.status != 200:
                raise CliError(f"HTTP {resp.status}")
            body = await resp.json()
        if not isinstance(body, list):
            raise CliError("unexpected reply")
        src.ok = True
        return [c for c in body if isinstance(c, dict) and c.get("uuid")]
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, CliError) as exc:
        src.error = str(exc) or type(exc).__name__
        return []


def _merge(esl: list[dict], bridge: list[dict], esl_ok: bool, admin_ok: bool) -> list[dict]:
    now = time.time()
    by_uuid = {c["uuid"]: c for c in bridge}
    out: list[dict[str, Any]] = []
    for row in esl:
        b = by_uuid.pop(row["uuid"], None)
        created = row.get("created_epoch", "")
        duration = now - int(created) if str(created).isdigit() else None
        view: dict[str, Any] = {
            "uuid": row["uuid"],
            "caller": row.get("cid_num", ""),
            "profile": row.get("profile"),
            "state": None if not admin_ok else "unclaimed",
            "duration_s": round(duration, 1) if duration is not None else None,
            "turns": None,
            "first_audio_ms": None,
            "bridge_ms": None,
            "tokens": None,
            "cost_usd": None,
            "freeswitch_state": row.get("callstate") or row.get("state"),
            "seen_by": ["freeswitch"],
        }
        if b is not None:
            view.update({k: v for k, v in b.items() if k in view or k in ("trace", "barge_ins")})
            view["seen_by"] = ["freeswitch", "bridge"]
        out.append(view)
    for (
        b
    ) in by_uuid.values():  # the bridge knows it, FreeSWITCH did not list it (or did not answer)
        out.append({**b, "seen_by": ["bridge"], "freeswitch_state": None if esl_ok else "?"})
    out.sort(key=lambda c: -(c.get("duration_s") or 0))
    return out


async def gather_calls(peer: EslPeer, http: aiohttp.ClientSession, base: str) -> CallsReport:
    esl, admin = Source("esl", peer.where), Source("admin", base)
    esl_rows, bridge_rows = await asyncio.gather(
        _esl_channels(peer, esl), _admin_calls(http, base, admin)
    )
    return CallsReport(_merge(esl_rows, bridge_rows, esl.ok, admin.ok), esl, admin)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def human_tokens(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


COLUMNS = ("UUID", "CALLER", "PROFILE", "STATE", "DURATION", "TURNS", "1ST AUDIO", "TOKENS")


def render_table(report: CallsReport) -> str:
    rows = [
        (
            c["uuid"],
            c.get("caller") or "-",
            c.get("profile") or "-",
            c.get("state") or "?",
            human_duration(c.get("duration_s")),
            "-" if c.get("turns") is None else str(c["turns"]),
            _ms(c.get("first_audio_ms")),
            human_tokens(c.get("tokens")),
        )
        for c in report.calls
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(COLUMNS)]
    right = {4, 5, 6, 7}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    n = len(rows)
    total = f"{n} call{'' if n == 1 else 's'}"
    missing: list[str] = []
    for src in report.sources:
        what = "FreeSWITCH (ESL)" if src.name == "esl" else "bridge admin API"
        if src.ok:
            total += f" · {what} {src.where}"
            continue
        lost = (
            "state, turns, latency and tokens unknown"
            if src.name == "admin"
            else "channels the bridge has not claimed are not listed"
        )
        missing.append(f"! {what} at {src.where} did not answer ({src.error}); {lost}")
    out = [line(COLUMNS), *(line(r) for r in rows), total, *missing]
    return "\n".join(out)
