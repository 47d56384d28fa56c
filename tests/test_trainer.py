"""Hard to break: train.py and plot.py refuse every bad input with one line, exit status != 0, no traceback
and no earlier file touched; Ctrl-C, SIGTERM and SIGKILL leave a checkpoint that --resume continues
exactly as if the run had never stopped; every checkpoint loads with weights_only=True.

The command-line cases run the real scripts as subprocesses. Starting one costs over a second of
CPU (importing torch), so one module-scoped fixture, `background`, starts the selected ones a few
at a time, together with the training runs that the signal tests stop; each case is still its own
test, with its own folder, and the checks (and any in-process --resume) happen in the test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_idx, write_mnist

from common import run as trainer
from common.checkpoint import save_checkpoint
from common.data import DataError, load_split
from common.options import MAX_EPOCHS
from vanila_autoencoder import train as ae_train
from variational_autoencoder import train as vae_train

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "ae/train": ROOT / "vanila_autoencoder" / "train.py",
    "ae/plot": ROOT / "vanila_autoencoder" / "plot.py",
    "vae/train": ROOT / "variational_autoencoder" / "train.py",
    "vae/plot": ROOT / "variational_autoencoder" / "plot.py",
}
TRAIN = {"ae/train": ae_train, "vae/train": vae_train}
FAST = ["--no-download", "--device", "cpu", "--batch-size", "32", "--epochs", "1"]
SMALL = ["--filters", "8,8,8,8"]  # small networks: checkpoints that are quick to write and copy
TIMEOUT = 180  # seconds; generous, the machine is shared
# One thread per subprocess: the models are tiny and several subprocesses run at once on a machine
# with few cores, where spinning OpenMP threads would slow everything down.
# This tree first on the path: a script run by its path (python vanila_autoencoder/train.py) would
# otherwise import common/ from wherever the project is installed, which may be another checkout.
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

# Run as root, chmod 000 does not stop reads (CAP_DAC_OVERRIDE). This prefix drops that capability
# (and CAP_DAC_READ_SEARCH) from the bounding set, then execs the real command, which therefore
# runs with ordinary file permissions.
DROP_FILE_CAPS = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH\n"
    "    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP\n"
    "        sys.exit('cannot drop capability %d: errno %d' % (cap, ctypes.get_errno()))\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


def as_unprivileged(cmd: list[str]) -> list[str]:
    """`cmd` (a Python command) such that file permissions apply to it, even when we are root."""
    if os.geteuid() != 0:
        return cmd
    assert cmd[0] == sys.executable
    return [sys.executable, "-c", DROP_FILE_CAPS, *cmd[1:]]


def permissions_apply(tmp: Path) -> bool:
    """Whether a chmod 000 file is really unreadable to an `as_unprivileged` command here."""
    probe = tmp / "probe"
    probe.write_text("secret")
    probe.chmod(0)
    try:
        cmd = as_unprivileged([sys.executable, "-c", f"open({str(probe)!r}).read()"])
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode != 0
    finally:
        probe.chmod(0o600)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def is_plain(obj: object) -> bool:
    """Only tensors and plain Python values, all the way down."""
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and is_plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(is_plain(v) for v in obj)
    return obj is None or isinstance(obj, (torch.Tensor, str, int, float, bool))


def load_safely(path: Path) -> dict:
    state = torch.load(path, weights_only=True)
    assert is_plain(state), f"{path} holds more than tensors and plain values"
    return state


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<t>/data (96 train, 40 test images), <t>/ae and <t>/vae: one epoch of each model."""
    root = tmp_path_factory.mktemp("template")
    write_mnist(root / "data")
    for name, train in (("ae", ae_train), ("vae", vae_train)):
        train.main(["--data-dir", str(root / "data"), "--out-dir", str(root / name), *FAST, *SMALL])
    (root / "notes.txt").write_text("a file that is neither a checkpoint nor a folder\n")
    return root


# ----------------------------------------------------------------------------------------------
# bad input: the cases of issue 5, point 3


def train_args(sb: Path, *extra: str, out: str = "new") -> list[str]:
    return ["--data-dir", str(sb / "data"), "--out-dir", str(sb / out), *FAST, *extra]


def plot_args(sb: Path, *extra: str, out: str = "ae") -> list[str]:
    return ["--data-dir", str(sb / "data"), "--out-dir", str(sb / out), "--no-download", "--device", "cpu", *extra]


