"""An exclusive lock on a workbook file's saves, across processes: ``with save_lock(path): ...``.

ibxl replaces a workbook atomically (``os.replace``), so the workbook file itself cannot carry the
lock: the lock is a small sidecar file ``.~ibxl.<name>.lock`` beside it, locked with ``fcntl.flock``
(POSIX) or ``msvcrt.locking`` (Windows) and removed again on release (POSIX). Holding it makes
"compare the file on disk with what was read, then replace it" one step no other ibxl process can
interleave with. The lock is released by the operating system when its holder dies (kill -9 too).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["save_lock", "lock_path", "SaveLockTimeout"]

_POLL = 0.02       # seconds between attempts while another process holds the lock


class SaveLockTimeout(OSError):
    """Another process held the workbook's save lock for longer than the wait allowed."""


def lock_path(path: Path) -> Path:
    """The sidecar lock file of workbook ``path``."""
    return path.with_name(f".~ibxl.{path.name}.lock")


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def save_lock(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold the save lock of workbook ``path`` for the ``with`` block. Waits up to ``timeout`` seconds
    for another holder; raises SaveLockTimeout naming the lock file after that, OSError when the
    folder does not allow creating it."""
    lock = lock_path(Path(path))
    deadline = time.monotonic() + timeout
    pause = threading.Event()            # never set: its wait() paces the retries
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        if _try_lock(fd):
            # POSIX: the holder we waited for may have removed the file (and a third process made a
            # new one) between our open and our lock: only the file that is still at the path counts.
            if sys.platform == "win32" or _same_file(fd, lock):
                break
            _unlock(fd)
        os.close(fd)
        if time.monotonic() >= deadline:
            raise SaveLockTimeout(f"another process has been saving {path} for more than {timeout:g} s "
                                  f"(lock file {lock}); try again, or delete the lock file if no ibxl runs")
        pause.wait(_POLL)
    try:
        yield
    finally:
        if sys.platform != "win32":
            with contextlib.suppress(OSError):
                lock.unlink()
        _unlock(fd)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
