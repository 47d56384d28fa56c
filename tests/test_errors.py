"""common/errors.py: one line and a clear exit status for every expected failure and for SIGINT/SIGTERM."""

import os
import signal
import time

import pytest

from common.errors import ProjectError, Signalled, exit_on_error, signals_deferred


def test_a_project_error_is_one_line_and_status_1():
    with pytest.raises(SystemExit) as stopped:
        with exit_on_error():
            raise ProjectError("the reason")
    assert stopped.value.code == "error: the reason"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_are_one_line_and_128_plus_the_signal(signum, capsys):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(SystemExit) as stopped:
        with exit_on_error():
            os.kill(os.getpid(), signum)
            time.sleep(10)  # the handler interrupts this at once
            raise AssertionError("the signal did not stop the block")
    assert stopped.value.code == 128 + signum
    assert capsys.readouterr().err == f"interrupted by {signal.Signals(signum).name}\n"
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # restored


def test_what_was_kept_is_part_of_the_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        with exit_on_error():
            raise Signalled(signal.SIGTERM, "no figure was replaced")
    assert stopped.value.code == 143
    assert capsys.readouterr().err == "interrupted by SIGTERM; no figure was replaced\n"


def test_deferred_signals_wait_for_the_end_of_the_block():
    done = []
    with pytest.raises(SystemExit) as stopped:
        with exit_on_error():
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)  # the handler runs here, and records the signal
                done.append("the block finished")
    assert done == ["the block finished"] and stopped.value.code == 143
