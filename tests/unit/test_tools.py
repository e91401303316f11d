"""ToolRunner: builtins over a fake ESL link, webhooks against a real local aiohttp server.

Every event the runner sends is validated against the GA client event models
(``tests.openai_schema.validate_client_event``) as it is sent, so a beta-shaped or misspelt
event fails the test that produced it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from fsbridge.call.tools import MAX_OUTPUT_BYTES, ToolRunner
from fsbridge.config import Profile, WebhookTool
from fsbridge.esl.protocol import EslCommandError, EslDisconnected
from fsbridge.realtime.protocol import session_update
from tests.openai_schema import validate_client_event

UUID = "6a1f3c2e-0000-4000-8000-00000000abcd"
CONTEXT = {"uuid": UUID, "profile": "english", "caller": "+15550100", "destination": "5000"}
SECRET = "s3cr3t-token-value-7731"


class FakeEsl:
    """Records api commands; answers from a script (a str reply or an exception to raise)."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.commands: list[str] = []

    async def api(self, command: str) -> str:
        self.commands.append(command)
        reply = self.replies.pop(0) if self.replies else "+OK\n"
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def bgapi(self, command: str) -> str:
        return await self.api(command)

    async def sendmsg(self, uuid: str, headers: Any) -> None:
        self.commands.append(f"sendmsg {uuid}")


class Harness:
    """One runner plus everything it touched, in order."""

    def __init__(self, profile: Profile, esl: FakeEsl, http: aiohttp.ClientSession) -> None:
        self.esl = esl
        self.log: list[Any] = []  # events sent and "END" markers, in order
        self.digits = "12"
        self.runner = ToolRunner(
            profile=profile,
            uuid=UUID,
            esl=esl,
            http=http,
            send=self._send,
            end_call_after_reply=lambda: self.log.append("END"),
            digits=lambda: self.digits,
            context=CONTEXT,
        )

    async def _send(self, event: dict) -> None:
        validate_client_event(event)
        self.log.append(event)

    @property
    def events(self) -> list[dict]:
        return [e for e in self.log if isinstance(e, dict)]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def output(self, index: int = 0) -> Any:
        """The parsed output of the index-th function_call_output sent."""
        items = [e["item"] for e in self.events if e["type"] == "conversation.item.create"]
        assert items[index]["type"] == "function_call_output"
        return json.loads(items[index]["output"])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def harness(http: aiohttp.ClientSession, *replies: str | Exception, **profile: Any) -> Harness:
    return Harness(Profile(**profile), FakeEsl(*replies), http)


OUTPUT_THEN_RESPONSE = ["conversation.item.create", "response.create"]


# ---------------------------------------------------------------------------- generic behaviour


async def test_each_call_id_runs_exactly_once(http: aiohttp.ClientSession) -> None:
    h = harness(http, builtin_tools=["send_dtmf"])
    await h.runner.handle("call_1", "send_dtmf", '{"digits": "1"}')
    await h.runner.handle("call_1", "send_dtmf", '{"digits": "1"}')
    await asyncio.gather(
        h.runner.handle("call_2", "send_dtmf", '{"digits": "2"}'),
        h.runner.handle("call_2", "send_dtmf", '{"digits": "2"}'),
    )
    assert h.esl.commands == [f"uuid_send_dtmf {UUID} 1", f"uuid_send_dtmf {UUID} 2"]
    assert h.types() == OUTPUT_THEN_RESPONSE * 2
    assert [e["item"]["call_id"] for e in h.events[::2]] == ["call_1", "call_2"]


async def test_invalid_json_arguments_get_an_error_and_a_response(
    http: aiohttp.ClientSession,
) -> None:
    h = harness(http, builtin_tools=["send_dtmf", "end_call"])
    await h.runner.handle("c1", "send_dtmf", '{"digits": "1"')
    await h.runner.handle("c2", "send_dtmf", '["1"]')
    assert h.types() == OUTPUT_THEN_RESPONSE * 2
    assert "not valid JSON" in h.output(0)["error"]
    assert h.output(1) == {"error": "arguments must be a JSON object"}
    assert h.esl.commands == []
    assert "END" not in h.log


