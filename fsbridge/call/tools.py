"""Function calling for one call: the telephony builtins and the operator's webhook tools.

The call's dispatcher only says "the model called X with these arguments". Everything that can go
wrong running it (bad JSON, a destination off the allow list, FreeSWITCH refusing, a webhook that
hangs or answers 500) ends here as an error output the model can talk about, never as an exception
in the call: a tool failure must not end a conversation, and the model must always get an answer
to a call it made, or it waits for one forever.

Fail-closed by design: a builtin runs only when the profile lists it, a transfer goes only to a
destination on ``transfer_allow``, DTMF only matches a strict pattern, and webhook requests do not
follow redirects (a redirect would carry the secret headers to another host).

The flow follows the Realtime reference (section 8): the output goes back as a
``function_call_output`` item, then ``response.create`` (the output alone does not start a reply),
except after a successful transfer, when the call is leaving. ``send`` must sequence that
``response.create`` after the ``response.done`` of the response that made the call (only one
response may be active); that is the caller's job, because only it sees the server events.
"""

from __future__ import annotations

import codecs
import copy
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from fsbridge.config import Profile, WebhookTool
from fsbridge.esl.protocol import EslCommandError, EslError, quote_arg
from fsbridge.realtime import protocol as rtp

__all__ = ["MAX_OUTPUT_BYTES", "EslLink", "ToolRunner"]

log = logging.getLogger("fsbridge.call.tools")

# A webhook body beyond this is cut: all of it lands in the model's context.
MAX_OUTPUT_BYTES = 8 * 1024
_DETAIL_CHARS = 300  # how much of a failed webhook's body the model sees
_DTMF = re.compile(r"[0-9*#A-Da-dwW]{1,32}")  # w/W: FreeSWITCH pauses (0.5 s / 1 s)
_BAD_DEST = re.compile(r"[\s\x00-\x1f\x7f]")  # uuid_transfer splits on blanks: one word only

_END_CALL = (
    "Hang up the phone call. Use it when the conversation is over or the caller asks to end it. "
    "After it returns, say a short goodbye: the call ends once the caller has heard it."
)
_TRANSFER = (
    "Transfer the caller to another extension or line. Tell the caller first; the conversation "
    "with you ends when the transfer succeeds."
)
_SEND_DTMF = (
    "Send touch-tone digits on the call, e.g. to navigate a phone menu. w pauses half a second, "
    "W one second."
)


class EslLink(Protocol):
    """What the tools need of FreeSWITCH (``fsbridge.call.call.EslLink`` fits)."""

    async def api(self, command: str) -> str: ...

    async def bgapi(self, command: str) -> str: ...

    async def sendmsg(self, uuid: str, headers: Mapping[str, str]) -> None: ...


