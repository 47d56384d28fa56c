"""The one writer (common/files.py): atomic, never through a symbolic link, a failed write is one
line naming the file, and no temporary file is ever left behind."""

import errno
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from common import figures
from common.checkpoint import save_checkpoint
from common.errors import WriteError
from common.files import atomic_write, publish, staging_folder, write_json

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FillingDisk(io.RawIOBase):
    """The file descriptor `fd` on a disk with `room` bytes left: then writes fail with ENOSPC."""

    def __init__(self, fd: int, room: int):
        self.fd, self.room = fd, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return os.write(self.fd, data)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_symbolic_link_is_replaced_and_its_target_left_alone(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    link = out / "history.json"
    link.symlink_to(target)
    write_json(link, [1, 2])
    assert not link.is_symlink() and json.loads(link.read_text()) == [1, 2]
    assert target.read_text() == "precious\n"


def test_a_symlinked_figure_is_replaced_by_a_png(tmp_path):
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"not mine to overwrite")
    link = tmp_path / "figures" / "samples.png"
    link.parent.mkdir()
    link.symlink_to(target)
    figures.plot_image_grid(np.zeros((4, 28, 28)), 2, 2, link)
    assert not link.is_symlink() and target.read_bytes() == b"not mine to overwrite"
    with Image.open(link) as image:
        assert image.format == "PNG"


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "history.json"
    write_json(path, [1])
    before = path.read_bytes()

    def fill_the_disk(f):
        f.write(b"[1, 2")
        raise ENOSPC

    with pytest.raises(WriteError) as err:
        atomic_write(path, fill_the_disk)
    assert str(err.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == before and names(tmp_path) == ["history.json"]


def test_torch_save_on_a_full_disk_names_the_checkpoint_not_its_zip_writer(tmp_path, monkeypatch):
    """torch.save swallows the OSError and raises RuntimeError('[enforce fail at inline_container.cc]
    ... unexpected pos ...'); the message still says what happened and where."""
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: io.BufferedWriter(FillingDisk(fd, room=1000)))
    with pytest.raises(WriteError) as err:
        save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(10_000)})
    assert str(err.value) == f"cannot write {path}: No space left on device"
    monkeypatch.undo()
    assert path.read_bytes() == before and names(path.parent) == ["last.pt"]


def test_a_failed_rename_or_unwritable_folder_is_a_write_error(tmp_path):
    folder = tmp_path / "a_folder_named_like_the_file"
    folder.mkdir()
    (folder / "x").write_text("")
    with pytest.raises(WriteError, match=f"cannot write {folder}: "):
        write_json(folder, {})  # os.replace onto a non-empty folder
    assert names(tmp_path) == ["a_folder_named_like_the_file"]
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match="cannot write .*file/x.json: "):
        write_json(tmp_path / "file" / "x.json", {})


def test_a_bug_in_the_writer_keeps_its_traceback_and_leaves_nothing(tmp_path):
    def buggy(f):
        raise ValueError("a bug, not a disk problem")

    with pytest.raises(ValueError, match="a bug"):
        atomic_write(tmp_path / "x.bin", buggy)
    assert names(tmp_path) == []


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "x.json", {})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600


def test_publish_moves_a_staged_set_and_removes_the_staging_folder(tmp_path):
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "a.txt").write_text("old a")
    (folder / ".staging-left-by-a-killed-run").mkdir()
    with staging_folder(folder) as staged:
        files = [atomic_write(staged / name, lambda f: f.write(b"new")) for name in ("a.txt", "b.txt")]
        assert (folder / "a.txt").read_text() == "old a"  # nothing replaced before publish
        written = publish(files, folder)
    assert written == [folder / "a.txt", folder / "b.txt"]
    assert names(folder) == ["a.txt", "b.txt"] and (folder / "a.txt").read_text() == "new"
