"""Chunk policy: when to cut the reply audio into a file, and how long the file is.

Each file FreeSWITCH plays costs a fixed overhead (the ~100 ms lead-in of ``uuid_broadcast``, or a
boundary of up to one frame with ``sendmsg``), so few large files sound best; but the first file
must start soon, or the caller waits. The policy:

* the first file of a reply is cut as soon as ``first_ms`` of audio has arrived (whole frames of
  it: the resampler may still hold a few ms back);
* after that, files are cut only while fewer than ``1 + queue_ahead`` files are pending (playing or
  queued) and, with ``cut_ahead_ms``, only once the audio still ahead of the new file is down to
  that much; each takes everything accumulated (at least ``min_ms``, at most ``max_ms``). Cutting
  as late as is safe lets each file take all that arrived while the one before it played, so when
  the model is faster than real time the files grow geometrically (at 4x: 180, 400, 1600 ms, ...)
  and the file count grows with the playback time, not with the delivery rate;
* if nothing is pending at all (an underrun: the model is slower than real time), whatever whole
  frames there are go out at once, since silence is already audible;
* at the end of the item everything left goes out (in files of at most ``max_ms``), the last
  one padded to a whole frame.

Every file is a whole number of 20 ms frames, so FreeSWITCH never pads a partial last frame.
Pure: fed bytes and counts, returns bytes; no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChunkPolicy", "Chunker"]

FRAME_MS = 20


@dataclass(frozen=True)
class ChunkPolicy:
    first_ms: int = 200
    min_ms: int = 200
    max_ms: int = 4000
    queue_ahead: int = 1
    cut_ahead_ms: int | None = 80  # None: cut as soon as a file may be queued


class Chunker:
    """Accumulates int16 PCM at the channel rate for one item and cuts it into chunk payloads."""

    def __init__(self, rate: int, policy: ChunkPolicy) -> None:
        self.rate = rate
        self.policy = policy
        self._frame_bytes = rate * FRAME_MS // 1000 * 2
        self._buf = bytearray()
        self._started = False
        self._finished = False
        self.emitted_bytes = 0

    def _ms_to_bytes(self, ms: int) -> int:
        return ms // FRAME_MS * self._frame_bytes

    @property
    def buffered_ms(self) -> float:
        return len(self._buf) / 2 / self.rate * 1000

    @property
    def emitted_ms(self) -> float:
        """Audio already cut into chunks: the item offset of the next chunk."""
        return self.emitted_bytes / 2 / self.rate * 1000

    @property
    def has_audio(self) -> bool:
        return bool(self._buf)

    def push(self, pcm: bytes) -> None:
        if not self._finished:
            self._buf += pcm

    def finish(self) -> None:
        """The item's audio is complete: the next ``take`` returns the whole remainder."""
        self._finished = True

    def clear(self) -> None:
        """Drop everything not yet cut (barge-in)."""
        self._buf.clear()
        self._finished = True

    def take(
        self, pending_files: int, received_ms: float | None = None, pending_ms: float = 0.0
    ) -> bytes | None:
        """The next chunk to queue, given how many files are playing or queued, or None.

        ``received_ms`` is how much of the item has arrived (before resampling). The first file
        is due once ``first_ms`` has arrived, even if the resampler still holds a few ms of it
        back: waiting for them would cost a whole further delta of latency. ``pending_ms`` is
        the audio still ahead of a file queued now (see ``cut_ahead_ms``).
        """
        whole = len(self._buf) - len(self._buf) % self._frame_bytes
        if self._finished:
            if not self._buf:
                return None
            return self._cut(min(len(self._buf), self._ms_to_bytes(self.policy.max_ms)), pad=True)
        if not self._started:
            arrived = self.buffered_ms if received_ms is None else received_ms - self.emitted_ms
            if whole and max(arrived, self.buffered_ms) >= self.policy.first_ms:
                self._started = True
                return self._cut(min(whole, self._ms_to_bytes(self.policy.max_ms)))
            return None
        if pending_files == 0 and whole > 0:
            return self._cut(min(whole, self._ms_to_bytes(self.policy.max_ms)))
        if not self.wants_cut(pending_files, pending_ms):
            return None
        if whole >= self._ms_to_bytes(self.policy.min_ms):
            return self._cut(min(whole, self._ms_to_bytes(self.policy.max_ms)))
        return None

    def wants_cut(self, pending_files: int, pending_ms: float) -> bool:
        """Whether a later file may be queued now (given enough audio for one)."""
        if pending_files >= 1 + self.policy.queue_ahead:
            return False
        ahead = self.policy.cut_ahead_ms
        return ahead is None or pending_ms <= ahead

    def cut_wait_ms(self, pending_files: int, pending_ms: float) -> float | None:
        """How long buffered audio waits for ``cut_ahead_ms`` alone, or None if it does not
        (nothing buffered, no such wait, or the queue is full: a PLAYBACK_STOP ends that)."""
        ahead = self.policy.cut_ahead_ms
        if ahead is None or not self._buf or pending_files >= 1 + self.policy.queue_ahead:
            return None
        wait = pending_ms - ahead
        return wait if wait > 0 else None

    def _cut(self, n: int, pad: bool = False) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        if pad and len(out) % self._frame_bytes:
            out += b"\x00" * (self._frame_bytes - len(out) % self._frame_bytes)
        self.emitted_bytes += len(out)
        return out
