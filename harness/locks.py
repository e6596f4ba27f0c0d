"""Exclusive file locks: processes sharing a store and a cache do each piece of work once.

One lock file per piece of work (an artifact's ``build.lock``, a cache entry's ``<hash>.lock``,
a result's and a store's tables' under ``<cache>/locks/``), locked with ``flock``: the kernel
releases it when its holder dies, so a killed job never blocks anyone. The holder writes its
host, process id and start time into the file (and clears it when done), so that a process that
has to wait can say whom it waits for. Lock files stay where they are: deleting one while
another process waits on it would let two processes hold "the" lock (the waiter's file and a
new one).

Locks nest in one order only, the order in which work needs work: result -> feature entry ->
artifact (stage 2 -> stage 1) -> latents -> decoded data; the tables' lock is taken alone. A
process never takes a lock it holds (flock on a second descriptor of one file would wait for
itself).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Iterator

from harness.errors import BenchError


@contextlib.contextmanager
def file_lock(path: Path, what: str = "", wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs.

    Args:
        path: the lock file; its folder must exist.
        what: the work it guards, for the line printed when another process holds it.
        wait: wait for the lock; if False and another process holds it, the block runs at once
            without it.

    Yields:
        Whether this process holds the lock (always True when waiting).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not try_lock(fd, path):
            if not wait:
                yield False
                return
            # flush: in a log this line explains why nothing moves until the holder is done
            print(f"waiting for {what or path}: {holder(path)} holds {path}", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = f"{socket.gethostname().split('.')[0]} pid {os.getpid()} since {datetime.now():%Y-%m-%d %H:%M:%S}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode(), 0)
        try:
            yield True
        finally:
            os.ftruncate(fd, 0)  # a waiter never reads the name of a holder that is done
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def try_lock(fd: int, path: Path) -> bool:
    """Take the lock if no other process holds it; whether it was taken."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno != errno.ENOLCK:
            raise
        raise BenchError(
            f"cannot lock {path}: its file system gives no locks (e.g. NFS without its lock service); mount it "
            "with locks (docs/shared-store.md) or point --cache-dir / --results-dir at a local folder"
        ) from None
    return True


def holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it (``host pid N since ...``)."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        text = ""
    return text or "another process"  # it has the lock but has not written its name yet