async def test_unknown_and_disabled_tools_are_errors(http: aiohttp.ClientSession) -> None:
    h = harness(http, builtin_tools=["end_call"])
    await h.runner.handle("c1", "lookup_weather", "{}")
    await h.runner.handle("c2", "transfer_call", '{"destination": "1000"}')  # not enabled
    assert h.types() == OUTPUT_THEN_RESPONSE * 2
    assert h.output(0) == {"error": "unknown tool 'lookup_weather'", "available": ["end_call"]}
    assert h.output(1)["error"] == "unknown tool 'transfer_call'"
    assert h.esl.commands == []


async def test_handle_never_raises_when_the_session_is_gone(http: aiohttp.ClientSession) -> None:
    async def broken_send(event: dict) -> None:
        raise ConnectionResetError("gone")

    ended: list[bool] = []
    runner = ToolRunner(
        profile=Profile(builtin_tools=["end_call"]),
        uuid=UUID,
        esl=FakeEsl(),
        http=http,
        send=broken_send,
        end_call_after_reply=lambda: ended.append(True),
        digits=lambda: "",
        context=CONTEXT,
    )
    await runner.handle("c1", "end_call", "{}")
    assert ended == [True]  # the model asked to hang up: that still holds


async def test_empty_call_id_is_not_answered(http: aiohttp.ClientSession) -> None:
    h = harness(http, builtin_tools=["end_call"])
    await h.runner.handle("", "end_call", "{}")
    assert h.log == []


# ------------------------------------------------------------------------------------- end_call


async def test_end_call_answers_ok_asks_for_a_goodbye_then_ends(
    http: aiohttp.ClientSession,
) -> None:
    h = harness(http, builtin_tools=["end_call"])
    await h.runner.handle("c1", "end_call", '{"reason": "caller said bye"}')
    assert [e if e == "END" else e["type"] for e in h.log] == [*OUTPUT_THEN_RESPONSE, "END"]
    assert h.output() == {"ok": True}
    assert h.events[1] == {"type": "response.create"}
    assert h.esl.commands == []  # the call hangs up itself, after the goodbye


@pytest.mark.parametrize("arguments", ["", "{}"])
async def test_end_call_reason_is_optional(http: aiohttp.ClientSession, arguments: str) -> None:
    h = harness(http, builtin_tools=["end_call"])
    await h.runner.handle("c1", "end_call", arguments)
    assert h.output() == {"ok": True}
    assert h.log[-1] == "END"


async def test_end_call_with_a_bad_reason_does_not_end(http: aiohttp.ClientSession) -> None:
    h = harness(http, builtin_tools=["end_call"])
    await h.runner.handle("c1", "end_call", '{"reason": 5}')
    assert h.output() == {"error": "argument 'reason' must be a string"}
    assert "END" not in h.log


# -------------------------------------------------------------------------------- transfer_call

TRANSFER = {"builtin_tools": ["transfer_call"], "transfer_allow": ["1000", " sales ", "^2000"]}


@pytest.mark.parametrize(
    ("destination", "command"),
    [
        ("1000", f"uuid_transfer {UUID} 1000"),
        (" sales\n", f"uuid_transfer {UUID} sales"),
        ("^2000", f"uuid_transfer {UUID} '^2000'"),  # quote_arg defuses a delimiter change
    ],
)
async def test_transfer_to_an_allowed_destination(
    http: aiohttp.ClientSession, destination: str, command: str
) -> None:
    h = harness(http, "+OK\n", **TRANSFER)
    await h.runner.handle("c1", "transfer_call", json.dumps({"destination": destination}))
    assert h.esl.commands == [command]
    assert h.types() == ["conversation.item.create"]  # no response.create: the call is leaving
    assert h.output() == {"ok": True, "destination": destination.strip()}


@pytest.mark.parametrize("destination", ["1001", "1000 XML default", "", "sales desk", "10000"])
async def test_transfer_elsewhere_is_refused(http: aiohttp.ClientSession, destination: str) -> None:
    h = harness(http, **TRANSFER)
    await h.runner.handle("c1", "transfer_call", json.dumps({"destination": destination}))
    assert h.esl.commands == []
    assert h.types() == OUTPUT_THEN_RESPONSE
    assert h.output() == {"error": "destination not allowed", "allowed": ["1000", "sales", "^2000"]}


