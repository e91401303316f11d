"""Trace retention: ``traces.keep`` and ``traces.max_total_mb``.

A trace holds both directions of a call's audio at 24 kHz (about 96 KB/s), so tracing every call
fills a disk within days. When a trace is finished the oldest finished traces are deleted until
both limits hold. It runs in the default executor (``rmtree`` of a long call is not cheap), one
prune at a time, and never touches a trace this process is still writing, nor anything under
``traces.dir`` that is not a trace (a directory without ``trace.jsonl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

__all__ = ["open_trace_dirs", "prune_traces", "schedule_prune", "trace_closed", "trace_opened"]

log = logging.getLogger("fsbridge.trace")

_OPEN: set[Path] = set()  # the traces this process is still writing
_PRUNE_LOCK = threading.Lock()  # one prune at a time: calls ending together do not race
_PRUNING: set[asyncio.Future[list[Path]]] = set()  # referenced until done


def trace_opened(directory: Path) -> None:
    _OPEN.add(directory)


def trace_closed(directory: Path) -> None:
    _OPEN.discard(directory)


def open_trace_dirs() -> frozenset[Path]:
    """The traces still being written (a copy, safe to hand to another thread)."""
    return frozenset(_OPEN)


def _size(directory: Path) -> int:
    """Bytes of the files under ``directory``; what vanishes meanwhile counts as nothing."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _remove(path: Path) -> bool:
    """Delete a trace; False if it was gone already (another instance pruning the same dir)."""
    for _ in range(3):
        try:
            shutil.rmtree(path)
            return True
        except FileNotFoundError:  # part of it vanished under us: finish what the other left
            if not os.path.lexists(path):
                return False
    shutil.rmtree(path)
    return True


def prune_traces(
    base: Path,
    keep: int | None,
    max_total_bytes: int | None,
    *,
    exclude: Collection[Path] = (),
) -> list[Path]:
    """Delete the oldest finished traces under ``base`` until at most ``keep`` remain and all the
    traces take at most ``max_total_bytes``; returns the directories removed.

    Only directories holding a ``trace.jsonl`` are traces (anything else the operator keeps there
    is left alone); age is that file's mtime, i.e. when the trace was last written. ``exclude``
    (traces still being written) is never removed, nor counted in ``keep``, but its size counts
    in the total since it is on the disk too. Another instance may prune the same directory at
    the same time: a trace that vanishes is simply gone; other errors are logged, not raised.
    """
    if keep is None and max_total_bytes is None:
        return []
    try:
        root = base.resolve()
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot list the traces in %s: %s", base, exc)
        return []
    excluded = {p.resolve() for p in exclude}
    finished: list[tuple[float, Path, int]] = []
    total = 0
    for entry in entries:
        path = root / entry.name
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            mtime = os.stat(path / "trace.jsonl").st_mtime
        except OSError:  # not a trace, or gone
            continue
        size = _size(path) if max_total_bytes is not None else 0
        total += size
        if path not in excluded:
            finished.append((mtime, path, size))
    finished.sort(key=lambda f: (f[0], f[1].name))
    removed: list[Path] = []
    count = len(finished)
    for _mtime, path, size in finished:
        over_count = keep is not None and count > keep
        over_size = max_total_bytes is not None and total > max_total_bytes
        if not (over_count or over_size):
            break
        try:
            if _remove(path):
                removed.append(path)
        except FileNotFoundError:  # pruned by someone else meanwhile
            pass
        except OSError as exc:
            log.warning("cannot delete the old trace %s: %s", path, exc)
            continue
        count -= 1
        total -= size
    if removed:
        log.info(
            "old traces deleted",
            extra={"fields": {"traces": str(base), "deleted": len(removed), "kept": count}},
        )
    return removed


def _prune_locked(
    base: Path, keep: int | None, max_total_bytes: int | None, exclude: frozenset[Path]
) -> list[Path]:
    with _PRUNE_LOCK:
        return prune_traces(base, keep, max_total_bytes, exclude=exclude)


def _pruned(fut: asyncio.Future[list[Path]]) -> None:
    _PRUNING.discard(fut)
    if not fut.cancelled() and (exc := fut.exception()) is not None:
        log.error("pruning the traces failed: %r", exc, exc_info=exc)


def schedule_prune(config: Config) -> None:
    """Apply ``traces.keep`` / ``traces.max_total_mb`` off the event loop (inline without one)."""
    cfg = config.traces
    if cfg.keep is None and cfg.max_total_mb is None:
        return
    max_bytes = int(cfg.max_total_mb * 1024 * 1024) if cfg.max_total_mb is not None else None
    args = (Path(cfg.dir), cfg.keep, max_bytes, open_trace_dirs())  # snapshot on this thread
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            _prune_locked(*args)
        except Exception as exc:  # never fail the end of the call over it
            log.error("pruning the traces failed: %r", exc, exc_info=exc)
        return
    fut = loop.run_in_executor(None, _prune_locked, *args)
    _PRUNING.add(fut)  # keep a reference until it is done
    fut.add_done_callback(_pruned)