RAW = Path("data/MNIST/raw")
TRAIN_IMAGES = RAW / "train-images-idx3-ubyte"


def truncated_idx(sb: Path) -> list[str]:
    path = sb / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:-100])
    return train_args(sb)


def bad_magic_idx(sb: Path) -> list[str]:
    path = sb / TRAIN_IMAGES
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    return train_args(sb)


def wrong_image_size(sb: Path) -> list[str]:
    write_idx(sb / TRAIN_IMAGES, np.zeros((96, 32, 32), np.uint8))
    return train_args(sb)


def read_only_out_dir(sb: Path) -> list[str]:
    (sb / "locked").mkdir()
    return train_args(sb, out="locked/run")


def not_a_checkpoint(sb: Path) -> list[str]:
    return plot_args(sb, "--checkpoint", str(sb / "notes.txt"))


def truncated_checkpoint(sb: Path) -> list[str]:
    path = sb / "ae" / "checkpoints" / "last.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return plot_args(sb)


class RunsCodeWhenUnpickled:
    """Pickles as a call to os.mkdir: a full (unsafe) torch.load would create the folder."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return os.mkdir, (self.path,)


def unsafe_pickle(sb: Path) -> list[str]:
    path = sb / "evil.pt"
    torch.save({"kind": "ae", "config": {}, "model": RunsCodeWhenUnpickled(sb / "pwned")}, path)
    return plot_args(sb, "--checkpoint", str(path))


# ----------------------------------------------------------------------------------------------
# bad input, round two (issue 15): absurd flags, doctored checkpoints, unbounded inputs, a full disk


def doctored(sb: Path, change: Callable[[dict], None], out: str = "ae") -> Path:
    """Apply `change` to <sb>/<out>/checkpoints/last.pt (loadable, well-typed, but odd)."""
    path = sb / out / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return path


def nan_weights(state: dict) -> None:
    state["model"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in state["model"].items()}


def one_inf_weight(state: dict) -> None:
    state["model"]["decoder.fc.weight"][5, 1] = float("inf")


def huge_sparse_idx(sb: Path) -> list[str]:
    """2,000,000 images announced and present (1.6 GB, sparse). Outside the sandbox, whose files
    the test reads whole."""
    data = sb.parent / f"{sb.name}-data"
    shutil.copytree(sb / "data", data)
    with (data / "MNIST/raw/train-images-idx3-ubyte").open("r+b") as f:
        f.seek(4)
        f.write((2_000_000).to_bytes(4, "big"))
        f.truncate(16 + 2_000_000 * 28 * 28)
    return train_args(sb) + ["--data-dir", str(data)]


# Runs the script with a file size limit, as a nearly full disk would: past `limit` bytes a write
# fails (EFBIG, "File too large") instead of the process being killed.
FILE_SIZE_LIMIT = (
    "import resource, runpy, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def half_the_checkpoint(sb: Path) -> list[str]:
    return ["-c", FILE_SIZE_LIMIT, str((sb / "ae/checkpoints/last.pt").stat().st_size // 2)]


@dataclass(frozen=True)
class Case:
    id: str
    script: str  # key of SCRIPTS
    args: Callable[[Path], list[str]]  # sandbox -> arguments; may first damage files in the sandbox
    expect: str  # a phrase of the one-line message
    locked: tuple[tuple[str, int], ...] = ()  # (sandbox path, mode) applied just for the run
    wrapper: Callable[[Path], list[str]] | None = None  # sandbox -> python arguments that run the script


CASES = [
    Case("data-missing", "ae/train", lambda sb: train_args(sb) + ["--data-dir", str(sb / "nowhere")],
         "nowhere/MNIST/raw"),
    Case("data-unreadable", "ae/train", train_args, "Permission denied", locked=((str(RAW), 0),)),
    Case("idx-truncated", "ae/train", truncated_idx, "truncated"),
    Case("idx-bad-magic", "ae/train", bad_magic_idx, "has IDX magic number 0x12340803; images need 0x00000803"),
    Case("idx-wrong-image-size", "ae/train", wrong_image_size, "holds images of shape (32, 32); expected 28x28"),
    Case("epochs-zero", "ae/train", lambda sb: train_args(sb, "--epochs", "0"), "argument --epochs"),
    Case("batch-size-negative", "vae/train", lambda sb: train_args(sb, "--batch-size", "-5"),
         "argument --batch-size"),
    Case("lr-zero", "ae/train", lambda sb: train_args(sb, "--lr", "0"), "argument --lr"),
    Case("beta-negative", "vae/train", lambda sb: train_args(sb, "--beta", "-1"), "argument --beta"),
    Case("dataset-unknown", "ae/train", lambda sb: train_args(sb, "--dataset", "cifar10"), "argument --dataset"),
    Case("device-unknown", "vae/train", lambda sb: train_args(sb, "--device", "tpu"), "argument --device"),
    Case("out-dir-under-a-file", "ae/train", lambda sb: train_args(sb, out="notes.txt/run"),
         "cannot write to output folder"),
    Case("out-dir-read-only", "ae/train", read_only_out_dir, "Permission denied", locked=(("locked", 0o555),)),
    Case("last-pt-exists", "ae/train", lambda sb: train_args(sb, out="ae"), "pass --resume"),
    Case("resume-missing", "ae/train", lambda sb: train_args(sb, "--resume", "--epochs", "2"),
         "checkpoint not found"),
    Case("resume-other-kind", "ae/train", lambda sb: train_args(sb, "--resume", "--epochs", "2", out="vae"),
         "holds a variational autoencoder"),
    Case("resume-latent-dim", "ae/train",
         lambda sb: train_args(sb, "--resume", "--epochs", "2", "--latent-dim", "5", out="ae"),
         "--latent-dim 5 contradicts"),
    Case("resume-filters", "vae/train",
         lambda sb: train_args(sb, "--resume", "--epochs", "2", "--filters", "16,16,16,16", out="vae"),
         "--filters (16, 16, 16, 16) contradicts"),
    # the largest --lr there may be: the VAE's log-variance heads step by 10, exp() overflows at step 2
    Case("nan-loss", "vae/train", lambda sb: train_args(sb, "--overwrite", "--lr", "10", "--precision", "fp32",
                                                         *SMALL, out="vae"),
         "NaN or infinite at epoch 1, step 2"),
    Case("plot-checkpoint-missing", "vae/plot", lambda sb: plot_args(sb, "--checkpoint", str(sb / "none.pt")),
         "checkpoint not found"),
    Case("plot-not-a-checkpoint", "ae/plot", not_a_checkpoint, "not a checkpoint"),
    Case("plot-truncated", "ae/plot", truncated_checkpoint, "truncated"),
    Case("plot-ae-to-vae", "vae/plot", lambda sb: plot_args(sb, out="ae"), "holds an autoencoder"),
    Case("plot-vae-to-ae", "ae/plot", lambda sb: plot_args(sb, out="vae"), "holds a variational autoencoder"),
    Case("plot-unsafe-pickle", "ae/plot", unsafe_pickle, "could run code"),
    Case("plot-data-missing", "vae/plot", lambda sb: plot_args(sb, "--data-dir", str(sb / "nowhere"), out="vae"),
         "nowhere/MNIST/raw"),
    Case("plot-out-dir-under-a-file", "ae/plot",
         lambda sb: plot_args(sb, "--checkpoint", str(sb / "ae/checkpoints/last.pt"), out="notes.txt/x"),
         "cannot write to output folder"),
    # issue 15
    Case("seed-huge", "ae/train", lambda sb: train_args(sb, "--seed", str(10**30)), "argument --seed"),
    Case("seed-float", "vae/train", lambda sb: train_args(sb, "--seed", "1e30"), "argument --seed"),
    Case("epochs-huge", "ae/train", lambda sb: train_args(sb, "--epochs", str(10**12)), "argument --epochs"),
    Case("latent-dim-huge", "vae/train", lambda sb: train_args(sb, "--latent-dim", str(10**9)),
         "argument --latent-dim"),
    Case("idx-huge-sparse", "ae/train", huge_sparse_idx, "announces 2,000,000 images; at most 1,000,000 are read"),
    Case("plot-nan-weights", "ae/plot", lambda sb: doctored(sb, nan_weights) and plot_args(sb),
         "weight encoder.convs.0.0.weight holds NaN or infinite values"),
    Case("plot-one-inf-weight", "vae/plot", lambda sb: doctored(sb, one_inf_weight, "vae") and plot_args(sb, out="vae"),
         "weight decoder.fc.weight holds NaN or infinite values"),
    Case("plot-latent-dim-huge", "ae/plot",
         lambda sb: doctored(sb, lambda st: st["config"].update(latent_dim=10**9)) and plot_args(sb),
         "latent_dim must be an integer from 1 to 1024, got 1000000000"),
    Case("plot-other-image-size", "vae/plot",
         lambda sb: doctored(sb, lambda st: st["config"].update(image_size=32), "vae") and plot_args(sb, out="vae"),
         "is for 1-channel 32x32 images"),
    Case("plot-malformed-history", "ae/plot",
         lambda sb: doctored(sb, lambda st: st.update(history=[{"epoch": 1, "test_loss": "low"}])) and plot_args(sb),
         "history entry 0 is not a dict of named numbers"),
    Case("resume-batch-size-zero", "ae/train",
         lambda sb: doctored(sb, lambda st: st["train"].update(batch_size=0)) and train_args(
             sb, "--resume", "--epochs", "2", out="ae"),
         "invalid training settings: batch_size must be an integer from 1 to 1000000, got 0"),
    Case("resume-nan-weights", "vae/train",
         lambda sb: doctored(sb, nan_weights, "vae") and train_args(sb, "--resume", "--epochs", "2", out="vae"),
         "holds NaN or infinite values"),
    Case("disk-full-checkpoint", "ae/train", lambda sb: train_args(sb, "--resume", "--epochs", "2", out="ae"),
         "last.pt: File too large; training stopped and ", wrapper=half_the_checkpoint),
]


@dataclass
class Outcome:
    returncode: int = 0
    stderr: str = ""
    before: dict[str, str] | None = None  # file hashes in the sandbox before the run
    after: dict[str, str] | None = None
    skipped: str = ""  # why the case cannot run here
    error: str = ""  # what went wrong in the harness (a stopped training that did not start, ...)


def guarded(job: Callable[..., Outcome], *args: object) -> Outcome:
    """Run `job` in a worker thread; a failure of the harness becomes that one test's failure."""
    try:
        return job(*args)
    except Exception:  # noqa: BLE001 - reported by the test that reads this outcome
        return Outcome(error=traceback.format_exc())