class _ToolError(Exception):
    """A failure worded for the model: becomes ``{"error": message, **extra}``."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.payload: dict[str, Any] = {"error": message, **extra}


@dataclass(frozen=True)
class _Result:
    output: dict[str, Any] | str  # str: JSON text to pass through unchanged (a webhook body)
    respond: bool = True  # send response.create after the output
    after: Callable[[], None] | None = None  # run once the output (and response.create) went out


_Builtin = Callable[[dict[str, Any]], Awaitable[_Result]]


class ToolRunner:
    """Runs the model's function calls for one call; one instance per call."""

    def __init__(
        self,
        *,
        profile: Profile,
        uuid: str,
        esl: EslLink,
        http: aiohttp.ClientSession,
        send: Callable[[dict], Awaitable[None]],
        end_call_after_reply: Callable[[], None],
        digits: Callable[[], str],
        context: Mapping[str, str],
    ) -> None:
        self._profile = profile
        self._uuid = uuid
        self._esl = esl
        self._http = http
        self._send = send
        self._end_call_after_reply = end_call_after_reply
        self._digits = digits
        self._context = dict(context)
        self._seen: set[str] = set()
        self._missing_env: set[tuple[str, str]] = set()
        self._allowed = [d.strip() for d in profile.transfer_allow]
        known: dict[str, _Builtin] = {
            "end_call": self._end_call,
            "transfer_call": self._transfer_call,
            "send_dtmf": self._send_dtmf,
        }
        self._builtins = {n: known[n] for n in dict.fromkeys(profile.builtin_tools)}
        if "transfer_call" in self._builtins and not self._allowed:
            log.warning("transfer_call is enabled but transfer_allow is empty: not offered")
        self._webhooks: dict[str, WebhookTool] = {}
        for tool in profile.tools:
            if tool.name in self._builtins or tool.name in self._webhooks:
                log.warning("webhook tool %r duplicates another tool's name: ignored", tool.name)
                continue
            self._webhooks[tool.name] = tool

    # ------------------------------------------------------------------------------ definitions

    def definitions(self) -> list[dict]:
        """GA function tool definitions for ``session.tools`` (fresh copies, safe to mutate)."""
        defs: list[dict] = []
        if "end_call" in self._builtins:
            reason = _string("Why the call ends, in a few words.")
            defs.append(_function("end_call", _END_CALL, {"reason": reason}, []))
        if "transfer_call" in self._builtins and self._allowed:
            dest = _string("Where to transfer the call.", enum=list(self._allowed))
            defs.append(
                _function("transfer_call", _TRANSFER, {"destination": dest}, ["destination"])
            )
        if "send_dtmf" in self._builtins:
            digits = _string("Digits 0-9, *, #, A-D, w or W (at most 32).", pattern=_DTMF.pattern)
            defs.append(_function("send_dtmf", _SEND_DTMF, {"digits": digits}, ["digits"]))
        for tool in self._webhooks.values():
            defs.append(
                {
                    "type": "function",
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": copy.deepcopy(tool.parameters),
                }
            )
        return defs

    # ---------------------------------------------------------------------------------- running

    async def handle(self, call_id: str, name: str, arguments: str) -> None:
        """Run one function call and answer it. Never raises (cancellation aside).

        A ``call_id`` runs once: a second delivery (e.g. from both ``.done`` events) is ignored.
        May take up to a webhook's ``timeout_s``; run it in a task the call owns.
        """
        if not call_id:
            log.warning("function call %r without a call_id: cannot answer it", name)
            return
        if call_id in self._seen:
            log.debug("function call %s (%s) already handled: ignored", call_id, name)
            return
        self._seen.add(call_id)
        started = time.monotonic()
        try:
            result = await self._run(name, arguments)
        except _ToolError as exc:
            result = _Result(exc.payload)
        except Exception:  # a bug here must not end the call; the model still gets an answer
            log.exception("tool %s crashed", name)
            result = _Result({"error": f"internal error running {name}"})
        error = result.output.get("error") if isinstance(result.output, dict) else None
        log.info(
            "tool %s %s",
            name,
            f"failed: {error}" if error else "ok",
            extra={
                "fields": {
                    "tool": name,
                    "call_id": call_id,
                    "ms": round((time.monotonic() - started) * 1000),
                }
            },
        )
        await self._answer(call_id, result)

    async def _answer(self, call_id: str, result: _Result) -> None:
        out = result.output
        text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False)
        try:
            await self._send(rtp.function_call_output(call_id, text))
            if result.respond:
                await self._send(rtp.response_create())
        except Exception as exc:  # the session is gone; the call notices on its own
            log.warning("could not deliver the output of %s: %s", call_id, type(exc).__name__)
        if result.after is not None:
            try:
                result.after()
            except Exception:
                log.exception("tool follow-up for %s failed", call_id)

    async def _run(self, name: str, arguments: str) -> _Result:
        builtin = self._builtins.get(name)
        webhook = self._webhooks.get(name)
        if builtin is None and webhook is None:
            raise _ToolError(f"unknown tool {name!r}", available=self._names())
        args = _parse_arguments(arguments)
        if builtin is not None:
            return await builtin(args)
        assert webhook is not None
        return await self._webhook(webhook, args)

    def _names(self) -> list[str]:
        return [d["name"] for d in self.definitions()]

    # --------------------------------------------------------------------------------- builtins

    async def _end_call(self, args: dict[str, Any]) -> _Result:
        reason = args.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _ToolError("argument 'reason' must be a string")
        log.info("the model ends the call (%s)", reason or "no reason given")
        # After response.create went out, so "the next reply" is the goodbye it asks for.
        return _Result({"ok": True}, after=self._end_call_after_reply)

    async def _transfer_call(self, args: dict[str, Any]) -> _Result:
        destination = _required_str(args, "destination").strip()
        if not destination or destination not in self._allowed:
            raise _ToolError("destination not allowed", allowed=list(self._allowed))
        if _BAD_DEST.search(destination):  # a config entry like "1000 XML x" or a stray newline
            raise _ToolError("destination is not a single word", destination=destination)
        await self._api(f"uuid_transfer {quote_arg(self._uuid)} {quote_arg(destination)}")
        log.info("call transferred to %s", destination)
        return _Result({"ok": True, "destination": destination}, respond=False)

    async def _send_dtmf(self, args: dict[str, Any]) -> _Result:
        digits = _required_str(args, "digits")
        if not _DTMF.fullmatch(digits):
            raise _ToolError("digits must be 1-32 of 0-9 * # A-D w W, nothing else")
        await self._api(f"uuid_send_dtmf {quote_arg(self._uuid)} {digits}")
        return _Result({"ok": True, "digits": digits})

    async def _api(self, command: str) -> str:
        """One ESL api command; any failure becomes a _ToolError with FreeSWITCH's words."""
        verb = command.split(" ", 1)[0]
        try:
            reply = await self._esl.api(command)
        except EslCommandError as exc:
            reply = exc.reply
        except EslError as exc:
            log.warning("%s: ESL unavailable (%s)", verb, type(exc).__name__)
            raise _ToolError("the phone system is not reachable right now") from None
        if not reply.startswith("+OK"):
            log.warning("%s refused: %s", verb, reply.strip())
            raise _ToolError(f"the phone system refused: {reply.strip() or '(empty reply)'}")
        return reply

    # --------------------------------------------------------------------------------- webhooks

    async def _webhook(self, tool: WebhookTool, args: dict[str, Any]) -> _Result:
        where = _safe_url(tool.url)
        body = {
            "tool": tool.name,
            "arguments": args,
            "call": {**self._context, "digits": self._digits()},
        }
        try:
            # aiohttp's total bounds connect, headers and the body read (tested with a stall).
            async with self._http.post(
                tool.url,
                json=body,
                headers=self._headers(tool),
                timeout=aiohttp.ClientTimeout(total=tool.timeout_s),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                data, truncated = await _read_limited(resp.content, MAX_OUTPUT_BYTES)
        except TimeoutError:
            log.warning("webhook %s (%s) timed out after %s s", tool.name, where, tool.timeout_s)
            raise _ToolError(f"{tool.name} did not answer within {tool.timeout_s:g} s") from None
        except Exception as exc:  # type only: messages may quote URLs or header values
            log.warning("webhook %s (%s) failed: %s", tool.name, where, type(exc).__name__)
            raise _ToolError(f"{tool.name} is unreachable ({type(exc).__name__})") from None
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=not truncated)
        if not 200 <= status < 300:
            log.warning("webhook %s (%s) answered HTTP %d", tool.name, where, status)
            extra = {"detail": text[:_DETAIL_CHARS]} if text.strip() else {}
            raise _ToolError(f"{tool.name} answered HTTP {status}", status=status, **extra)
        if truncated:
            return _Result({"result": text, "truncated": True})
        try:
            json.loads(text)
        except ValueError:
            return _Result({"result": text})
        return _Result(text)

    def _headers(self, tool: WebhookTool) -> dict[str, str]:
        """Headers from the environment; values are never logged, a missing one once per call."""
        out: dict[str, str] = {}
        for header, var in tool.headers_from_env.items():
            value = os.environ.get(var)
            if not value:
                if (tool.name, header) not in self._missing_env:
                    self._missing_env.add((tool.name, header))
                    log.warning(
                        "webhook %s: environment variable %s is not set, header %s omitted",
                        tool.name,
                        var,
                        header,
                    )
                continue
            out[header] = value
        return out


# ------------------------------------------------------------------------------------- helpers


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }


def _string(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "string", **schema, "description": description}


def _parse_arguments(text: str) -> dict[str, Any]:
    """The model's JSON argument string; empty means no arguments."""
    if not isinstance(text, str):
        raise _ToolError("arguments must be a JSON string")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        where = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise _ToolError(f"arguments are not valid JSON{where}") from None
    if not isinstance(value, dict):
        raise _ToolError("arguments must be a JSON object")
    return value


def _required_str(args: Mapping[str, Any], key: str) -> str:
    if key not in args:
        raise _ToolError(f"missing required argument {key!r}")
    value = args[key]
    if not isinstance(value, str):
        raise _ToolError(f"argument {key!r} must be a string")
    return value


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a body, and whether there was more (the rest is not read)."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await stream.read(limit - len(buf))
        if not chunk:
            return bytes(buf), False
        buf += chunk
    return bytes(buf), bool(await stream.read(1))


def _safe_url(url: str) -> str:
    """The URL without credentials or query (which may carry tokens), for logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"
