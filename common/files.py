"""Writing files safely: the one writer every output goes through (checkpoints, JSON, figures).

Each file is written to a temporary name in its own folder, synced, then renamed over the target.
The rename is atomic on POSIX, so a crash (even SIGKILL) leaves either the old file or the new
one, never a half-written one. The rename replaces the directory entry: when the target is a
symbolic link, the link itself is replaced by the new file and whatever it pointed to is left
untouched, so no write ever lands outside the output folder through a linked file. A linked
*folder* on the way (say `checkpoints/` pointing to a bigger disk) is followed: that is where the
user put it, and the temporary file is made inside it, next to the file it replaces.

Any failure (OSError, or the RuntimeError torch.save raises when the disk fills) is a WriteError
naming the file being written, and the temporary file is removed.

A set of files that belong together (plot.py's figures) is written into a staging folder first
and then renamed into place by `publish`, which lets no SIGINT or SIGTERM cut the renames short:
an interrupted program leaves the old set or the new one, never a mix of both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from common.errors import Signalled, WriteError, signals_deferred

# torch.save's zip writer swallows the OSError of a failed write and reports a RuntimeError such as
# "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"; these mark such errors.
_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed")


class _RecordingFile:
    """The file handed to a writer: every call passes through, and the first OSError a write
    raises is kept, so the message can say "No space left on device" even when the writer
    (torch.save) turned it into a RuntimeError."""

    def __init__(self, f: IO[bytes]):
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _file_mode() -> int:
    """What open() would give a new file (0o666 less the umask); mkstemp's files are 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable. Some filesystems cannot sync a folder: the rename is done anyway."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temporary file next to `path`, fsync it, then rename it over `path`
    (replacing a symbolic link there, never writing through it). On any failure the temporary
    file is removed and `path` is left as it was; a failed write raises WriteError.

    >>> atomic_write(folder / "samples.png", lambda f: fig.savefig(f, format="png"))
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {_reason(err)}") from None
    recorder = None
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _RecordingFile(f)
            write(recorder)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        recorded = recorder.error if recorder is not None else None
        if isinstance(err, OSError) or (isinstance(err, RuntimeError) and (
                recorded is not None or any(mark in str(err) for mark in _TORCH_WRITE_FAILURES))):
            raise WriteError(f"cannot write {path}: {_reason(recorded or err)}") from None
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
        raise WriteError(f"cannot write to output folder {folder}: {err.strerror}") from None


STAGING_PREFIX = ".staging-"


@contextlib.contextmanager
def staging_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A new hidden folder inside `folder` to write a set of files into before `publish` moves them
    into place; removed on the way out, whatever happens. Staging folders left by a killed run are
    removed first, so call this while holding the folder's lock (common/lock.py)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        staged = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as err:
        raise WriteError(f"cannot write to output folder {folder}: {err.strerror}") from None
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def publish(files: list[Path], folder: str | os.PathLike) -> list[Path]:
    """Rename each staged file into `folder` under its own name (replacing a symbolic link there,
    as atomic_write does) and return the new paths. SIGINT and SIGTERM wait for the last rename."""
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
                    raise WriteError(f"cannot write {target}: {_reason(err)}; not replaced: {rest}") from None
                done.append(target)
            _sync_folder(folder)
    except Signalled as stop:  # it came during the renames, which all happened
        raise Signalled(stop.signum, f"all {len(done)} new files are in {folder}") from None
    return done
