"""Hard to break, round two (issue 15), the cases that need more than one process or a signal at a
chosen moment: two runs on one output folder, a kill -9 that leaves a lock file behind, a
symbolic link among the figures, SIGTERM while plot.py draws or renames, a disk that fills while
history.json is written, SIGTERM to the benchmark and to parallel training runs. The single bad
inputs are cases of tests/test_trainer.py.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import one_line_exit as refused
from conftest import write_mnist
from test_trainer import ENV, FAST, SCRIPTS, SMALL, TIMEOUT, last_line, snapshot, wait_for

from common.errors import exit_on_error
from common.options import MAX_EPOCHS
from experiments.runs import run_in_parallel
from vanila_autoencoder import plot as ae_plot
from vanila_autoencoder import train as ae_train
from variational_autoencoder import train as vae_train

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def plotted(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """<root>/run: one epoch of the AE and its figures."""
    out = tmp_path_factory.mktemp("plotted") / "run"
    ae_train.main(["--data-dir", str(data), "--out-dir", str(out), *FAST, *SMALL])
    ae_plot.main(["--out-dir", str(out), "--no-download"])
    return out


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=ENV)


def assert_one_clean_line(done: subprocess.CompletedProcess, returncode: int, line: str) -> None:
    assert done.returncode == returncode, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert last_line(done.stderr) == line, done.stderr


# ----------------------------------------------------------------------------------------------
# one run per output folder


def test_a_second_run_on_a_busy_folder_is_refused_and_a_killed_one_never_blocks(tmp_path, data):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(SCRIPTS["ae/train"]), "--data-dir", str(data), "--out-dir",
                              str(out), *FAST, *SMALL, "--epochs", str(MAX_EPOCHS)],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        error = wait_for(out / "checkpoints" / "last.pt", first)
        assert not error, error
        busy = f"error: {out} is in use by another run (PID {first.pid}); wait for it to finish or use another " \
               f"output folder"
        # an --overwrite run of the same model, and the other model into the same folder: refused, at once
        second = run([sys.executable, str(SCRIPTS["ae/train"]), "--data-dir", str(data), "--out-dir", str(out),
                      *FAST, *SMALL, "--overwrite"], tmp_path)
        assert_one_clean_line(second, 1, busy)
        with pytest.raises(SystemExit) as stopped:
            vae_train.main(["--data-dir", str(data), "--out-dir", str(out), *FAST, *SMALL])
        assert stopped.value.code == busy
        with pytest.raises(SystemExit) as stopped:  # plot.py too, while the run writes
            ae_plot.main(["--out-dir", str(out), "--no-download"])
        assert stopped.value.code == busy
        assert (out / ".lock").read_text() == f"{first.pid}\n"  # the refused runs changed nothing
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.kill()  # SIGKILL: no cleanup, the lock file stays
        first.communicate(timeout=TIMEOUT)
    assert (out / ".lock").exists()
    done = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    resumed = ae_train.main(["--out-dir", str(out), "--resume", "--epochs", str(done + 1)])  # no manual cleanup
    assert len(resumed["history"]) == done + 1
    assert not (out / ".lock").exists()


def test_an_ae_and_a_vae_started_together_never_mix_their_files(tmp_path, data):
    out = tmp_path / "shared"
    procs = {kind: subprocess.Popen([sys.executable, str(SCRIPTS[f"{kind}/train"]), "--data-dir", str(data),
                                     "--out-dir", str(out), *FAST, *SMALL, "--epochs", "3"],
                                    cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env=ENV)
             for kind in ("ae", "vae")}
    results = {kind: (proc.wait(timeout=TIMEOUT), proc.stderr.read()) for kind, proc in procs.items()}
    winners = [kind for kind, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    loser_code, loser_err = results[{"ae": "vae", "vae": "ae"}[winners[0]]]
    assert loser_code == 1 and "Traceback" not in loser_err
    # refused while the winner ran, or (if it had already finished) because its last.pt is there
    assert "is in use by another run" in last_line(loser_err) or "pass --resume" in last_line(loser_err)
    import json
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["kind"] == json.loads((out / "run.json").read_text())["kind"] == winners[0]
    assert json.loads((out / "history.json").read_text()) == state["history"]


# ----------------------------------------------------------------------------------------------
# plot.py: symbolic links, SIGTERM


def test_a_symlinked_figure_is_replaced_and_its_target_untouched(tmp_path, plotted):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(plotted, out)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"someone else's file")
    samples = out / "figures" / "samples.png"
    samples.unlink()
    samples.symlink_to(outside)
    done = run([sys.executable, str(SCRIPTS["ae/plot"]), "--out-dir", str(out), "--no-download"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert outside.read_bytes() == b"someone else's file"
    assert not samples.is_symlink() and samples.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "figures", "history.json", "latent_codes.npz",
                                                    "run.json"]
    assert not [p for p in (out / "figures").iterdir() if p.name.startswith(".")]


# Sends the script SIGTERM from inside, at a chosen moment: while it draws (the 3rd figure being
# saved) or while it renames the figures into place (the 2nd rename).
SIGTERM_AT = (
    "import os, runpy, signal, sys\n"
    "from matplotlib.figure import Figure\n"
    "moment, calls = sys.argv[1], {'savefig': 0, 'replace': 0}\n"
    "def hit(what, n):\n"
    "    calls[what] += 1\n"
    "    if what == moment and calls[what] == n:\n"
    "        os.kill(os.getpid(), signal.SIGTERM)\n"
    "real_savefig, real_replace = Figure.savefig, os.replace\n"
    "def savefig(self, *a, **k):\n"
    "    hit('savefig', 3)\n"
    "    return real_savefig(self, *a, **k)\n"
    "def replace(src, dst):\n"
    "    if '.staging-' in str(src) and '.staging-' not in str(dst):  # staged figure -> figures/\n"
    "        hit('replace', 2)\n"
    "    return real_replace(src, dst)\n"
    "Figure.savefig, os.replace = savefig, replace\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.parametrize("moment", ["savefig", "replace"], ids=["while-drawing", "while-renaming"])
def test_sigterm_during_plot_leaves_the_old_figures_or_all_new_ones(tmp_path, plotted, moment):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(plotted, out)
    figures = out / "figures"
    before = snapshot(figures)
    inodes = {p.name: p.stat().st_ino for p in figures.iterdir()}
    done = run([sys.executable, "-c", SIGTERM_AT, moment, str(SCRIPTS["ae/plot"]), "--out-dir", str(out),
                "--no-download", "--seed", "1"], tmp_path)
    if moment == "savefig":
        assert_one_clean_line(done, 143, f"interrupted by SIGTERM; no figure in {figures} was replaced (any there "
                                         f"are from an earlier run)")
        assert snapshot(figures) == before
    else:  # the signal waits for the last rename
        assert_one_clean_line(done, 143, f"interrupted by SIGTERM; all 7 new files are in {figures}")
        assert all((figures / name).stat().st_ino != inode for name, inode in inodes.items())  # every one replaced
    assert done.stdout == ""  # no figure reported as written
    assert sorted(p.name for p in figures.iterdir()) == sorted(before)  # no staging folder left
    assert not (out / ".lock").exists()


# ----------------------------------------------------------------------------------------------
# a full disk while history.json is written (the checkpoint before it fitted)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file is synced")
def test_a_full_disk_while_writing_history_names_history_json(tmp_path, data, monkeypatch):
    out = tmp_path / "run"
    args = ["--data-dir", str(data), "--out-dir", str(out), *FAST, *SMALL]
    ae_train.main(args)
    history_before = (out / "history.json").read_bytes()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".history.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SystemExit) as stopped:
        ae_train.main([*args, "--resume", "--epochs", "2"])
    ckpt = out / "checkpoints" / "last.pt"
    assert stopped.value.code == (f"error: cannot write {out / 'history.json'}: No space left on device; "
                                  f"training stopped and {ckpt} holds epoch 2")
    assert (out / "history.json").read_bytes() == history_before
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", "history.json", "last.pt", "latent_codes.npz",
                                                      "run.json"]


# ----------------------------------------------------------------------------------------------
# SIGTERM to the experiments


def test_sigterm_stops_the_benchmark_with_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "experiments.bench", "--device", "cpu", "--steps", "1000",
                             "--batch-size", "16", "--models", "ae"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().startswith("device: ")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    assert last_line(stderr) == "interrupted by SIGTERM"


def test_sigterm_during_parallel_runs_stops_them_too(capsys):
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit('child stopped'))\n"
             "print('started', flush=True)\n"
             "time.sleep(600)\n")
    jobs = [(f"job{i}", [sys.executable, "-c", child]) for i in range(3)]  # 2 at a time: the third never starts
    relayed: list[str] = []

    def terminate_once_started():
        deadline = time.monotonic() + TIMEOUT
        while "".join(relayed).count("started") < 2 and time.monotonic() < deadline:
            relayed.append(capsys.readouterr().out)
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_started, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as stopped:
        with exit_on_error():
            run_in_parallel(jobs, 2)
    assert stopped.value.code == 143 and time.monotonic() - t0 < 60
    rest = capsys.readouterr()
    out = "".join(relayed) + rest.out
    assert out.count("started") == 2 and out.count("child stopped") == 2  # the third job never started
    assert rest.err == "interrupted by SIGTERM; the training runs were stopped too, each keeping its last checkpoint\n"


# ----------------------------------------------------------------------------------------------
# round three (issue 16): failed runs leave no folder they made, messages name the cause, records
# of an earlier run are not replaced unasked


def tree(folder: Path) -> dict[str, str]:
    """Every file (sha256) and folder ("dir") under `folder`, by relative path, links included."""
    return {**{str(p.relative_to(folder)): "dir" for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()},
            **{str(p.relative_to(folder)): "link" for p in folder.rglob("*") if p.is_symlink()},
            **snapshot(folder)}


def failing_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's MNIST download as it fails offline: MNIST/raw/ made first, then an error."""
    import torchvision.datasets

    class Offline:
        def __init__(self, root: str, train: bool, download: bool):
            (Path(root) / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)


