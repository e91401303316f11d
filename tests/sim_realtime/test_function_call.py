"""Scripted function calls (reference §8) and function_call_output rules."""

from __future__ import annotations

import json

from fsbridge.sim import rt_errors as E
from fsbridge.sim.realtime import FunctionCallReply, Reply
from tests.sim_realtime.conftest import pcm_reply

FC_SEQUENCE = [
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.added",
]
FC_TAIL = [
    "response.function_call_arguments.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


async def test_function_call_flow(make_sim, connect) -> None:
    args = {"day": "saturday", "store": "central"}
    sim = await make_sim(
        replies=[
            FunctionCallReply(name="get_hours", arguments=args),
            Reply(audio=pcm_reply(200), transcript="Nine to six."),
        ],
        args_delta_chars=8,
    )
    c = await connect(sim)
    tools = [
        {
            "type": "function",
            "name": "get_hours",
            "description": "Opening hours",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
        }
    ]
    await c.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "tools": tools, "tool_choice": "auto"},
        }
    )
    await c.recv_until("session.updated")
    await c.send({"type": "response.create"})
    done = await c.recv_until("response.done")
    start = c.types().index("response.created")
    types = c.types()[start:]
    assert types[:4] == FC_SEQUENCE
    assert types[-4:] == FC_TAIL
    n = types.count("response.function_call_arguments.delta")
    text = json.dumps(args, separators=(",", ":"))
    assert n == -(-len(text) // 8) and n > 1
    evs = c.events[c.events.index(next(e for e in c.events if e["type"] == "response.created")) :]
    added = next(e for e in evs if e["type"] == "response.output_item.added")["item"]
    assert (
        added["type"] == "function_call"
        and added["status"] == "in_progress"
        and added["arguments"] == ""
    )
    assert added["name"] == "get_hours" and added["call_id"].startswith("call_")
    deltas = "".join(
        e["delta"] for e in evs if e["type"] == "response.function_call_arguments.delta"
    )
    fdone = next(e for e in evs if e["type"] == "response.function_call_arguments.done")
    assert deltas == fdone["arguments"] == text
    assert fdone["name"] == "get_hours" and fdone["call_id"] == added["call_id"]
    out = done["response"]["output"][0]
    assert (
        out["type"] == "function_call" and out["status"] == "completed" and out["arguments"] == text
    )
    assert sim.sessions[0].responses[0].kind == "function_call"
    # the tool result: accepted for the known call_id, and no automatic response
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": added["call_id"],
                "output": '{"open":"9-18"}',
            },
        }
    )
    item_done = await c.recv_until("conversation.item.done")
    assert item_done["item"]["type"] == "function_call_output"
    assert item_done["previous_item_id"] == added["id"]
    await c.send({"type": "input_audio_buffer.clear"})
    await c.recv_until("input_audio_buffer.cleared")
    assert len(sim.sessions[0].responses) == 1
    await c.send({"type": "response.create"})
    final = await c.recv_until("response.done")
    assert final["response"]["output"][0]["content"][0]["transcript"] == "Nine to six."


async def test_function_call_output_unknown_call_id(sim, connect) -> None:
    c = await connect(sim)
    await c.send(
        {
            "type": "conversation.item.create",
            "event_id": "fco",
            "item": {"type": "function_call_output", "call_id": "call_unknown", "output": "{}"},
        }
    )
    err = await c.expect_error(E.CALL_ID_NOT_FOUND_CODE)
    assert err["param"] == "item.call_id" and err["event_id"] == "fco"
    assert sim.sessions[0].items == []


async def test_fixed_call_id_from_script(make_sim, connect) -> None:
    sim = await make_sim(
        replies=[
            FunctionCallReply(name="transfer", arguments='{"to":"sales"}', call_id="call_fixed")
        ]
    )
    c = await connect(sim)
    await c.send({"type": "response.create"})
    done = await c.recv_until("response.done")
    assert done["response"]["output"][0]["call_id"] == "call_fixed"