async def test_transfer_to_a_multi_word_allowed_entry_is_refused(
    http: aiohttp.ClientSession,
) -> None:
    h = harness(http, builtin_tools=["transfer_call"], transfer_allow=["1000 XML other"])
    await h.runner.handle("c1", "transfer_call", '{"destination": "1000 XML other"}')
    assert h.esl.commands == []
    assert h.output()["error"] == "destination is not a single word"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("-ERR No such channel!\n", "the phone system refused: -ERR No such channel!"),
        (EslCommandError("-ERR\n"), "the phone system refused: -ERR"),
        ("-USAGE: <uuid> [-bleg|-both] <dest-exten>\n", "the phone system refused: -USAGE:"),
        (EslDisconnected("closed"), "the phone system is not reachable right now"),
    ],
)
async def test_transfer_failure_is_told_to_the_model(
    http: aiohttp.ClientSession, reply: str | Exception, expected: str
) -> None:
    h = harness(http, reply, **TRANSFER)
    await h.runner.handle("c1", "transfer_call", '{"destination": "1000"}')
    assert h.esl.commands == [f"uuid_transfer {UUID} 1000"]
    assert h.types() == OUTPUT_THEN_RESPONSE
    assert h.output()["error"].startswith(expected)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("{}", "missing required argument 'destination'"),
        ('{"destination": 1000}', "argument 'destination' must be a string"),
    ],
)
async def test_transfer_arguments_are_validated(
    http: aiohttp.ClientSession, arguments: str, error: str
) -> None:
    h = harness(http, **TRANSFER)
    await h.runner.handle("c1", "transfer_call", arguments)
    assert h.output() == {"error": error}
    assert h.esl.commands == []


# ------------------------------------------------------------------------------------ send_dtmf


@pytest.mark.parametrize("digits", ["1", "123#", "*9w0W#", "ABCDabcd", "0" * 32])
async def test_send_valid_dtmf(http: aiohttp.ClientSession, digits: str) -> None:
    h = harness(http, "+OK Success\n", builtin_tools=["send_dtmf"])
    await h.runner.handle("c1", "send_dtmf", json.dumps({"digits": digits}))
    assert h.esl.commands == [f"uuid_send_dtmf {UUID} {digits}"]
    assert h.types() == OUTPUT_THEN_RESPONSE
    assert h.output() == {"ok": True, "digits": digits}


@pytest.mark.parametrize("digits", ["", "12 3", "x", "1" * 33, "123\n", "1;hangup", "E"])
async def test_send_invalid_dtmf_is_refused(http: aiohttp.ClientSession, digits: str) -> None:
    h = harness(http, builtin_tools=["send_dtmf"])
    await h.runner.handle("c1", "send_dtmf", json.dumps({"digits": digits}))
    assert h.esl.commands == []
    assert h.types() == OUTPUT_THEN_RESPONSE
    assert "digits must be" in h.output()["error"]


async def test_send_dtmf_failure(http: aiohttp.ClientSession) -> None:
    h = harness(http, "-ERR Cannot locate session!\n", builtin_tools=["send_dtmf"])
    await h.runner.handle("c1", "send_dtmf", '{"digits": "5"}')
    assert h.output() == {"error": "the phone system refused: -ERR Cannot locate session!"}
    assert h.types() == OUTPUT_THEN_RESPONSE


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_dtmf_only_reaches_freeswitch_when_it_matches(digits: str) -> None:
    async def run() -> Harness:
        async with aiohttp.ClientSession() as session:
            h = harness(session, builtin_tools=["send_dtmf"])
            await h.runner.handle("c1", "send_dtmf", json.dumps({"digits": digits}))
            return h

    h = asyncio.run(run())
    ok = 1 <= len(digits) <= 32 and all(c in "0123456789*#ABCDabcdwW" for c in digits)
    assert h.esl.commands == ([f"uuid_send_dtmf {UUID} {digits}"] if ok else [])
    assert h.types() == OUTPUT_THEN_RESPONSE


# ------------------------------------------------------------------------------------- webhooks


