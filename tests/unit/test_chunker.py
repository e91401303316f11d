"""The chunk policy: first file early, then few large files, whole frames only."""

from hypothesis import given
from hypothesis import strategies as st

from fsbridge.call.chunker import Chunker, ChunkPolicy

RATE = 8000
FRAME = 320  # bytes of 20 ms at 8 kHz


def ms(n: int) -> bytes:
    return b"\x01\x00" * (RATE * n // 1000)


def test_first_chunk_waits_for_first_ms() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200))
    c.push(ms(180))
    assert c.take(pending_files=0) is None
    c.push(ms(40))
    chunk = c.take(pending_files=0)
    assert chunk is not None and len(chunk) == 11 * FRAME  # 220 ms, whole frames


def test_first_chunk_counts_audio_received_not_what_the_resampler_let_out() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200))
    c.push(ms(194))  # 200 ms arrived; the resampler holds 6 ms back
    assert c.take(pending_files=0) is None  # by its own buffer alone: not yet
    chunk = c.take(pending_files=0, received_ms=200)
    assert chunk is not None and len(chunk) == 9 * FRAME  # the whole frames of it
    c.push(ms(100))
    assert c.take(pending_files=1, received_ms=300) is None  # later files: min_ms of buffer


def test_keeps_one_file_queued_ahead_then_coalesces() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200, min_ms=200, queue_ahead=1))
    c.push(ms(200))
    assert c.take(0) is not None
    c.push(ms(200))
    assert c.take(1) is not None  # one playing, none queued: queue one
    c.push(ms(1000))
    assert c.take(2) is None  # one playing + one queued: wait
    chunk = c.take(1)  # the first file finished: everything accumulated goes in one file
    assert chunk is not None and len(chunk) == 50 * FRAME


def test_cut_ahead_waits_until_the_audio_ahead_runs_low() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200, min_ms=200, cut_ahead_ms=120))
    c.push(ms(200))
    assert c.take(0) is not None
    c.push(ms(600))
    assert c.take(1, pending_ms=200) is None  # 200 ms still ahead: more may arrive meanwhile
    assert not c.wants_cut(1, 121) and c.wants_cut(1, 120) and not c.wants_cut(2, 0)
    c.push(ms(300))
    chunk = c.take(1, pending_ms=110)
    assert chunk is not None and len(chunk) == 45 * FRAME  # all 900 ms in one file
    c.push(ms(100))
    assert c.take(1, pending_ms=110) is None  # due, but less than min_ms: wait for audio
    assert c.take(0, pending_ms=0) is not None  # underrun: what there is


def test_underrun_sends_what_there_is() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200, min_ms=400))
    c.push(ms(200))
    assert c.take(0)
    c.push(ms(60))
    assert c.take(1) is None
    chunk = c.take(0)  # nothing pending: silence is already audible, send 60 ms now
    assert chunk is not None and len(chunk) == 3 * FRAME


def test_finish_flushes_remainder_padded_to_whole_frame() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200))
    c.push(b"\x01\x00" * 100)  # 12.5 ms
    c.finish()
    chunk = c.take(5)
    assert chunk is not None and len(chunk) == FRAME
    assert chunk[200:] == b"\x00" * (FRAME - 200)
    assert c.take(0) is None


def test_max_chunk_caps_file_length() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200, max_ms=1000))
    c.push(ms(3000))
    assert len(c.take(0) or b"") == 50 * FRAME


def test_remainder_at_the_end_is_cut_at_max_chunk_too() -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200, max_ms=1000))
    c.push(ms(200))
    assert c.take(0)
    c.push(ms(2510))
    c.finish()
    sizes = []
    while (chunk := c.take(2)) is not None:
        sizes.append(len(chunk) // FRAME)
    assert sizes == [50, 50, 26]  # 1000 + 1000 + 510 ms padded to 520


def test_clear_drops_audio_and_ignores_later_pushes() -> None:
    c = Chunker(RATE, ChunkPolicy())
    c.push(ms(500))
    c.clear()
    c.push(ms(500))
    assert c.take(0) is None and not c.has_audio


@given(
    st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=40),
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40),
)
def test_no_audio_lost_and_every_chunk_whole_frames(pieces: list[int], pendings: list[int]) -> None:
    c = Chunker(RATE, ChunkPolicy(first_ms=200, min_ms=200, max_ms=2000))
    total_in, out = 0, bytearray()
    for i, n in enumerate(pieces):
        data = bytes([i % 251 + 1, 0]) * n
        total_in += len(data)
        c.push(data)
        received_ms = total_in / 2 / RATE * 1000 + (i % 3) * 3  # as if some were held back
        chunk = c.take(pendings[i % len(pendings)], received_ms)
        if chunk is not None:
            assert len(chunk) % FRAME == 0
            out += chunk
    c.finish()
    while (chunk := c.take(0)) is not None:
        assert len(chunk) % FRAME == 0
        out += chunk
    assert len(out) >= total_in and len(out) - total_in < FRAME
    assert c.emitted_bytes == len(out)
