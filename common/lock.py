"""One run per output folder: an exclusive lock on <folder>/.lock, held while a program works there.

    with output_lock(out_dir):
        ...  # train, or draw figures

The lock is `fcntl.flock` on that file. The OS releases it when the process ends in any way,
kill -9 included, so a lock file left behind by a killed run never blocks the next one. The holder
writes its PID into the file, so that a refused process can say who holds the folder, and removes
the file when it is done. A second process is refused at once (FolderInUse, one line); it changes
nothing in the folder. Where fcntl does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from common.errors import FolderInUse, WriteError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def _holder(fd: int) -> str:
    """Who holds the lock, from the PID its holder wrote into the file."""
    with contextlib.suppress(OSError, ValueError):
        return f"PID {int(os.pread(fd, 32, 0).decode().strip())}"
    return "PID unknown: it has only just started"


def _acquire(path: Path, folder: Path) -> int:
    """An open descriptor of `path`, exclusively locked, with our PID written into it."""
    while True:
        try:  # O_NOFOLLOW: a symbolic link planted at .lock is neither followed nor written through
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as err:
            raise WriteError(f"cannot lock output folder {folder}: {path.name}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderInUse(f"{folder} is in use by another run ({holder}); wait for it to finish or use "
                              f"another output folder") from None
        except OSError as err:  # e.g. a network filesystem without locks
            os.close(fd)
            raise WriteError(f"cannot lock output folder {folder}: {err.strerror}") from None
        # A holder removes the file just before it lets go, so we may have locked a file that is no
        # longer at `path` (another process may have made a new one there): then try again.
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as err:
        os.close(fd)
        raise WriteError(f"cannot write {path}: {err.strerror}") from None
    return fd


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold <folder>/.lock (creating the folder if needed) for the duration of the block; refuse
    with FolderInUse, naming the holder's PID, if another process holds it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"cannot write to output folder {folder}: {err.strerror}") from None
    path = folder / LOCK_NAME
    if fcntl is None:
        yield path
        return
    fd = _acquire(path, folder)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):  # still locked: nobody else can be using this file now
            os.unlink(path)
        os.close(fd)
