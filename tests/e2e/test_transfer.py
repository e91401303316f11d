"""A call transferred away (here by the model's transfer_call tool) is let go, not hung up."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from fsbridge.sim.realtime import FunctionCallReply, RealtimeSim
from tests.e2e.conftest import (
    asset,
    base_config,
    start_bridge,
    stop_bridge,
    wait_no_calls,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.slow


async def test_transfer_call_tool_hands_the_channel_over(
    tmp_path: Path, fs: FreeSwitchSim, clock: SimClock
) -> None:
    replies = [FunctionCallReply(name="transfer_call", arguments={"destination": "1000"})]
    async with RealtimeSim(clock=clock, replies=replies) as rt:
        cfg = base_config(tmp_path, fs, rt)
        prof = cfg["profiles"]["english"]
        prof.update(greeting=None, builtin_tools=["transfer_call"], transfer_allow=["1000"])
        bridge = start_bridge(tmp_path, cfg)
        try:
            await wait_ready(bridge)
            caller, rate = asset("caller-en-interrupt-8k.wav")
            uuid = await fs.originate(
                profile="english", caller_audio=caller, caller_rate=rate, caller_delay_s=0.3
            )
            ch = fs.channel(uuid)
            await wait_until(lambda: ch.transferred_to == "1000", 20, "the transfer")
            session = rt.sessions[0]

            def outputs() -> list[dict]:
                return [
                    e
                    for _, e in session.received
                    if e["type"] == "conversation.item.create"
                    and e["item"]["type"] == "function_call_output"
                ]

            # The channel may leave park before the uuid_transfer reply is read: the tool still
            # answers the model before the session closes.
            await wait_until(lambda: outputs(), 5, "the tool's output")
            assert len(outputs()) == 1 and '"ok": true' in outputs()[0]["item"]["output"]
            await wait_until(lambda: session.closed.is_set(), 10, "the Realtime session to close")
            await wait_until(
                lambda: ch.truth.fork is not None and ch.truth.fork.closed_t is not None,
                10,
                "the fork to stop",
            )
            await wait_no_calls(bridge)
            assert not ch.hung_up.is_set()  # handed over, not hung up
            assert not any(f"uuid_kill {uuid}" in c.text for c in fs.commands)
        finally:
            assert await stop_bridge(bridge) == 0
    assert '"outcome": "transferred"' in bridge.log()
