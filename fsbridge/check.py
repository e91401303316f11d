"""``fsbridge check``: is this config valid, and does every peer answer?

One line per check, ``ok`` / ``FAIL`` / ``warn``, then the exit code: 0 when nothing
failed, 1 when a check failed, 2 when the config itself is invalid. It tries what a call needs, in
the order a call needs it: the event socket login, a Realtime session with the configured key for
every model the profiles use, the chunk directory, and every prompt file a profile names.
Nothing secret is printed: handshake errors are the client's worded messages, which never hold
the key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from .audio.wav import WavError, read_wav
from .config import Config, ConfigError
from .esl.protocol import EslAuthError, EslError
from .ops import common_options, wrap
from .peers import EXIT_CONFIG, EXIT_FAIL, EslPeer, esl_address, load_cli_config
from .realtime import protocol as rtp
from .realtime.client import RealtimeError, connect_realtime

__all__ = ["Check", "add_command", "run_checks"]

Verdict = Literal["ok", "FAIL", "warn"]
PROMPTS = ("greeting", "apology", "goodbye", "busy")


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.name}: {self.detail}"


async def _esl(cfg: Config, args: argparse.Namespace) -> Check:
    peer = EslPeer(cfg, esl_address(cfg, args.esl), args.timeout)
    name = f"FreeSWITCH ESL {peer.where}"
    try:
        version = (await peer.api("version")).strip()
        return Check("ok", name, f"logged in ({version or 'version unknown'})")
    except EslAuthError:
        return Check(
            "FAIL", name, "password rejected (freeswitch.password / FSBRIDGE_ESL_PASSWORD)"
        )
    except (EslError, OSError) as exc:
        return Check("FAIL", name, str(exc) or type(exc).__name__)
    finally:
        await peer.close()


async def _realtime(cfg: Config, model: str, timeout: float) -> Check:
    rc = cfg.realtime
    name = f"Realtime {rc.url} model {model}"
    if rc.api_key is None:
        return Check("FAIL", name, "no API key (realtime.api_key / OPENAI_API_KEY)")
    try:
        async with aiohttp.ClientSession() as http:
            conn = await connect_realtime(
                http,
                url=rc.url,
                model=model,
                api_key=rc.api_key.get_secret_value(),
                auth=rc.auth,
                headers=rc.headers,
                timeout=timeout,
                heartbeat=None,
            )
            try:
                async with asyncio.timeout(timeout):
                    ev = await conn.recv()
            finally:
                await conn.close()
    except (RealtimeError, OSError, aiohttp.ClientError) as exc:
        return Check("FAIL", name, str(exc))
    except TimeoutError:
        return Check("FAIL", name, f"connected, but no session.created within {timeout:g} s")
    if isinstance(ev, rtp.SessionCreated):
        return Check("ok", name, "handshake accepted, session created")
    if isinstance(ev, rtp.Error):
        return Check("FAIL", name, f"the server refused the session: {ev.code}: {ev.message}")
    closed = f" (closed: {conn.close_code} {conn.close_reason})" if ev is None else ""
    return Check("FAIL", name, f"unexpected first event {type(ev).__name__}{closed}")


def _writable(label: str, directory: str) -> Check:
    name = f"{label} {directory}"
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".fsbridge-check-"):
            pass
    except OSError as exc:
        return Check("FAIL", name, f"not writable: {exc.strerror or exc}")
    return Check("ok", name, "writable")


def _prompt(profile: str, key: str, path: str) -> Check:
    name = f"profile {profile} {key} {path}"
    try:
        samples, rate = read_wav(path)
    except WavError as exc:
        msg = str(exc).replace(f"cannot read {path}: ", "cannot read: ")
        return Check("FAIL", name, msg.removeprefix(f"{path}: "))
    if not len(samples):
        return Check("FAIL", name, "no audio in the file")
    verdict: Verdict = "ok" if rate in (8000, 16000, 48000) else "warn"
    note = "" if verdict == "ok" else " (FreeSWITCH resamples; 8/16 kHz avoids it)"
    return Check(verdict, name, f"{len(samples) / rate:.1f} s, {rate} Hz mono PCM16{note}")


async def run_checks(cfg: Config, args: argparse.Namespace) -> list[Check]:
    models = sorted({p.model or cfg.realtime.model for p in cfg.profiles.values()})
    network = await asyncio.gather(
        _esl(cfg, args), *(_realtime(cfg, m, args.timeout) for m in models)
    )
    checks = list(network)
    checks.append(_writable("chunk_dir", cfg.freeswitch.chunk_dir))
    if any(p.trace for p in cfg.profiles.values()):
        checks.append(_writable("traces.dir", cfg.traces.dir))
    for pname, profile in cfg.profiles.items():
        for key in PROMPTS:
            path = getattr(profile, key)
            if path:
                checks.append(_prompt(pname, key, path))
    if cfg.admin.token is None:
        checks.append(
            Check("warn", "admin.token", "not set: admin actions (say, trace, hangup) are disabled")
        )
    return checks


def _check(args: argparse.Namespace) -> int:
    try:
        cfg, where = load_cli_config(args.config)
    except ConfigError as exc:
        print(Check("FAIL", "config", str(exc)).line())
        return EXIT_CONFIG
    print(
        Check(
            "ok",
            f"config {where}",
            f"valid ({len(cfg.profiles)} profile(s): {', '.join(cfg.profiles)})",
        ).line()
    )
    try:
        checks = asyncio.run(run_checks(cfg, args))
    except KeyboardInterrupt:
        return EXIT_FAIL
    for c in checks:
        print(c.line())
    failed = [c for c in checks if c.verdict == "FAIL"]
    print(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    sys.stdout.flush()
    return EXIT_FAIL if failed else 0


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        parents=[common_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="validate the config and try every peer",
        description=wrap(
            "Validate the config and try each peer a call needs: the FreeSWITCH event socket "
            "login, a Realtime session with the configured key for every model the profiles "
            "use, a writable chunk_dir (and traces.dir when a profile traces), and every prompt "
            "file a profile names. One line per check: ok, FAIL or warn."
        ),
        epilog="examples:\n  fsbridge check --config /etc/fsbridge/fsbridge.yaml\n"
        "  FSBRIDGE_ESL_PASSWORD=... fsbridge check -c fsbridge.yaml --esl 10.0.0.5:8021\n"
        "exit codes: 0 all passed, 1 a check failed, 2 invalid config",
    )
    p.set_defaults(func=_check)
