"""Output files written safely: the one atomic writer, sets of files published together, one run per folder.

A file is written to a temporary name beside it, synced and renamed over it: a crash (even SIGKILL)
leaves the old file or the new one, and a symbolic link there is replaced, never written through (a
linked folder on the way is followed). Every failure is a WriteError naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from common.errors import FolderInUse, Signalled, WriteError, signals_deferred

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock
    fcntl = None  # type: ignore[assignment]

STAGING_PREFIX = ".staging-"
LOCK_NAME = ".lock"


SYMLINK_LOOP = "too many levels of symbolic links (a symbolic link loop)"


def os_reason(err: OSError) -> str:
    """Why the path in `err` could not be used, in words. mkdir says only "File exists" when a
    folder's place holds a symbolic link that loops or leads nowhere, or a file; this says which."""
    if isinstance(err, FileExistsError) and err.filename is not None:
        try:
            mode = os.stat(err.filename).st_mode
        except OSError as inner:
            if inner.errno == errno.ELOOP:
                return SYMLINK_LOOP
            if inner.errno == errno.ENOENT:
                return "it is a symbolic link to something that does not exist"
        else:
            if not stat.S_ISDIR(mode):
                return "a file is there, not a folder"
    if err.errno == errno.ELOOP:
        return SYMLINK_LOOP
    return err.strerror or str(err) or type(err).__name__


def _sync_folder(folder: Path) -> None:
    """Make a rename durable; where a filesystem cannot sync a folder, the rename stands anyway."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on an in-memory file, then put its bytes at `path` atomically: a temporary file
    next to it, synced and renamed over it. On any failure the temporary file is removed and `path`
    left as it was; an OSError (disk full, no permission) is a WriteError naming the file.

    >>> atomic_write(folder / "samples.png", lambda f: fig.savefig(f, format="png"))
    """
    path, tmp = Path(path), None
    try:
        # in memory first (every file here is a few MB): a writer such as torch.save then never meets the
        # disk, whose errors it would turn into its own
        buffer = io.BytesIO()
        write(buffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            umask = os.umask(0o022)  # mkstemp's files are 0o600: give what open() would (0o666 less the umask)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError):
            raise WriteError(f"cannot write {path}: {os_reason(err)}") from None
        raise  # an interrupt, or a bug in the writer (which keeps its traceback)
    _sync_folder(path.parent)
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """`obj` as indented JSON, written atomically."""
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` if needed and make sure a file can be written in it, before any slow work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise WriteError(f"cannot write to output folder {folder}: {os_reason(err)}") from None


@contextlib.contextmanager
def removed_if_left_empty(*folders: str | os.PathLike) -> Iterator[None]:
    """For work that may fail before it writes anything: each of `folders`, and each folder above
    it, that does not exist when the block starts and is empty when the block fails is removed,
    deepest first, so a refused run leaves no folder behind that it created. A folder that holds
    anything, or existed before, is kept."""
    new: set[Path] = set()
    for folder in map(Path, folders):
        folder = folder.absolute()
        while not os.path.lexists(folder) and folder != folder.parent:
            new.add(folder)
            folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty (something was written), or already gone
                folder.rmdir()
        raise


@contextlib.contextmanager
def staging_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A new hidden folder in `folder` for a set of files that `publish` then moves into place; removed
    on the way out. Those a killed run left are removed first: call it while holding `output_lock`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        staged = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as err:
        raise WriteError(f"cannot write to output folder {folder}: {os_reason(err)}") from None
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def publish(files: list[Path], folder: str | os.PathLike) -> list[Path]:
    """Rename each staged file into `folder` under its own name (replacing a symbolic link there) and
    return the new paths. SIGINT and SIGTERM wait for the last rename."""
    folder = Path(folder)
    done: list[Path] = []
    try:
        with signals_deferred():
            for staged in files:
                target = folder / staged.name
                try:
                    os.replace(staged, target)
                except OSError as err:
                    rest = ", ".join(p.name for p in files if folder / p.name not in done)
                    raise WriteError(f"cannot write {target}: {os_reason(err)}; not replaced: {rest}") from None
                done.append(target)
            _sync_folder(folder)
    except Signalled as stop:  # it came during the renames, which all happened
        raise Signalled(stop.signum, f"all {len(done)} new files are in {folder}") from None
    return done


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold <folder>/.lock during the block; a second process is refused at once (FolderInUse, naming
    the PID the holder wrote there). An `fcntl.flock`: the OS releases it however the holder ends (kill -9
    included), so a lock file left behind never blocks the next run."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"cannot write to output folder {folder}: {os_reason(err)}") from None
    path = folder / LOCK_NAME
    if fcntl is None:
        yield path
        return
    while True:
        try:  # O_NOFOLLOW: a symbolic link planted at .lock is neither followed nor written through
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as err:
            raise WriteError(f"cannot lock output folder {folder}: {path.name}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = "PID unknown: it has only just started"
            with contextlib.suppress(OSError, ValueError):
                holder = f"PID {int(os.pread(fd, 32, 0).decode().strip())}"
            os.close(fd)
            raise FolderInUse(f"{folder} is in use by another run ({holder}); wait for it to finish or use "
                              f"another output folder") from None
        except OSError as err:  # e.g. a network filesystem without locks
            os.close(fd)
            raise WriteError(f"cannot lock output folder {folder}: {err.strerror}") from None
        # a holder removes the file just before letting go: the file locked may no longer be at
        # `path` (where another process may have made a new one), so try again
        with contextlib.suppress(FileNotFoundError):
            current = os.stat(path, follow_symlinks=False)
            mine = os.fstat(fd)
            if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as err:
        os.close(fd)
        raise WriteError(f"cannot write {path}: {err.strerror}") from None
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):  # still locked: nobody else can be using this file now
            os.unlink(path)
        os.close(fd)
