"""Helpers for the programs that train several runs: decide what each run needs, run them in parallel.

Each run is a `python -m <package>.train ...` subprocess (the same code path as a user's run);
on a CPU several single-thread runs at once beat one after the other (small convolutions scale
poorly across threads: on 2 cores two one-thread runs train 1.2-1.3x the images of one run on 2
threads; `python -m experiments.bench --choices` measures it).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

from common.checkpoint import check_resumable, load_checkpoint
from common.errors import Signalled, TrainingError
from common.loop import TrainConfig
from common.registry import MODELS, model_classes


def default_settings(kind: str, **given: object) -> dict[str, object]:
    """What train.py records for a run of `kind` started with its defaults and the flags in `given`
    (field name -> value): every model-config field and every training setting that changes what
    is computed, not the runtime ones (device, out_dir, ...) unless given. For
    train_flags(expected=...), so that a study reuses only a run it would have trained itself."""
    _, config_cls = model_classes(kind)
    fields = [f for cls in (config_cls, TrainConfig) for f in dataclasses.fields(cls) if "help" in f.metadata]
    unknown = set(given) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"not a setting of train.py: {', '.join(sorted(unknown))}")
    return {**{f.name: f.default for f in fields if not f.metadata.get("runtime")}, **given}


def saved_settings(state: dict[str, object]) -> dict[str, object]:
    """A checked checkpoint's model config and training settings as train.py would rebuild them:
    the defaults of fields the file predates filled in, sequences as tuples."""
    _, config_cls = model_classes(state["kind"])
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    return {**dataclasses.asdict(config_cls(**state["config"])),
            **dataclasses.asdict(TrainConfig(**{k: v for k, v in train.items() if k in names}))}


def train_flags(ckpt: Path, epochs: int, kind: str, overwrite: bool = False,
                expected: dict[str, object] | None = None) -> list[str] | None:
    """The train.py flags that bring the run saved at `ckpt` to exactly `epochs` epochs: [] to
    start it, ["--resume"] to finish it, ["--overwrite"] to start afresh, or None when it is done.
    A run with more epochs is refused: its learning-rate schedule differs, so its numbers would
    not be comparable with the others'. So is one whose saved settings (model config or training
    settings, e.g. {"seed": 1, "conditional": True}) differ from `expected`: it is another run."""
    if overwrite:
        return ["--overwrite"]
    if not ckpt.exists():
        return []
    state = load_checkpoint(ckpt, kind=kind)
    if "epoch" not in state:
        check_resumable(ckpt, state)  # weights only: says so
    saved = saved_settings(state)
    for name, value in (expected or {}).items():
        if saved.get(name) != (tuple(value) if isinstance(value, list) else value):
            raise TrainingError(f"{ckpt} was trained with {name} {saved.get(name)!r}, not {value!r}: pass "
                                f"--overwrite to retrain it, or another --out-dir")
    done = state["epoch"]
    if done > epochs:
        raise TrainingError(f"{ckpt} has {done} epochs, more than --epochs {epochs}: the runs would not be "
                            f"comparable; pass --epochs {done} or another --out-dir")
    return None if done == epochs else ["--resume"]


def train_command(kind: str, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", f"{MODELS[kind].package}.train", *flags]


def train_module(kind: str) -> ModuleType:
    """The kind's train.py, as a module (its main(argv) and loss_fn)."""
    return importlib.import_module(f"{MODELS[kind].package}.train")


def plot_module(kind: str) -> ModuleType:
    """The kind's plot.py, as a module (its main(argv))."""
    return importlib.import_module(f"{MODELS[kind].package}.plot")


class Runs:
    """The processes `run_in_parallel` started; once `stop` is called, no new one starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._stopped = False

    def start(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen | None:
        with self._lock:
            if self._stopped:
                return None
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self._procs.append(proc)
            return proc

    def stop(self, signum: int) -> None:
        """Pass the signal on: each train.py stops as it does on Ctrl-C (between two steps, last.pt kept)."""
        with self._lock:
            self._stopped = True
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signum)


def run_relayed(name: str, cmd: list[str], env: dict[str, str], runs: Runs | None = None) -> int:
    """Run `cmd`, relaying its output line by line prefixed with `[name]`; returns its exit status
    (128 + SIGTERM if `runs` was stopped before it started)."""
    proc = (runs or Runs()).start(cmd, env)
    if proc is None:
        return 128 + signal.SIGTERM
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip():
            print(f"[{name}] {line.rstrip()}", flush=True)
    return proc.wait()


def thread_share_env(n_jobs: int) -> dict[str, str]:
    """Environment for one of `n_jobs` simultaneous runs: an equal share of the cores each."""
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def run_in_parallel(jobs: list[tuple[str, list[str]]], n_parallel: int, share_cores: bool = True) -> None:
    """Run the commands `n_parallel` at a time, output relayed with each job's name; with
    `share_cores`, each gets 1/n_parallel of the CPU threads. One failure fails the whole."""
    if not jobs:
        return
    env = thread_share_env(n_parallel) if share_cores else {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = Runs()
    with ThreadPoolExecutor(n_parallel) as pool:
        status = [(name, pool.submit(run_relayed, name, cmd, env, runs)) for name, cmd in jobs]
        try:
            for _, s in status:
                s.result()  # waits in the main thread, where SIGINT and SIGTERM arrive (exit_on_error)
        except KeyboardInterrupt as stop:
            signum = getattr(stop, "signum", signal.SIGINT)
            runs.stop(signum)  # the runs stop and print what they kept; the relays then end
            pool.shutdown(wait=True)
            raise Signalled(signum, "the training runs were stopped too, each keeping its last checkpoint") from None
    failed = [f"{name} (exit {s.result()})" for name, s in status if s.result() != 0]
    if failed:
        raise TrainingError(f"training failed: {', '.join(failed)}; see its output above")
