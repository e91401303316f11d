"""Audio format arithmetic of the simulated server: bytes per millisecond and G.711.

The GA formats are ``audio/pcm`` (int16 LE, 24 kHz, 48 bytes/ms) and ``audio/pcmu`` / ``audio/pcma``
(G.711 at 8 kHz, 8 bytes/ms). The simulator's own code, not the service's (fsbridge.audio.resample is
off limits here): output to G.711 is decimated by plain 3-sample averaging, which is plenty for a
test peer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "bytes_per_ms",
    "decode_samples",
    "encode_output",
    "format_type",
    "ulaw_decode",
    "ulaw_encode",
]

PCM_RATE = 24000


def format_type(fmt: dict[str, Any] | None) -> str:
    return str((fmt or {}).get("type") or "audio/pcm")


def bytes_per_ms(fmt: dict[str, Any] | None) -> int:
    return 48 if format_type(fmt) == "audio/pcm" else 8


def ulaw_decode(data: np.ndarray) -> np.ndarray:
    u = ~data.astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    out = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    return out.astype(np.int16)


def alaw_decode(data: np.ndarray) -> np.ndarray:
    a = data.astype(np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    out = np.where(sign != 0, magnitude, -magnitude)
    return out.astype(np.int16)


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32)
    sign = np.where(x >= 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32767) >> 3
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)


def decode_samples(fmt: dict[str, Any] | None, data: bytes) -> np.ndarray:
    """int16 samples of whole input units (PCM: pairs of bytes; G.711: bytes)."""
    kind = format_type(fmt)
    if kind == "audio/pcm":
        return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2")
    raw = np.frombuffer(data, dtype=np.uint8)
    return ulaw_decode(raw) if kind == "audio/pcmu" else alaw_decode(raw)


def encode_output(fmt: dict[str, Any] | None, pcm24k: np.ndarray) -> bytes:
    """Reply audio (24 kHz int16) in the session's output format."""
    kind = format_type(fmt)
    samples = np.asarray(pcm24k, dtype=np.int16)
    if kind == "audio/pcm":
        return samples.astype("<i2").tobytes()
    n = len(samples) // 3
    pcm8k = samples[: n * 3].astype(np.int32).reshape(n, 3).mean(axis=1).astype(np.int16)
    enc = ulaw_encode(pcm8k) if kind == "audio/pcmu" else alaw_encode(pcm8k)
    return enc.tobytes()
