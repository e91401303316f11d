"""The ``fsbridge`` command.

fsbridge serve --config /etc/fsbridge/fsbridge.yaml     run the bridge
fsbridge check --config /etc/fsbridge/fsbridge.yaml     validate the config, try every peer
fsbridge calls [--json] [--watch]                        the live calls (ESL + the bridge's view)
fsbridge hangup UUID                                     hang up a call (ESL)
fsbridge say UUID "text"                                 give a live call's model a message
fsbridge trace UUID                                      start tracing a live call
fsbridge replay /var/lib/fsbridge/traces/UUID            replay a traced call on the simulators
fsbridge demo                                            the whole path on this machine, simulated
fsbridge demo --real-model                               ... with the real OpenAI model ($OPENAI_API_KEY)
fsbridge bench                                           load on the simulators, prints figures
fsbridge sim freeswitch --esl-port 8021                  a simulated FreeSWITCH to try a client on
fsbridge sim realtime --port 9000 --reply reply.wav      a simulated OpenAI Realtime server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError, load_config

__all__ = ["main"]

EXIT_CONFIG = 2


def _serve(args: argparse.Namespace) -> int:
    from .logs import setup_logging
    from .service import Service

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"fsbridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level or config.logging.level, config.logging.format)

    async def run() -> None:
        stop = asyncio.Event()
        service = Service(config)

        def on_signal() -> None:
            # The first signal drains (calls may finish); a second one ends the rest now.
            if stop.is_set():
                service.hurry()
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
        await service.run(stop)
        # Stopped: a signal now (systemd or a script repeating SIGTERM) must not turn the clean
        # exit into a kill while asyncio tears down.
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

    asyncio.run(run())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args)


def _bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def _replay(args: argparse.Namespace) -> int:
    from .replay import main as replay_main

    return replay_main(args)


def _sim(args: argparse.Namespace, rest: list[str]) -> int:
    if args.which == "freeswitch":
        from .sim.fs_control import cli_main
    else:
        from .sim.rt_cli import cli_main
    return cli_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsbridge",
        description="Bridge FreeSWITCH calls to OpenAI Realtime speech-to-speech.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--version", action="version", version=f"fsbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the bridge")
    p.add_argument("--config", "-c", required=True, type=Path, help="the YAML config file")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)

    from .check import add_command as add_check
    from .ops import add_commands as add_ops
    from .ops import wrap

    add_check(sub)
    add_ops(sub)

    p = sub.add_parser(
        "replay",
        help="replay a traced call on the simulators and diff the commands",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=wrap(
            "Plays a recorded call (a trace directory) back through the simulated "
            "FreeSWITCH, with the caller audio and the model's recorded events at their recorded "
            "times, against this build of the bridge; prints where the new run's ESL commands and "
            "Realtime client events differ from the recording. Exit 0: no differences."
        ),
        epilog="examples:\n  fsbridge replay /var/lib/fsbridge/traces/3f2a9c1e-...\n"
        "  fsbridge replay TRACE --out out/replay --json",
    )
    p.add_argument("trace", type=Path, help="trace directory (or its trace.jsonl)")
    p.add_argument("--out", type=Path, help="keep the new run's trace here")
    p.add_argument("--json", action="store_true", help="the differences as JSON")
    p.add_argument(
        "--timing",
        type=float,
        default=None,
        metavar="MS",
        help="also report commands that moved by more than MS milliseconds",
    )
    p.set_defaults(func=_replay)

    p = sub.add_parser(
        "demo",
        help="run a simulated call through the real bridge",
        description="Runs the bridge with simulated FreeSWITCH and (unless --real-model) a "
        "simulated OpenAI Realtime; writes what the caller heard to OUT/heard.wav and a report.",
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory")
    p.add_argument("--profile", default="default", choices=["default", "english"])
    p.add_argument("--rate", type=int, choices=[8000, 16000], default=8000, help="fork rate")
    p.add_argument("--injection", choices=["sendmsg", "broadcast"], default=None)
    p.add_argument("--real-model", action="store_true", help="use OpenAI ($OPENAI_API_KEY)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_demo)

    p = sub.add_parser("bench", help="measure the bridge against the simulators")
    p.add_argument("--calls", type=int, default=4, help="concurrent calls for the load run")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.set_defaults(func=_bench)

    p = sub.add_parser("sim", help="run a simulator on its own", add_help=False)
    p.add_argument("which", choices=["freeswitch", "realtime"])
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv[:1] == ["sim"]:
        args, rest = parser.parse_known_args(argv)
        return _sim(args, rest)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
