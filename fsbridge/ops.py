"""The operator's commands: ``fsbridge calls``, ``hangup``, ``say`` and ``trace``.

They talk to the two places a live call is known: FreeSWITCH over ESL and the bridge's own admin
API (see :mod:`fsbridge.peers`). ``calls`` joins both (:mod:`fsbridge.calls_view`); actions only
FreeSWITCH can do (``hangup``) go over ESL, those only the bridge can do (``say``, ``trace``) over
the admin API with the bearer token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

from .calls_view import gather_calls, render_table
from .config import Config, ConfigError
from .esl.protocol import EslError
from .peers import (
    DEFAULT_CONFIG,
    EXIT_CONFIG,
    EXIT_FAIL,
    CliError,
    EslPeer,
    admin_base,
    esl_address,
    load_cli_config,
)

__all__ = ["add_commands", "common_options", "wrap"]

_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CAUSE = re.compile(r"^[A-Z_]{1,40}$")


def _uuid(text: str) -> str:
    """A channel uuid as argparse type: one word, so it cannot smuggle arguments into a command."""
    if not _UUID.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a channel uuid")
    return text


def _cause(text: str) -> str:
    if not _CAUSE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a hangup cause (e.g. NORMAL_CLEARING)")
    return text


async def _calls(args: argparse.Namespace, cfg: Config) -> int:
    peer = EslPeer(cfg, esl_address(cfg, args.esl), args.timeout)
    base = admin_base(cfg, args.admin)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    tty = sys.stdout.isatty()
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                report = await gather_calls(peer, http, base)
                if args.json:
                    print(
                        json.dumps(report.as_json(), indent=None if args.watch else 2), flush=True
                    )
                else:
                    if args.watch and tty:
                        print("\x1b[H\x1b[2J", end="")
                    if args.watch:
                        print(
                            time.strftime("%H:%M:%S"),
                            f"(every {args.interval:g} s, Ctrl-C to stop)",
                        )
                    print(render_table(report), flush=True)
                if not args.watch:
                    return 0 if (report.esl.ok or report.admin.ok) else EXIT_FAIL
                await asyncio.sleep(args.interval)
    finally:
        await peer.close()


# -- actions ---------------------------------------------------------------------------------------
async def _hangup(args: argparse.Namespace, cfg: Config) -> int:
    peer = EslPeer(cfg, esl_address(cfg, args.esl), args.timeout)
    try:
        await peer.api(f"uuid_kill {args.uuid} {args.cause}")
    except (EslError, OSError) as exc:
        raise CliError(f"FreeSWITCH {peer.where}: {exc}") from None
    finally:
        await peer.close()
    print(f"hung up {args.uuid} ({args.cause})")
    return 0


async def _admin_post(args: argparse.Namespace, cfg: Config, path: str, body: dict) -> dict:
    base = admin_base(cfg, args.admin)
    token = cfg.admin.token.get_secret_value() if cfg.admin.token else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.timeout)) as http,
            http.post(f"{base}{path}", json=body, headers=headers) as resp,
        ):
            try:
                reply = await resp.json(content_type=None)
            except ValueError:
                reply = {}
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CliError(f"the bridge's admin API at {base} did not answer: {exc}") from None
    if status == 200 and isinstance(reply, dict):
        return reply
    detail = reply.get("error") if isinstance(reply, dict) else None
    if status == 401:
        hint = "set FSBRIDGE_ADMIN_TOKEN (or admin.token) to the bridge's token"
        raise CliError(f"the admin API refused the token: {hint}" if token else f"no token: {hint}")
    if status == 404:
        raise CliError(f"no call {args.uuid} on the bridge at {base} (fsbridge calls lists them)")
    raise CliError(f"the admin API answered HTTP {status}: {detail or 'no detail'}")


async def _say(args: argparse.Namespace, cfg: Config) -> int:
    body = {"text": args.text, "role": args.role, "respond": not args.no_respond}
    await _admin_post(args, cfg, f"/calls/{args.uuid}/say", body)
    print(f"sent to {args.uuid}")
    return 0


async def _trace(args: argparse.Namespace, cfg: Config) -> int:
    reply = await _admin_post(args, cfg, f"/calls/{args.uuid}/trace", {})
    print(f"tracing {args.uuid} -> {reply.get('trace')}")
    return 0


# -- wiring ----------------------------------------------------------------------------------------
def wrap(text: str) -> str:
    """A help description as a paragraph (the raw formatter keeps the examples' lines)."""
    return textwrap.fill(" ".join(text.split()), 88)


def common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--config",
        "-c",
        type=Path,
        help="the bridge's YAML config (default: $FSBRIDGE_CONFIG, else "
        f"{DEFAULT_CONFIG} if present, else built-in defaults)",
    )
    g.add_argument(
        "--esl",
        metavar="HOST:PORT",
        help="FreeSWITCH event socket (default: freeswitch.host:port from the config); the "
        "password is freeswitch.password or $FSBRIDGE_ESL_PASSWORD",
    )
    g.add_argument(
        "--admin",
        metavar="URL",
        help="the bridge's admin API (default: http://admin.host:admin.port from the config); "
        "the token is admin.token or $FSBRIDGE_ADMIN_TOKEN",
    )
    g.add_argument("--timeout", type=float, default=5.0, help="seconds per peer (default 5)")
    return p


