"""One error type for every expected failure, and the exit policy that turns it into one line.

Expected failures (bad data, a bad checkpoint, impossible settings, an unavailable device) raise a
subclass of `ProjectError` with a one-line message. Scripts wrap their work in `exit_on_error()`,
which prints that line and exits with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator


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
    """An output folder that another running process holds (see common/lock.py)."""


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a ProjectError into `error: <message>` on stderr and exit status 1, and Ctrl-C
    outside the training loop into one line and status 130, without a traceback."""
    try:
        yield
    except ProjectError as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        print("interrupted by Ctrl-C", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