class Hook:
    """A local webhook server (port 0) that records what it got."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.release = asyncio.Event()  # the slow route waits on this (set at teardown)
        self.base = ""

    async def handler(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((request.path, dict(request.headers), body))
        route = request.match_info["route"]
        if route == "json":
            return web.json_response({"balance": 42, "currency": "EUR"})
        if route == "text":
            return web.Response(text="Your order ships tomorrow.")
        if route == "fail":
            return web.Response(status=500, text="database down")
        if route == "big":
            return web.Response(text="x" * (3 * MAX_OUTPUT_BYTES))
        if route == "redirect":
            raise web.HTTPFound(f"{self.base}/hook/json")
        if route == "stall":  # headers and a first byte at once, then the body stalls
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b"{")
            await self.release.wait()
            return resp
        await self.release.wait()  # "slow": longer than any timeout_s used here
        return web.Response(text="too late")


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    app = web.Application()
    app.router.add_post("/hook/{route}", h.handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    h.base = f"http://127.0.0.1:{port}"
    yield h
    h.release.set()
    await runner.cleanup()


def webhook(url: str, **kw: Any) -> WebhookTool:
    return WebhookTool(name=kw.pop("name", "lookup"), url=url, **kw)


async def test_webhook_json_body_is_passed_through(http: aiohttp.ClientSession, hook: Hook) -> None:
    h = harness(http, tools=[webhook(f"{hook.base}/hook/json", description="Look up")])
    await h.runner.handle("c1", "lookup", '{"account": "A-17"}')
    assert h.types() == OUTPUT_THEN_RESPONSE
    assert h.output() == {"balance": 42, "currency": "EUR"}
    assert h.events[0]["item"]["output"] == '{"balance": 42, "currency": "EUR"}'  # as sent
    ((path, headers, body),) = hook.requests
    assert path == "/hook/json"
    assert headers["Content-Type"].startswith("application/json")
    assert body == {
        "tool": "lookup",
        "arguments": {"account": "A-17"},
        "call": {**CONTEXT, "digits": "12"},
    }


async def test_webhook_text_body_is_wrapped(http: aiohttp.ClientSession, hook: Hook) -> None:
    h = harness(http, tools=[webhook(f"{hook.base}/hook/text")])
    h.digits = "4#"
    await h.runner.handle("c1", "lookup", "{}")
    assert h.output() == {"result": "Your order ships tomorrow."}
    assert hook.requests[0][2]["call"]["digits"] == "4#"


async def test_webhook_big_body_is_truncated(http: aiohttp.ClientSession, hook: Hook) -> None:
    h = harness(http, tools=[webhook(f"{hook.base}/hook/big")])
    await h.runner.handle("c1", "lookup", "{}")
    assert h.output() == {"result": "x" * MAX_OUTPUT_BYTES, "truncated": True}


async def test_webhook_http_error(http: aiohttp.ClientSession, hook: Hook) -> None:
    h = harness(http, tools=[webhook(f"{hook.base}/hook/fail")])
    await h.runner.handle("c1", "lookup", "{}")
    assert h.types() == OUTPUT_THEN_RESPONSE
    assert h.output() == {
        "error": "lookup answered HTTP 500",
        "status": 500,
        "detail": "database down",
    }


async def test_webhook_redirect_is_not_followed(http: aiohttp.ClientSession, hook: Hook) -> None:
    h = harness(http, tools=[webhook(f"{hook.base}/hook/redirect")])
    await h.runner.handle("c1", "lookup", "{}")
    assert h.output()["status"] == 302
    assert [p for p, _, _ in hook.requests] == ["/hook/redirect"]


@pytest.mark.parametrize("route", ["slow", "stall"])
async def test_webhook_timeout_is_an_error_within_the_timeout(
    http: aiohttp.ClientSession, hook: Hook, route: str
) -> None:
    h = harness(http, tools=[webhook(f"{hook.base}/hook/{route}", timeout_s=0.3)])
    started = time.monotonic()
    await asyncio.wait_for(h.runner.handle("c1", "lookup", "{}"), timeout=5)
    elapsed = time.monotonic() - started
    print(f"webhook {route}, timeout 0.3 s -> error output after {elapsed * 1000:.0f} ms")
    assert 0.25 <= elapsed < 1.0
    assert h.output() == {"error": "lookup did not answer within 0.3 s"}
    assert h.types() == OUTPUT_THEN_RESPONSE


async def test_webhook_unreachable(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    h = harness(http, tools=[webhook(f"http://127.0.0.1:{port}/hook?token=abc")])
    await h.runner.handle("c1", "lookup", "{}")
    assert h.output()["error"].startswith("lookup is unreachable")
    assert h.types() == OUTPUT_THEN_RESPONSE


async def test_webhook_invalid_arguments_do_not_call_it(
    http: aiohttp.ClientSession, hook: Hook
) -> None:
    h = harness(http, tools=[webhook(f"{hook.base}/hook/json")])
    await h.runner.handle("c1", "lookup", "{not json")
    assert "not valid JSON" in h.output()["error"]
    assert hook.requests == []


async def test_webhook_headers_from_env_are_sent_and_never_logged(
    http: aiohttp.ClientSession,
    hook: Hook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FSB_TEST_TOKEN", SECRET)
    monkeypatch.delenv("FSB_TEST_MISSING", raising=False)
    tool = webhook(
        f"{hook.base}/hook/fail",
        headers_from_env={"X-Api-Key": "FSB_TEST_TOKEN", "X-Other": "FSB_TEST_MISSING"},
    )
    h = harness(http, tools=[tool])
    with caplog.at_level(logging.DEBUG):
        await h.runner.handle("c1", "lookup", "{}")
        await h.runner.handle("c2", "lookup", "{}")
    for _, headers, _ in hook.requests:
        assert headers["X-Api-Key"] == SECRET
        assert "X-Other" not in headers
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert SECRET not in text
    assert SECRET not in json.dumps(h.events)
    missing = [r for r in caplog.records if "FSB_TEST_MISSING" in r.getMessage()]
    assert len(missing) == 1  # once per call, not per request


# ---------------------------------------------------------------------------------- definitions


def test_definitions_validate_as_ga_session_tools() -> None:
    schema = {
        "type": "object",
        "properties": {"account": {"type": "string"}},
        "required": ["account"],
    }
    profile = Profile(
        builtin_tools=["end_call", "transfer_call", "send_dtmf"],
        transfer_allow=["1000", "sales"],
        tools=[
            webhook("http://127.0.0.1:9/x", description="Balance", parameters=schema),
            webhook("http://127.0.0.1:9/y", name="end_call"),  # clashes with a builtin: dropped
        ],
    )
    runner = ToolRunner(
        profile=profile,
        uuid=UUID,
        esl=FakeEsl(),
        http=None,  # type: ignore[arg-type]  # definitions() does no I/O
        send=None,  # type: ignore[arg-type]
        end_call_after_reply=lambda: None,
        digits=lambda: "",
        context={},
    )
    defs = runner.definitions()
    validate_client_event(session_update(profile, tools=defs))
    assert [d["name"] for d in defs] == ["end_call", "transfer_call", "send_dtmf", "lookup"]
    assert all(d["type"] == "function" and d["parameters"]["type"] == "object" for d in defs)
    assert defs[1]["parameters"]["properties"]["destination"]["enum"] == ["1000", "sales"]
    assert defs[1]["parameters"]["required"] == ["destination"]
    assert defs[3] == {
        "type": "function",
        "name": "lookup",
        "description": "Balance",
        "parameters": schema,
    }
    defs[3]["parameters"]["required"].append("mutated")
    assert runner.definitions()[3]["parameters"]["required"] == ["account"]


def test_definitions_offer_only_what_can_work() -> None:
    def names(**profile: Any) -> list[str]:
        runner = ToolRunner(
            profile=Profile(**profile),
            uuid=UUID,
            esl=FakeEsl(),
            http=None,  # type: ignore[arg-type]
            send=None,  # type: ignore[arg-type]
            end_call_after_reply=lambda: None,
            digits=lambda: "",
            context={},
        )
        return [d["name"] for d in runner.definitions()]

    assert names() == []
    assert names(builtin_tools=["transfer_call"]) == []  # no allowed destination
    assert names(builtin_tools=["send_dtmf", "send_dtmf"]) == ["send_dtmf"]