def run_case(case: Case, template: Path, sandbox: Path, unprivileged_ok: bool) -> Outcome:
    if case.locked and not unprivileged_ok:
        return Outcome(skipped="running as root and unable to drop CAP_DAC_OVERRIDE: chmod 000 cannot make "
                               "a path unreadable here")
    shutil.copytree(template, sandbox)
    wrapper = case.wrapper(sandbox) if case.wrapper else []
    cmd = [sys.executable, *wrapper, str(SCRIPTS[case.script]), *case.args(sandbox)]
    before = snapshot(sandbox)
    for rel, mode in case.locked:
        (sandbox / rel).chmod(mode)
    try:
        done = subprocess.run(as_unprivileged(cmd) if case.locked else cmd, cwd=sandbox, capture_output=True,
                              text=True, timeout=TIMEOUT, env=ENV)
    finally:
        for rel, _ in case.locked:
            (sandbox / rel).chmod(0o755)
    return Outcome(done.returncode, done.stderr, before, snapshot(sandbox))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_cleanly(case: Case, background: dict[str, Outcome], background_root: Path):
    out = background[case.id]
    assert not out.error, out.error
    if out.skipped:
        pytest.skip(out.skipped)
    assert out.returncode > 0, out.stderr  # > 0: an exit status, not killed by a signal
    assert "Traceback" not in out.stderr, out.stderr
    assert case.expect in last_line(out.stderr) and "error:" in last_line(out.stderr), out.stderr
    assert out.after == out.before, "files were changed, created or removed"
    assert not (background_root / case.id / "pwned").exists(), "loading the checkpoint ran code from it"