def _run(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            cfg, _ = load_cli_config(args.config)
        except ConfigError as exc:
            print(f"fsbridge: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            return asyncio.run(func(args, cfg))
        except CliError as exc:
            print(f"fsbridge: {exc}", file=sys.stderr)
            return EXIT_FAIL
        except KeyboardInterrupt:
            return 0

    return run


def add_commands(sub: Any) -> None:
    """Register calls, hangup, say and trace on the ``fsbridge`` parser's subcommands."""
    common = common_options()
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "calls",
        parents=[common],
        formatter_class=raw,
        help="list the live calls (FreeSWITCH + the bridge's view)",
        description=wrap(
            "List the calls FreeSWITCH has with fsbridge_profile set, joined with what the "
            "bridge knows of each (state, turns, latency, tokens). Works when only one of the two "
            "answers, and says which one is missing."
        ),
        epilog="examples:\n  fsbridge calls\n  fsbridge calls --json | jq '.calls[].uuid'\n"
        "  fsbridge calls --watch --interval 1\n  fsbridge calls --esl 10.0.0.5:8021",
    )
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="--watch refresh (s, default 2)")
    p.set_defaults(func=_run(_calls))

    p = sub.add_parser(
        "hangup",
        parents=[common],
        formatter_class=raw,
        help="hang up a call (over ESL)",
        description=wrap("Hang up a channel with uuid_kill over the event socket."),
        epilog="examples:\n  fsbridge hangup 3f2a9c1e-...\n  fsbridge hangup UUID --cause CALL_REJECTED",
    )
    p.add_argument("uuid", type=_uuid)
    p.add_argument(
        "--cause", type=_cause, default="NORMAL_CLEARING", help="hangup cause (NORMAL_CLEARING)"
    )
    p.set_defaults(func=_run(_hangup))

    p = sub.add_parser(
        "say",
        parents=[common],
        formatter_class=raw,
        help="give a live call's model a message (admin API)",
        description=wrap(
            "Inject text into a live call's conversation through the bridge's admin API; "
            "by default the model responds to it at once."
        ),
        epilog='examples:\n  fsbridge say UUID "Tell the caller an agent will call back today."\n'
        '  fsbridge say UUID "The caller is a VIP." --role system --no-respond',
    )
    p.add_argument("uuid", type=_uuid)
    p.add_argument("text")
    p.add_argument(
        "--role",
        choices=["user", "system"],
        default="user",
        help="as the caller (user, default) or as an instruction (system)",
    )
    p.add_argument("--no-respond", action="store_true", help="add the text, do not ask for a reply")
    p.set_defaults(func=_run(_say))

    p = sub.add_parser(
        "trace",
        parents=[common],
        formatter_class=raw,
        help="start tracing a live call (admin API)",
        description=wrap(
            "Turn on the call trace (ESL, Realtime events and audio, to traces.dir) for a "
            "live call from now on. Replay it later with 'fsbridge replay'."
        ),
        epilog="example:\n  fsbridge trace UUID && fsbridge replay /var/lib/fsbridge/traces/UUID",
    )
    p.add_argument("uuid", type=_uuid)
    p.set_defaults(func=_run(_trace))
