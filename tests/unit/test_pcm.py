"""ByteCarry: whole int16 samples out, whatever the transport's chunking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsbridge.audio.pcm import ByteCarry, pcm_ms


def test_even_chunk_passes_through_without_copy() -> None:
    carry = ByteCarry()
    data = b"\x01\x02\x03\x04"
    assert carry.feed(data) is data
    assert carry.pending == 0


def test_odd_byte_is_carried_to_the_next_chunk() -> None:
    carry = ByteCarry()
    assert carry.feed(b"\x01\x02\x03") == b"\x01\x02"
    assert carry.pending == 1
    assert carry.feed(b"\x04\x05") == b"\x03\x04"
    assert carry.pending == 1
    assert carry.feed(b"\x06") == b"\x05\x06"
    assert carry.pending == 0


def test_single_bytes_pair_up() -> None:
    carry = ByteCarry()
    assert carry.feed(b"\x01") == b""
    assert carry.feed(b"") == b""
    assert carry.feed(b"\x02") == b"\x01\x02"


def test_reset_drops_the_carried_byte() -> None:
    carry = ByteCarry()
    carry.feed(b"\x01\x02\x03")
    carry.reset()
    assert carry.pending == 0
    assert carry.feed(b"\x04\x05") == b"\x04\x05"


def test_other_buffers_come_back_as_bytes() -> None:
    carry = ByteCarry()
    out = carry.feed(bytearray(b"\x01\x02"))
    assert type(out) is bytes and out == b"\x01\x02"
    out = carry.feed(memoryview(b"\x03\x04\x05"))
    assert type(out) is bytes and out == b"\x03\x04"
    assert carry.feed(memoryview(b"\x06")) == b"\x05\x06"


@given(st.lists(st.binary(max_size=9), max_size=30))
def test_any_chunking_loses_nothing_and_keeps_alignment(chunks: list[bytes]) -> None:
    carry = ByteCarry()
    outs = [carry.feed(c) for c in chunks]
    whole = b"".join(chunks)
    assert all(len(o) % 2 == 0 for o in outs)
    joined = b"".join(outs)
    assert joined == whole[: len(whole) - len(whole) % 2]
    assert carry.pending == len(whole) % 2


def test_pcm_ms() -> None:
    assert pcm_ms(48000, 24000) == 1000.0
    assert pcm_ms(320, 8000) == 20.0