def test_data_path_that_is_a_folder_is_named(tmp_path):
    root = write_mnist(tmp_path, n_train=8, n_test=4)
    image_file = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    image_file.unlink()
    image_file.mkdir()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is not a regular file"):
        load_split(root, "mnist", "test", download=False)


def test_resuming_a_checkpoint_without_training_state_is_refused(tmp_path, template):
    """Model weights alone (as other tools may save them) cannot be resumed: one line, no change."""
    out = tmp_path / "run"
    shutil.copytree(template / "ae", out)
    path = out / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    save_checkpoint(path, {key: state[key] for key in ("kind", "config", "model")})
    before = snapshot(out)
    with pytest.raises(SystemExit) as stopped:
        ae_train.main(["--out-dir", str(out), "--resume", "--epochs", "2"])
    assert str(stopped.value.code).startswith(f"error: {path} holds model weights only")
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------------------
# training runs stopped by SIGINT, SIGTERM, SIGKILL


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = TIMEOUT) -> str:
    """'' once `path` exists; else why not (and the process is stopped)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            return f"training ended before writing {path}: {proc.communicate()[1]}"
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            return f"no {path} after {timeout} s"
        time.sleep(0.02)
    return ""


# Kills the process at the worst moment: the second checkpoint is completely written to its
# temporary file, but not yet renamed over last.pt.
KILL_BEFORE_RENAME = (
    "import os, runpy, signal, sys\n"
    "real_replace = os.replace\n"
    "def replace(src, dst):\n"
    "    if str(dst).endswith('last.pt') and os.path.exists(dst):\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "    real_replace(src, dst)\n"
    "os.replace = replace\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@dataclass(frozen=True)
class Stop:
    id: str
    script: str  # key of TRAIN
    signum: int
    extra: tuple[str, ...] = tuple(SMALL)  # more train.py flags
    wrapper: str = ""  # Python code that runs the script itself (sys.argv[1:]); empty: run it directly
    delay: float = 0.0  # the signal goes this long after epoch 1's checkpoint appears (upper bound, random)


STOPS = {stop.id: stop for stop in [
    Stop("sigint", "vae/train", signal.SIGINT),
    Stop("sigterm", "ae/train", signal.SIGTERM),
    Stop("sigkill-while-renaming", "ae/train", signal.SIGKILL, wrapper=KILL_BEFORE_RENAME),
    # the default (bigger) network: writing its checkpoint takes a noticeable part of each epoch
    Stop("sigkill-any-time", "ae/train", signal.SIGKILL, extra=(), delay=0.5),
]}


def run_stop(stop: Stop, template: Path, folder: Path) -> Outcome:
    """train.py for (practically) ever in the background, stopped by `stop.signum` once epoch 1's
    checkpoint is there. The run's --out-dir is <folder>/run."""
    out = folder / "run"
    folder.mkdir()
    cmd = [sys.executable, *(["-c", stop.wrapper] if stop.wrapper else []), str(SCRIPTS[stop.script]),
           "--data-dir", str(template / "data"), "--out-dir", str(out), *FAST, "--epochs", str(MAX_EPOCHS), *stop.extra]
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    if stop.wrapper:  # it kills itself
        _, stderr = proc.communicate(timeout=TIMEOUT)
        return Outcome(proc.returncode, stderr)
    error = wait_for(out / "checkpoints" / "last.pt", proc)
    if error:
        return Outcome(error=error)
    time.sleep(float(np.random.default_rng().uniform(0.0, stop.delay)))
    proc.send_signal(stop.signum)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        return Outcome(proc.returncode, stderr, error=f"did not stop within {TIMEOUT} s of the signal")
    return Outcome(proc.returncode, stderr)


