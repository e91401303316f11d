"""``fsbridge sim realtime``: run the Realtime simulator on its own until interrupted.

    fsbridge sim realtime --port 9000 --reply reply.wav --transcript "We are open…"
    fsbridge sim realtime --port 9000 --script turns.yaml

The first line on stdout is ``listening on ws://HOST:PORT/v1/realtime`` (with the real port when
``--port 0``), so scripts can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from fsbridge.sim.clock import SimClock
from fsbridge.sim.realtime import RealtimeSim
from fsbridge.sim.rt_script import AnyReply, Reply, load_script, reply_pcm

__all__ = ["build_parser", "cli_main"]


def build_parser(prog: str = "fsbridge sim realtime") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Simulated OpenAI Realtime (GA) server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--reply", help="24 kHz mono WAV used as the reply of every turn")
    src.add_argument("--script", help="YAML file of turns (audio/transcript or function_call)")
    p.add_argument("--transcript", default="", help="transcript of --reply")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require the key held in this environment variable (default: accept any key)",
    )
    p.add_argument("--delivery-speed", type=float, default=4.0, help="audio speed vs real time")
    p.add_argument("--delta-ms", type=int, default=100, help="audio per output delta")
    p.add_argument("--first-delta-delay", type=float, default=0.15, help="seconds")
    p.add_argument("--odd-deltas", action="store_true", help="odd-length audio deltas")
    p.add_argument("--session-max", type=float, default=3600.0, help="session lifetime, seconds")
    p.add_argument("--accept-beta", action="store_true", help="do not reject OpenAI-Beta headers")
    p.add_argument("--clock-speed", type=float, default=1.0, help="simulated time speed-up")
    return p


def _replies(args: argparse.Namespace) -> tuple[list[AnyReply] | None, list[str] | None]:
    if args.script:
        return load_script(args.script)
    if args.reply:
        reply = Reply(audio=args.reply, transcript=args.transcript)
        reply_pcm(reply)
        return [reply], None
    return None, None


async def _serve(
    args: argparse.Namespace,
    replies: list[AnyReply] | None,
    transcripts: list[str] | None,
    api_key: str | None,
) -> None:
    sim = RealtimeSim(
        host=args.host,
        port=args.port,
        api_key=api_key,
        clock=SimClock(args.clock_speed),
        replies=replies,
        delivery_speed=args.delivery_speed,
        delta_ms=args.delta_ms,
        first_delta_delay_s=args.first_delta_delay,
        session_max_s=args.session_max,
        reject_beta=not args.accept_beta,
        input_transcripts=transcripts,
        odd_deltas=args.odd_deltas,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        print(f"listening on {sim.url}", flush=True)
        await stop.wait()
        print(f"stopping after {len(sim.sessions)} session(s)", flush=True)


def cli_main(argv: Sequence[str]) -> int:
    """Run the simulator until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad arguments or files."""
    args = build_parser().parse_args(list(argv))
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"error: environment variable {args.api_key_env} is empty", file=sys.stderr)
            return 2
    try:
        replies, transcripts = _replies(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, replies, transcripts, api_key))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(sys.argv[1:]))
