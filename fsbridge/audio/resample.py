"""Streaming int16 resamplers between the channel rate (8/16 kHz) and Realtime's 24 kHz.

One resampler lives per call and direction and sees the whole stream: resetting it per frame
would restart the filter every 20 ms and click. Both engines run in float32 internally:

- ``soxr`` (libsoxr ``ResampleStream``, HQ): the cheapest per frame and the flattest passband, but
  it filters in blocks, so its output comes in bursts (every third or fourth frame) and it holds
  back ~44 ms on average, up to ~73 ms, at 8 kHz <-> 24 kHz. In int16 mode libsoxr also adds TPDF
  dither, which makes the output depend on how the input was chunked; float32 in and our own
  rounding keep streamed output identical to one-shot output.
- ``samplerate`` (libsamplerate ``Resampler``, ``sinc_medium``): several times the CPU, but its
  output follows the input frame by frame and it holds back ~6 ms. ``sinc_fastest`` is cheaper
  but rolls off the top of the telephone band (-0.5 dB at 3 kHz, -8.8 dB at 3.4 kHz at 8 kHz).
  Streamed with ``end_of_input=False``.

Figures, quality and the choice of default: ``docs/performance.md`` (``fsbridge.bench_resample``).

:meth:`StreamResampler.flush` ends a *segment* (the end of a reply, a barge-in, the end of the
call): it returns the held-back tail, so that a segment of N input samples yields exactly
``round(N * out_rate / in_rate)`` output samples, and leaves the resampler ready for the next,
unrelated segment. Never call it between the frames of one segment.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import samplerate
import soxr

__all__ = [
    "ENGINES",
    "Engine",
    "PassThrough",
    "SamplerateResampler",
    "SoxrResampler",
    "StreamResampler",
    "make_resampler",
]

Engine = Literal["soxr", "samplerate"]
ENGINES: tuple[Engine, ...] = ("soxr", "samplerate")

_I16 = np.dtype("<i2")
# Both libraries are linear filters and do not clip in float, so samples stay in int16 units:
# no scaling on the way in or out, only rounding and clipping on the way out.
_LO = np.float32(-32768.0)
_HI = np.float32(32767.0)


@runtime_checkable
class StreamResampler(Protocol):
    """One per call and direction; fed whole int16 LE samples, never reset between frames."""

    in_rate: int
    out_rate: int

    def process(self, pcm: bytes) -> bytes:
        """Resample whole int16 LE samples; may return less (or more) than the ideal ratio."""
        ...

    def flush(self) -> bytes:
        """Return the tail held back by the filter and end the segment."""
        ...


def _check_pcm(pcm: bytes) -> None:
    if len(pcm) & 1:
        raise ValueError(
            f"resampler input must be whole int16 samples, got {len(pcm)} bytes "
            "(carry the odd byte with fsbridge.audio.pcm.ByteCarry)"
        )


class PassThrough:
    """Equal rates: returns its input unchanged."""

    __slots__ = ("in_rate", "out_rate")

    def __init__(self, rate: int) -> None:
        self.in_rate = rate
        self.out_rate = rate

    def process(self, pcm: bytes) -> bytes:
        _check_pcm(pcm)
        return pcm if isinstance(pcm, bytes) else bytes(pcm)

    def flush(self) -> bytes:
        return b""

    @property
    def held_back(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"PassThrough({self.in_rate})"


class _FloatResampler:
    """int16 <-> float32 conversion with reused buffers, and the segment bookkeeping for flush."""

    engine: str = ""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.ratio = out_rate / in_rate
        self._fin = np.empty(0, np.float32)
        self._iout = np.empty(0, _I16)
        self._in_total = 0  # samples fed in this segment
        self._out_total = 0  # samples returned in this segment

    # engine hooks -------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _drain(self, want: int) -> np.ndarray:
        raise NotImplementedError

    def _restart(self) -> None:
        raise NotImplementedError

    # public -------------------------------------------------------------------------------
    def process(self, pcm: bytes) -> bytes:
        _check_pcm(pcm)
        n = len(pcm) >> 1
        if n == 0:
            return b""
        if self._fin.size < n:
            self._fin = np.empty(n, np.float32)
        x = self._fin[:n]
        np.copyto(x, np.frombuffer(pcm, dtype=_I16))
        self._in_total += n
        return self._to_pcm(self._run(x))

    def flush(self) -> bytes:
        ideal = (self._in_total * self.out_rate + self.in_rate // 2) // self.in_rate
        want = ideal - self._out_total
        out = b""
        if want > 0:
            y = self._drain(want)
            if y.size > want:
                y = y[:want]
            elif y.size < want:  # never seen; keep the length promise with silence
                y = np.concatenate([y, np.zeros(want - y.size, np.float32)])
            out = self._to_pcm(y)
        self._restart()
        self._in_total = 0
        self._out_total = 0
        return out

    @property
    def held_back(self) -> int:
        """Output samples the filter still owes for this segment (latency, in samples)."""
        ideal = (self._in_total * self.out_rate + self.in_rate // 2) // self.in_rate
        return max(0, ideal - self._out_total)

    def _to_pcm(self, y: np.ndarray) -> bytes:
        m = y.size
        if m == 0:
            return b""
        self._out_total += m
        if self._iout.size < m:
            self._iout = np.empty(max(m, 2 * self._iout.size), _I16)
        if not y.flags.writeable:
            y = y.copy()
        np.rint(y, out=y)
        np.maximum(y, _LO, out=y)  # ufuncs directly: np.clip costs ~5 us of Python per call
        np.minimum(y, _HI, out=y)
        out = self._iout[:m]
        np.copyto(out, y, casting="unsafe")
        return out.tobytes()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_rate} -> {self.out_rate})"


class SoxrResampler(_FloatResampler):
    """libsoxr ``ResampleStream`` (default quality HQ), float32 inside."""

    engine = "soxr"

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        super().__init__(in_rate, out_rate)
        self.quality = quality
        self._rs = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._rs.resample_chunk(x)

    def _drain(self, want: int) -> np.ndarray:
        return self._rs.resample_chunk(np.zeros(0, np.float32), last=True)

    def _restart(self) -> None:
        self._rs.clear()


class SamplerateResampler(_FloatResampler):
    """libsamplerate ``Resampler`` streamed with ``end_of_input=False``."""

    engine = "samplerate"

    def __init__(self, in_rate: int, out_rate: int, converter: str = "sinc_medium") -> None:
        super().__init__(in_rate, out_rate)
        self.converter = converter
        self._rs = samplerate.Resampler(converter, channels=1)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._rs.process(x, self.ratio, end_of_input=False)

    def _drain(self, want: int) -> np.ndarray:
        # python-samplerate sizes its output buffer from the input length, so an empty
        # end_of_input call returns nothing: push enough silence through to cover the tail.
        pad = math.ceil(want / self.ratio) + 8
        return self._rs.process(np.zeros(pad, np.float32), self.ratio, end_of_input=True)

    def _restart(self) -> None:
        self._rs.reset()


def make_resampler(in_rate: int, out_rate: int, engine: Engine = "soxr") -> StreamResampler:
    """A streaming resampler for one call and direction; equal rates give a pass-through."""
    if (
        not (isinstance(in_rate, int) and isinstance(out_rate, int))
        or in_rate <= 0
        or out_rate <= 0
    ):
        raise ValueError(f"sample rates must be positive integers, got {in_rate!r} -> {out_rate!r}")
    if in_rate == out_rate:
        return PassThrough(in_rate)
    if engine == "soxr":
        return SoxrResampler(in_rate, out_rate)
    if engine == "samplerate":
        return SamplerateResampler(in_rate, out_rate)
    raise ValueError(f"unknown resampler engine {engine!r} (choose one of: {', '.join(ENGINES)})")
