"""One error type for every expected failure, and the exit policy that turns it into one line.

Expected failures (bad data or checkpoint, impossible settings, no such device, a full disk) raise a
`ProjectError`; `exit_on_error()` prints its line and exits with status 1, and turns SIGINT and SIGTERM
into one line and status 130 or 143. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import reprlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

_SHORT = reprlib.Repr()  # for messages that show a value read from a file
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 40, 40, 40


def short_repr(value: object, limit: int = 60) -> str:
    """repr(value) for a message: one line, at most `limit` characters, safe on anything a damaged
    file may hold (nested thousands deep, or containing itself)."""
    text = " ".join(_SHORT.repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ProjectError(Exception):
    """An expected failure; the message is one line and the script exits with status 1."""

    def __init__(self, message: str = ""):
        # one line whatever went into it (a name or value from a damaged file may hold newlines)
        super().__init__(" ".join(str(message).split()))


class DataError(ProjectError):
    """A dataset that cannot be found, downloaded or parsed."""


class CheckpointError(ProjectError):
    """A checkpoint that is missing, unreadable, malformed or of the wrong kind."""


class DeviceError(ProjectError):
    """A device or precision this machine cannot provide."""


class TrainingError(ProjectError):
    """Settings or a run state that stop training (or a script driving training)."""


class WriteError(ProjectError):
    """A file that could not be written (disk full, no permission, ...); nothing was replaced."""


class FolderInUse(ProjectError):
    """An output folder that another running process holds (common/files.output_lock)."""


class Signalled(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread under `exit_on_error`; `kept` says in one clause
    what the interrupted work left behind ("no figure was replaced")."""

    def __init__(self, signum: int, kept: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.kept = signum, kept


@contextlib.contextmanager
def _on_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`handler` for SIGINT and SIGTERM during the block (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """A ProjectError -> `error: <message>` on stderr and status 1; SIGINT or SIGTERM ->
    `interrupted by SIGTERM[; what was kept]` and status 128 + its number (130, 143)."""
    def raise_signalled(signum: int, frame: Any) -> None:
        raise Signalled(signum)

    try:
        with _on_signals(raise_signalled):
            yield
    except ProjectError as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt as err:  # Signalled, or a plain Ctrl-C outside the main thread's handler
        signum, kept = getattr(err, "signum", signal.SIGINT), getattr(err, "kept", "")
        print(f"interrupted by {signal.Signals(signum).name}{'; ' + kept if kept else ''}", file=sys.stderr)
        raise SystemExit(128 + signum) from None


@contextlib.contextmanager
def signals_deferred() -> Iterator[Callable[[], None]]:
    """Hold SIGINT and SIGTERM back during a block that must not be cut anywhere (renaming a set of
    files into place; a training step). The block gets `check()`, which raises Signalled if one came,
    so a loop can stop between two steps; one still pending raises right after the block."""
    pending: list[int] = []

    def check() -> None:
        if pending:
            raise Signalled(pending[0])

    with _on_signals(lambda signum, frame: pending.append(signum)):
        yield check
    check()
