"""common/files.output_lock: one process per output folder; a killed holder never blocks the next one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import FolderInUse, WriteError
from common.files import LOCK_NAME, output_lock

ROOT = Path(__file__).resolve().parent.parent  # where `python -c` finds common/
HOLD = ("import sys, time\n"
        "from common.files import output_lock\n"
        "with output_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n")


def test_a_second_holder_is_refused_naming_the_first_one(tmp_path):
    with output_lock(tmp_path / "run") as lock_file:
        assert lock_file.read_text() == f"{os.getpid()}\n"
        with pytest.raises(FolderInUse) as err:
            with output_lock(tmp_path / "run"):
                pass
        assert str(err.value) == (f"{tmp_path / 'run'} is in use by another run (PID {os.getpid()}); wait for it "
                                  f"to finish or use another output folder")
        assert lock_file.read_text() == f"{os.getpid()}\n"  # the refused one changed nothing
    assert os.listdir(tmp_path / "run") == []  # released and removed


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(FolderInUse, match=f"PID {holder.pid}"):
            with output_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (tmp_path / LOCK_NAME).read_text() == f"{holder.pid}\n"  # left behind by kill -9
    with output_lock(tmp_path) as lock_file:
        assert lock_file.read_text() == f"{os.getpid()}\n"


def test_a_symbolic_link_at_the_lock_file_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(target)
    with pytest.raises(WriteError, match=f"cannot lock output folder {run}: .lock: "):
        with output_lock(run):
            pass
    assert target.read_text() == "precious\n"


def test_an_output_folder_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match="cannot write to output folder .*file/run: Not a directory"):
        with output_lock(tmp_path / "file" / "run"):
            pass


def test_many_processes_racing_for_one_folder_hold_it_one_at_a_time(tmp_path):
    """Each child takes the lock once (waiting its turn) and appends to a log inside; overlapping
    holders would interleave their start/end lines."""
    code = ("import os, sys, time\n"
            "from common.errors import FolderInUse\n"
            "from common.files import output_lock\n"
            "while True:\n"
            "    try:\n"
            "        with output_lock(sys.argv[1]):\n"
            "            with open(os.path.join(sys.argv[1], 'log'), 'a') as f:\n"
            "                f.write('start\\n'); f.flush(); time.sleep(0.05); f.write('end\\n')\n"
            "        break\n"
            "    except FolderInUse:\n"
            "        time.sleep(0.01)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT) for _ in range(4)]
    deadline = time.monotonic() + 120
    for proc in procs:
        assert proc.wait(timeout=max(1, deadline - time.monotonic())) == 0
    assert (tmp_path / "log").read_text() == "start\nend\n" * 4
