"""Real-time (1x) check of the two timing facts the bridge depends on, against the clock."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fsbridge.sim.clock import SimClock
from fsbridge.sim.freeswitch import FreeSwitchSim
from tests.sim_freeswitch.conftest import ForkPeer, poll, ramp


async def test_lead_in_and_frame_cadence_at_real_time(wav_factory: Callable[..., str]) -> None:
    async with FreeSwitchSim(clock=SimClock(1.0)) as sim:
        peer = await ForkPeer(sim.clock).start()
        try:
            uuid = await sim.originate(profile="default", caller_audio=ramp(4000, 1))
            ch = sim.channel(uuid)
            await sim.api(f"uuid_audio_fork {uuid} start {peer.url(uuid)} mono 8k")
            s = await peer.session()
            await poll(lambda: len(ch.truth.caller_frames) >= 10)
            await sim.api(f"uuid_broadcast {uuid} {wav_factory('a.wav', ramp(2400, 1))} aleg")
            await poll(lambda: len(ch.truth.caller_frames) >= 60, timeout=5)
            rec = ch.truth.playbacks[0]
            await poll(lambda: rec.status, timeout=5)
            start_ev = next(e for e in sim.events if e.name == "PLAYBACK_START")
            assert rec.lead_in_t is not None and rec.first_write_t is not None
            lead_in = start_ev.t - rec.lead_in_t
            to_audio = rec.first_write_t - rec.queued_t
            sends = np.array([t for t, _ in ch.truth.caller_frames[5:60]])
            gaps = np.diff(sends)
            dev = sends - sends[0] - np.arange(len(sends)) * 0.02
            recv = np.array([t for t, _ in s.binary()[5:60]])
            print(
                f"\nlead-in {lead_in * 1000:.1f} ms (queued->first audio {to_audio * 1000:.1f} ms); "
                f"send interval mean {gaps.mean() * 1000:.2f} ms, max |drift| {np.abs(dev).max() * 1000:.1f} ms; "
                f"receive interval mean {np.diff(recv).mean() * 1000:.2f} ms"
            )
            assert 0.08 <= lead_in <= 0.14  # 5 frames read, nothing written
            assert 0.10 <= to_audio <= 0.17
            assert abs(gaps.mean() - 0.02) < 0.002
            assert np.abs(dev).max() < 0.015  # drift-free: no accumulation
            assert abs(np.diff(recv).mean() - 0.02) < 0.003
            await sim.hangup(uuid)
        finally:
            await peer.stop()
