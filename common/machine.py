"""What a run ran on: versions, device, CPU features, threads and the git commit (for run.json and the benchmark).

Only stdlib and torch (torchvision's version comes from its package metadata), so that any script can
record its environment without pulling in the models. Every function here is best-effort: a missing file,
tool or private torch helper gives None/False, never an exception: describing a run must not break the run.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

CPUINFO = Path("/proc/cpuinfo")
GIT_TIMEOUT_S = 5.0

# Our feature name -> the Linux cpuinfo flag that announces it.
ISA_FLAGS: dict[str, str] = {
    "avx2": "avx2",
    "avx512": "avx512f",
    "avx512_bf16": "avx512_bf16",
    "amx": "amx_tile",
}

# Best first: the first feature present names the machine.
ISA_NAMES: tuple[tuple[str, str], ...] = (
    ("amx", "AMX"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("avx512", "AVX-512"),
    ("avx2", "AVX2"),
)


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first `name : value` line of /proc/cpuinfo, or None (no file, no such line)."""
    try:
        with CPUINFO.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def _torch_isa_features() -> dict[str, bool]:
    """Where there is no /proc/cpuinfo (macOS, Windows): ask what torch's own CPU dispatch detected."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    avx512 = capability.startswith("AVX512")
    # These two are private torch helpers: present in recent releases, absent in older ones.
    bf16_probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx_probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return {
        "avx2": avx512 or capability.startswith("AVX2"),  # torch only reports the best level it uses
        "avx512": avx512,
        "avx512_bf16": bool(bf16_probe()) if callable(bf16_probe) else False,
        "amx": bool(amx_probe()) if callable(amx_probe) else False,
    }


def cpu_isa_features(flags: set[str] | None = None) -> dict[str, bool]:
    """Which of AVX2, AVX-512, AVX-512 BF16 and AMX the CPU has.

    `flags` is a set of Linux cpuinfo flags; given, the answer depends on it alone (testable).
    Left out, the flags of /proc/cpuinfo are used, or torch's detection where there are none.
    """
    if flags is None:
        line = _cpuinfo_field("flags")
        if line is None:  # not Linux, or a Linux without x86 flags (ARM names them "Features")
            return _torch_isa_features()
        flags = set(line.split())
    return {feature: flag in flags for feature, flag in ISA_FLAGS.items()}


def isa_summary(features: dict[str, bool]) -> str:
    """The best vector ISA in `features`, as one short label: "AMX", ..., "AVX2" or "no AVX2"."""
    for feature, label in ISA_NAMES:
        if features.get(feature, False):
            return label
    return "no AVX2"


def cpu_model_name() -> str | None:
    """The CPU's marketing name, e.g. "Intel(R) Xeon(R) Platinum 8480+", or None where unknown."""
    return _cpuinfo_field("model name") or platform.processor() or None


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of `git -C cwd args`, or None if git is missing, fails or hangs."""
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock under a concurrently running git.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.SubprocessError):  # OSError covers "git not installed"
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """{"commit": full sha, "dirty": tracked files changed} for the checkout holding `path`, else None.

    Untracked files do not count as dirty: outputs written inside the repo should not taint the record.
    None when git is absent, `path` is outside any checkout (or one with no commit yet), or git fails.
    """
    where = Path(path)
    if not where.is_dir():
        where = where.parent  # git -C needs a directory; a file's checkout is its folder's
    commit = _git(where, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return None
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    if status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def _torchvision_version() -> str | None:
    """torchvision's installed version, or None when it is not installed.

    Read from the package metadata, not by importing it: `import torchvision` takes about 2 s, which
    every run recording its environment would pay. (The metadata lacks the local label, e.g. "+cu130".)
    """
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_run_environment(device: torch.device, repo_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Everything needed to tell two runs' machines apart, as JSON-ready plain types."""
    features = cpu_isa_features()
    if device.type == "cuda":
        device_name: str | None = torch.cuda.get_device_name(device)
    else:
        device_name = cpu_model_name()
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion (str subclass): make it a plain str
        "torchvision": _torchvision_version(),
        "device": str(device),
        "device_name": device_name,
        "cpu_features": features,
        "cpu_isa": isa_summary(features),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "git": git_state(repo_path) if repo_path else None,
    }
