"""RIFF WAV reading and writing for mono 16-bit PCM.

A plain utility shared by the service and the simulators (the one piece of code both sides may
share, because a WAV header is not a protocol either side negotiates). Chunk files must be written
atomically: FreeSWITCH may open a path the moment it is queued, so the file appears complete or not
at all (temp name in the same directory, then ``os.replace``).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["WavError", "parse_wav", "read_wav", "wav_bytes", "write_wav", "write_wav_atomic"]


class WavError(ValueError):
    """The file is not a WAV FreeSWITCH (or we) can play: mono 16-bit PCM."""


def wav_header(n_bytes: int, rate: int) -> bytes:
    """The 44-byte canonical header for ``n_bytes`` of mono 16-bit PCM at ``rate``."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + n_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        n_bytes,
    )


def wav_bytes(pcm: bytes | np.ndarray, rate: int) -> bytes:
    """A complete WAV file image for mono int16 samples (bytes, little-endian, or an array)."""
    if isinstance(pcm, np.ndarray):
        pcm = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    return wav_header(len(pcm), rate) + pcm


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Parse a WAV image into (int16 samples, rate); mono 16-bit PCM only."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise WavError("fmt chunk too short")
            fmt = struct.unpack_from("<HHIIHH", body)
        elif cid == b"data":
            samples = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise WavError("missing fmt or data chunk")
    audio_format, channels, rate, _, _, bits = fmt
    if audio_format != 1 or bits != 16:
        raise WavError(
            f"unsupported encoding (format {audio_format}, {bits} bits): need PCM 16-bit"
        )
    if channels != 1:
        raise WavError(f"{channels} channels: need mono")
    usable = len(samples) - (len(samples) % 2)
    return np.frombuffer(samples[:usable], dtype="<i2").astype(np.int16), rate


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit PCM WAV file into (int16 samples, rate)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WavError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return parse_wav(data)
    except WavError as exc:
        raise WavError(f"{path}: {exc}") from None


def write_wav(path: str | os.PathLike[str], pcm: bytes | np.ndarray, rate: int) -> None:
    Path(path).write_bytes(wav_bytes(pcm, rate))


def write_wav_atomic(path: str | os.PathLike[str], pcm: bytes | np.ndarray, rate: int) -> None:
    """Write so that a reader sees the whole file or none of it (same-directory temp + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(wav_bytes(pcm, rate))
    os.replace(tmp, path)
