"""The peers a short-lived ``fsbridge`` command talks to: FreeSWITCH's event socket and the
bridge's admin API, found from the same config file the bridge runs with.

The ESL password comes from the config or ``FSBRIDGE_ESL_PASSWORD`` and the admin token from the
config or ``FSBRIDGE_ADMIN_TOKEN`` — never from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import Config, load_config, parse_config
from .esl.controller import EslController

__all__ = ["DEFAULT_CONFIG", "CliError", "EslPeer", "admin_base", "esl_address", "load_cli_config"]

DEFAULT_CONFIG = Path("/etc/fsbridge/fsbridge.yaml")
EXIT_FAIL, EXIT_CONFIG = 1, 2


class CliError(Exception):
    """A failure worded for the operator (printed as ``fsbridge: <message>``)."""


def load_cli_config(path: Path | None) -> tuple[Config, str]:
    """The config named, else $FSBRIDGE_CONFIG, else /etc/fsbridge/fsbridge.yaml, else defaults."""
    if path is None and os.environ.get("FSBRIDGE_CONFIG"):
        path = Path(os.environ["FSBRIDGE_CONFIG"])
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is None:
        return parse_config({}), "built-in defaults"
    return load_config(path), str(path)


def esl_address(cfg: Config, override: str | None) -> tuple[str, int]:
    host, port = cfg.freeswitch.host, cfg.freeswitch.port
    if override:
        h, sep, p = override.rpartition(":")
        if not sep:
            h, p = override, str(port)
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise CliError(f"--esl {override!r}: expected HOST:PORT")
        host, port = h.strip("[]") or host, int(p)
    return host, port


def admin_base(cfg: Config, override: str | None) -> str:
    """The admin API's base URL (a wildcard listen address is reached on loopback)."""
    if override:
        return override.rstrip("/")
    host, port = cfg.admin.host, cfg.admin.port
    if port == 0:
        host, port = cfg.listen.host, cfg.listen.port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class EslPeer:
    """One ESL connection for a short-lived command (kept across ``--watch`` refreshes)."""

    def __init__(self, cfg: Config, address: tuple[str, int], timeout: float) -> None:
        self.host, self.port = address
        self.where = f"{self.host}:{self.port}"
        self._password = cfg.freeswitch.password.get_secret_value()
        self._timeout = timeout
        self._ctl: EslController | None = None

    async def controller(self) -> EslController:
        if self._ctl is not None and self._ctl.connected:
            return self._ctl
        await self.close()
        ctl = EslController(
            self.host,
            self.port,
            self._password,
            command_timeout=self._timeout,
            connect_timeout=self._timeout,
            events=("BACKGROUND_JOB",),
        )
        try:
            await ctl.connect()
        except BaseException:
            await ctl.close()
            raise
        self._ctl = ctl
        return ctl

    async def api(self, command: str) -> str:
        return await (await self.controller()).api(command)

    async def close(self) -> None:
        if self._ctl is not None:
            ctl, self._ctl = self._ctl, None
            await ctl.close()
