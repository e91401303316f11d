"""conversation.item.create / delete / retrieve."""

from __future__ import annotations

import base64

import pytest

from fsbridge.sim import rt_errors as E
from fsbridge.sim.realtime import Reply
from tests.sim_realtime.conftest import b64, pcm_reply, tone


def _text(role: str, text: str, **extra) -> dict:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": "input_text", "text": text}],
            **extra,
        },
    }


async def test_text_items_added_and_done(sim, connect) -> None:
    c = await connect(sim)
    await c.send(_text("system", "You are a receptionist."))
    added = await c.recv_until("conversation.item.added")
    done = await c.recv()
    assert done["type"] == "conversation.item.done"
    assert added["item"] == done["item"]
    assert added["item"]["object"] == "realtime.item" and added["item"]["status"] == "completed"
    assert added["previous_item_id"] is None
    await c.send(_text("user", "Hello", id="item_mine"))
    second = await c.recv_until("conversation.item.added")
    assert second["item"]["id"] == "item_mine" and second["previous_item_id"] == added["item"]["id"]
    await c.send({**_text("user", "first"), "previous_item_id": "root"})
    first = await c.recv_until("conversation.item.added")
    assert first["previous_item_id"] is None
    ids = [i["id"] for i in sim.sessions[0].items]
    assert ids == [first["item"]["id"], added["item"]["id"], "item_mine"]


async def test_unknown_previous_item_id(sim, connect) -> None:
    c = await connect(sim)
    await c.send({**_text("user", "x"), "previous_item_id": "item_missing"})
    err = await c.expect_error(E.ITEM_NOT_FOUND_CODE)
    assert err["param"] == "previous_item_id"
    assert sim.sessions[0].items == []


@pytest.mark.invalid_client_events
async def test_item_shape_errors(sim, connect) -> None:
    c = await connect(sim)
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text"}]},
        },
        validate=False,
    )
    err = await c.expect_error("missing_required_parameter")
    assert err["message"] == "Missing required parameter: 'item.content[0].text'."
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_audio", "transcript": "x"}],
            },
        }
    )
    assert (await c.expect_error("invalid_value"))["param"] == "item.content[0].type"
    await c.send(_text("user", "dup", id="item_a"))
    await c.recv_until("conversation.item.done")
    await c.send(_text("user", "dup", id="item_a"))
    await c.expect_error("invalid_value")


async def test_delete_and_retrieve(make_sim, connect) -> None:
    sim = await make_sim(replies=[Reply(audio=pcm_reply(200), transcript="Hi.")])
    c = await connect(sim)
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": b64(tone(300))}],
            },
        }
    )
    user = (await c.recv_until("conversation.item.added"))["item"]
    assert "audio" not in user["content"][0]  # echoes carry no audio bytes
    await c.send({"type": "response.create"})
    done = await c.recv_until("response.done")
    aid = done["response"]["output"][0]["id"]
    await c.send({"type": "conversation.item.retrieve", "item_id": aid})
    got = await c.recv_until("conversation.item.retrieved")
    assert (
        base64.b64decode(got["item"]["content"][0]["audio"])
        == pcm_reply(200).astype("<i2").tobytes()
    )
    await c.send({"type": "conversation.item.delete", "item_id": user["id"]})
    assert (await c.recv_until("conversation.item.deleted"))["item_id"] == user["id"]
    await c.send({"type": "conversation.item.delete", "item_id": user["id"]})
    await c.expect_error(E.ITEM_NOT_FOUND_CODE)
    assert [i["id"] for i in sim.sessions[0].items] == [aid]