@pytest.mark.parametrize("main", [ae_train.main, vae_train.main], ids=["ae", "vae"])
def test_a_run_refused_for_missing_data_leaves_no_folder_it_made(tmp_path, monkeypatch, main):
    failing_download(monkeypatch)
    message = refused(main, ["--data-dir", str(tmp_path / "nodata"), "--out-dir", str(tmp_path / "new" / "run"),
                             "--device", "cpu"])
    assert "download failed: Error downloading train-images-idx3-ubyte.gz" in message
    assert list(tmp_path.iterdir()) == []  # no nodata/MNIST/raw/, no new/run/checkpoints/
    # an existing output folder is kept as it was, and so is a data folder that was there
    (tmp_path / "out").mkdir()
    (tmp_path / "data").mkdir()
    refused(main, ["--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert tree(tmp_path) == {"out": "dir", "data": "dir"}


def test_plot_refused_for_missing_data_leaves_no_figures_folder(tmp_path, monkeypatch, plotted):
    failing_download(monkeypatch)
    ckpt = plotted / "checkpoints" / "last.pt"
    message = refused(ae_plot.main, ["--checkpoint", str(ckpt), "--out-dir", str(tmp_path / "look" / "ae"),
                                     "--data-dir", str(tmp_path / "nodata")])
    assert "download failed" in message
    assert list(tmp_path.iterdir()) == []
    before = tree(plotted)  # a folder that has figures keeps them all
    refused(ae_plot.main, ["--out-dir", str(plotted), "--data-dir", str(tmp_path / "nodata"), "--no-download"])
    assert tree(plotted) == before and list(tmp_path.iterdir()) == []


def test_a_labels_file_where_the_images_go_names_both_magic_numbers(tmp_path):
    data = write_mnist(tmp_path / "data")
    raw = data / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes())
    message = refused(ae_train.main, ["--data-dir", str(data), "--out-dir", str(tmp_path / "run"), *FAST])
    assert message == (f"error: {raw / 'train-images-idx3-ubyte'} has IDX magic number 0x00000801, as in a labels "
                       f"file; images need 0x00000803 (uint8, N x 28 x 28)")
    assert not (tmp_path / "run").exists()


def test_a_symbolic_link_loop_is_named_as_such(tmp_path, data, plotted):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cause = "too many levels of symbolic links (a symbolic link loop)"
    assert refused(ae_train.main, ["--data-dir", str(data), "--out-dir", str(loop), *FAST]) == \
        f"error: cannot write to output folder {loop}: {cause}"
    assert refused(ae_train.main, ["--data-dir", str(data), "--out-dir", str(loop / "run"), *FAST]) == \
        f"error: cannot write to output folder {loop / 'run'}: {cause}"
    assert refused(ae_train.main, ["--data-dir", str(loop), "--out-dir", str(tmp_path / "run"), *FAST]) == \
        f"error: cannot read {loop / 'MNIST' / 'raw' / 'train-images-idx3-ubyte'}: {cause}"
    assert refused(ae_plot.main, ["--checkpoint", str(loop), "--out-dir", str(tmp_path / "look"),
                                  "--no-download"]) == f"error: cannot read checkpoint {loop}: {cause}"
    assert refused(ae_plot.main, ["--checkpoint", str(plotted / "checkpoints" / "last.pt"), "--out-dir", str(loop),
                                  "--data-dir", str(data), "--no-download"]) == \
        f"error: cannot write to output folder {loop}: {cause}"
    (tmp_path / "file").write_text("not a folder")
    assert refused(ae_train.main, ["--data-dir", str(data), "--out-dir", str(tmp_path / "file"), *FAST]) == \
        f"error: cannot write to output folder {tmp_path / 'file'}: a file is there, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "loop"] and loop.is_symlink()


def test_training_into_the_records_of_a_run_without_its_checkpoint_is_refused(tmp_path, data, plotted):
    """results/ae/ holds history.json, run.json and latent_codes.npz but no checkpoint: a new run
    there would replace them; it needs --overwrite."""
    import shutil

    out = tmp_path / "ae"
    shutil.copytree(plotted, out)
    shutil.rmtree(out / "checkpoints")
    before = tree(out)
    assert refused(ae_train.main, ["--data-dir", str(data), "--out-dir", str(out), *FAST, *SMALL]) == (
        f"error: {out} holds history.json, run.json, latent_codes.npz of an earlier run but no checkpoint: pass "
        f"--overwrite to replace them, or use another --out-dir")
    assert tree(out) == before
    ae_train.main(["--data-dir", str(data), "--out-dir", str(out), *FAST, *SMALL, "--overwrite"])
    assert (out / "checkpoints" / "last.pt").is_file()


def test_a_three_step_epoch_logs_its_training_scalars_to_tensorboard(tmp_path, data):
    """96 images in batches of 32 are 3 steps, fewer than --log-every 50: the loop reports after
    its last step, so TensorBoard still gets the training curves (step 3 of the epoch)."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    vae_train.main(["--data-dir", str(data), "--out-dir", str(out), *FAST, *SMALL, "--tensorboard",
                    "--log-every", "50", "--epochs", "2"])
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for term in ("loss", "recon", "kl", "neg_elbo"):
        assert [e.step for e in events.Scalars(f"train/{term}")] == [3, 6]


def test_plot_and_the_explorer_refuse_models_trained_on_other_data(tmp_path, data):
    from experiments.explore.models import ProjectError, load_explorer

    run = tmp_path / "binary"
    vae_train.main(["--data-dir", str(data), "--out-dir", str(run), *FAST, *SMALL, "--binarize", "dynamic"])
    ckpt = run / "checkpoints" / "last.pt"
    from variational_autoencoder import plot as vae_plot

    assert refused(vae_plot.main, ["--out-dir", str(run), "--data-dir", str(data), "--no-download",
                                   "--dataset", "fashion-mnist"]) == \
        f"error: --dataset fashion-mnist: {ckpt} was trained on mnist; drop the flag"
    assert not (run / "figures").exists()
    shipped = ROOT / "results" / "models"
    with pytest.raises(ProjectError) as refused_explorer:
        load_explorer(shipped / "ae.pt", ckpt, shipped / "cvae.pt")
    assert str(refused_explorer.value) == ("the checkpoints were trained on different data (--ae with --binarize none, "
                                           "--vae with --binarize dynamic, --cvae with --binarize none)")


def test_plot_draws_a_binarized_model_on_the_binary_test_set(tmp_path, data, monkeypatch):
    from common import model_figures
    from variational_autoencoder import plot as vae_plot

    run = tmp_path / "binary"
    vae_train.main(["--data-dir", str(data), "--out-dir", str(run), *FAST, *SMALL, "--binarize", "dynamic"])
    seen = []
    real = model_figures.make_figures
    monkeypatch.setattr(model_figures, "make_figures", lambda model, history, x, *a, **k: seen.append(x) or real(
        model, history, x, *a, **k))
    vae_plot.main(["--out-dir", str(run), "--data-dir", str(data), "--no-download"])
    assert set(torch.unique(seen[0]).tolist()) == {0.0, 1.0}
