"""Uplink batching: whole samples only, append per window, bridge-held time reported."""

import base64

from fsbridge.audio.resample import make_resampler
from fsbridge.call.uplink import UplinkStats, run_uplink
from tests.openai_schema import validate_client_event


async def test_batches_whole_samples_and_reports_held_time() -> None:
    async def frames():
        yield b"\x01"  # odd: carried into the next frame
        for _ in range(20):
            yield b"\x00\x10" * 160  # 20 ms at 8 kHz
        yield b"\x00"

    sent: list[dict] = []
    held: list[float] = []

    async def send(event: dict) -> None:
        validate_client_event(event)
        sent.append(event)

    stats = UplinkStats()
    await run_uplink(
        frames(),
        make_resampler(8000, 24000, "samplerate"),
        send,
        window_ms=40,
        stats=stats,
        on_held=held.append,
        sample_every_s=0.0,
    )
    assert stats.frames_in == 22 and stats.bytes_in == 20 * 320 + 2
    assert sent and all(e["type"] == "input_audio_buffer.append" for e in sent)
    sizes = [len(base64.b64decode(e["audio"])) for e in sent]
    assert all(n % 2 == 0 and n >= 1920 for n in sizes)  # >= 40 ms of 24 kHz, whole samples
    assert sum(sizes) == stats.bytes_out_24k
    assert len(held) == len(sent) and all(0 <= h < 1000 for h in held)
