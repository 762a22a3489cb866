"""One run at a time per run folder.

Two runs writing one folder would interleave: stage N+1 of one could read stage N of the other. A
run holds ``<output_dir>/.<name>.lock`` (``filelock``: an OS lock, ``flock`` on Linux, which the
kernel releases when the holder dies, so a killed run's lock is never stale) and writes who holds it
to ``.<name>.lock.json`` for the message a second run prints. Both sit beside the run folder, not in
it, so the run folder holds only what the run made. A ``.lock.json`` found while the lock is free
was left by a run that was killed; the new run takes over and says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from edgepress.errors import RunInUseError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold ``root``'s lock for the block, or raise RunInUseError naming the holder."""
    from filelock import FileLock, Timeout

    made_parent = not root.parent.exists()
    root.mkdir(parents=True, exist_ok=True)
    lock_file = root.parent / f".{root.name}.lock"
    lock = FileLock(lock_file, timeout=0)
    holder = root.parent / f".{root.name}.lock.json"
    try:
        lock.acquire()
    except Timeout:
        raise RunInUseError(
            f"run folder {root} is in use by {_describe(holder)}; wait for that run to end, or give this one another name (--name)"
        ) from None
    try:
        if holder.is_file():
            log.info("taking over run folder %s from %s, which did not finish (killed)", root, _describe(holder))
        holder.write_text(json.dumps(_me()), encoding="utf-8")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()
        _tidy_if_empty(root, lock_file, made_parent)


def _tidy_if_empty(root: Path, lock_file: Path, made_parent: bool) -> None:
    """A run that wrote nothing (bad data, say) leaves nothing behind: not its folder, not its lock
    file, and not the output folder it created (``runs/`` in the current directory by default)."""
    with contextlib.suppress(OSError):
        root.rmdir()
        lock_file.unlink()
        if made_parent:
            root.parent.rmdir()


def _me() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _describe(holder: Path) -> str:
    try:
        facts = json.loads(holder.read_text(encoding="utf-8"))
        return f"pid {facts['pid']} on {facts['host']} (started {facts['started']})"
    except (OSError, ValueError, KeyError):
        return "another edgepress process (its details are not readable yet)"