@pytest.fixture(scope="module")
def background_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/<id>: the folder of each background case or stopped training."""
    return tmp_path_factory.mktemp("background")


@pytest.fixture(scope="module")
def background(request: pytest.FixtureRequest, template: Path, background_root: Path) -> dict[str, Outcome]:
    """Run the selected CLI cases and stopped trainings, a few subprocesses at a time."""
    wanted = set()
    for item in request.session.items:
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec"):
            wanted |= {value.id for value in item.callspec.params.values() if isinstance(value, (Case, Stop))}
    root = background_root
    cases = [case for case in CASES if case.id in wanted]
    unprivileged_ok = permissions_apply(root) if any(case.locked for case in cases) else True
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 1) as pool:
        futures = {stop.id: pool.submit(guarded, run_stop, stop, template, root / stop.id)
                   for stop in STOPS.values() if stop.id in wanted}
        futures |= {case.id: pool.submit(guarded, run_case, case, template, root / case.id, unprivileged_ok)
                    for case in cases}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("stop", [STOPS["sigint"], STOPS["sigterm"]], ids=["sigint", "sigterm"])
def test_signal_during_training_exits_cleanly_and_resume_works(stop: Stop, background: dict[str, Outcome],
        background_root: Path):
    run, out = background[stop.id], background_root / stop.id / "run"
    assert not run.error, run.error
    assert run.returncode == 128 + stop.signum, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    last = last_line(run.stderr)
    assert last.startswith(f"interrupted by {signal.Signals(stop.signum).name} during epoch "), run.stderr
    assert last.endswith(f"continue with: --resume --out-dir {out}")
    ckpt = out / "checkpoints" / "last.pt"
    done = load_safely(ckpt)["epoch"]
    assert f"last.pt still holds epoch {done};" in last
    # the run planned MAX_EPOCHS epochs; --resume --epochs N sets a new total (for equivalence see below)
    resumed = TRAIN[stop.script].main(["--out-dir", str(out), "--resume", "--epochs", str(done + 1)])
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, done + 2))
    assert load_safely(ckpt)["epoch"] == done + 1


@pytest.mark.parametrize("stop", [STOPS["sigkill-while-renaming"], STOPS["sigkill-any-time"]],
                         ids=["while-renaming", "any-time"])
def test_sigkill_never_corrupts_last_pt_and_resume_works(stop: Stop, background: dict[str, Outcome],
        background_root: Path):
    run, out = background[stop.id], background_root / stop.id / "run"
    assert not run.error, run.error
    assert run.returncode == -signal.SIGKILL, run.stderr
    ckpt = out / "checkpoints" / "last.pt"
    done = load_safely(ckpt)["epoch"]
    if stop.wrapper:
        assert done == 1 and list(ckpt.parent.glob(".last.pt.*.tmp")), "the kill did not hit the rename"
    resumed = TRAIN[stop.script].main(["--out-dir", str(out), "--resume", "--epochs", str(done + 1)])
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, done + 2))
    assert load_safely(ckpt)["epoch"] == done + 1


@pytest.mark.parametrize("train", [ae_train, vae_train], ids=["ae", "vae"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_run(tmp_path, tiny_mnist, monkeypatch, capsys, train):
    """--epochs 3 straight vs --epochs 3 stopped by a real SIGINT right after epoch 1's checkpoint,
    then --resume: same history length, same losses, the same weights bit for bit (CPU, fixed seed).
    The learning-rate schedule spans --epochs, so both runs must plan the same number of epochs."""
    args = ["--data-dir", str(tiny_mnist), *FAST, *SMALL, "--seed", "3", "--epochs", "3"]
    straight = train.main([*args, "--out-dir", str(tmp_path / "a")])

    def save_then_interrupt(path: Path, state: dict) -> Path:
        written = save_checkpoint(path, state)
        if state["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # lands while the loop runs, as Ctrl-C would
        return written

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(SystemExit) as stopped:
        train.main([*args, "--out-dir", str(tmp_path / "b")])
    assert stopped.value.code == 128 + signal.SIGINT
    assert "interrupted by SIGINT during epoch 2; " in capsys.readouterr().err
    monkeypatch.undo()
    resumed = train.main(["--out-dir", str(tmp_path / "b"), "--resume"])

    assert len(straight["history"]) == len(resumed["history"]) == 3
    for a, b in zip(straight["history"], resumed["history"]):
        assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    a, b = load_safely(straight["checkpoint"]), load_safely(resumed["checkpoint"])
    assert a["epoch"] == b["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ----------------------------------------------------------------------------------------------
# NaN: stop with the epoch and step, keep the last good checkpoint


def poisoned(loss_fn: Callable, bad_step: int | None, in_eval: bool = False) -> Callable:
    """loss_fn whose loss is NaN at training step `bad_step` (counted from 1 over the run) or,
    with in_eval, whenever the model is evaluated."""
    steps = {"train": 0}

    def nan_loss_fn(model, batch):
        terms = loss_fn(model, batch)
        if model.training:
            steps["train"] += 1
            bad = steps["train"] == bad_step
        else:
            bad = in_eval
        return {**terms, "loss": terms["loss"] * float("nan")} if bad else terms

    return nan_loss_fn


@pytest.mark.parametrize("in_eval,expect", [
    (False, "the loss became NaN or infinite at epoch 2, step 2;"),  # 3 steps per epoch
    (True, "the test loss became nan after epoch 2, step 3 (its last);"),
], ids=["train-step", "test-loss"])
def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
        tmp_path, tiny_mnist, monkeypatch, in_eval, expect):
    out = tmp_path / "run"
    args = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), *FAST, *SMALL]
    ae_train.main(args)
    before = snapshot(out)
    monkeypatch.setattr(ae_train, "loss_fn", poisoned(ae_train.loss_fn, None if in_eval else 2, in_eval))
    with pytest.raises(SystemExit) as stopped:
        ae_train.main([*args, "--resume", "--epochs", "3"])
    message = str(stopped.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert expect in message and "last.pt still holds epoch 1" in message
    assert snapshot(out) == before
