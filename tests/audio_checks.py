"""Audio comparisons for tests: alignment by cross-correlation, correlation, SNR, fraction heard."""

from __future__ import annotations

import numpy as np
import samplerate


def resample_ref(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Reference resampling with libsamplerate's best sinc (independent of the bridge's choice)."""
    if in_rate == out_rate:
        return x.astype(np.float64)
    y = samplerate.resample(x.astype(np.float32) / 32768.0, out_rate / in_rate, "sinc_best")
    return y.astype(np.float64) * 32768.0


def best_lag(signal: np.ndarray, ref: np.ndarray, max_lag: int | None = None) -> int:
    """The offset of ``ref`` inside ``signal`` (FFT cross-correlation)."""
    n = len(signal) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(signal, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([corr[: len(signal)], corr[size - len(ref) + 1 :]])
    idx = np.concatenate([np.arange(len(signal)), np.arange(-len(ref) + 1, 0)])
    if max_lag is not None:
        keep = np.abs(idx) <= max_lag
        lags, idx = lags[keep], idx[keep]
    return int(idx[int(np.argmax(lags))])


def aligned(signal: np.ndarray, ref: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping parts of ``signal[lag:]`` and ``ref``."""
    if lag >= 0:
        s = signal[lag : lag + len(ref)]
        r = ref[: len(s)]
    else:
        r = ref[-lag:]
        s = signal[: len(r)]
        r = r[: len(s)]
    return s.astype(np.float64), r.astype(np.float64)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom else 0.0


def snr_db(signal: np.ndarray, ref: np.ndarray) -> float:
    noise = signal - ref
    return float(10 * np.log10((ref * ref).sum() / max((noise * noise).sum(), 1e-9)))
