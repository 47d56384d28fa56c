"""What a run ran on, for run.json: versions, device, CPU model, threads and the git commit.

Best-effort throughout: a missing file or tool gives None, never an exception, since describing a
run must not break it.
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


def cpuinfo_field(name: str) -> str | None:
    """The value of the first `name : value` line of /proc/cpuinfo, or None (no such line, not Linux)."""
    try:
        with CPUINFO.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model_name() -> str | None:
    """The CPU's marketing name, e.g. "Intel(R) Xeon(R) Platinum 8480+", or None where unknown."""
    return cpuinfo_field("model name") or platform.processor() or None


def git_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """{"commit": sha, "dirty": tracked files changed} for the checkout holding `path` (untracked
    outputs do not count), or None outside a checkout or when git is missing or fails."""
    where = Path(path) if Path(path).is_dir() else Path(path).parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # `git status` must not take index.lock from a running git
    out = []
    for args in (("rev-parse", "--verify", "HEAD"), ("status", "--porcelain", "--untracked-files=no")):
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=5,
                                  env=env, check=False)
        except (OSError, subprocess.SubprocessError):  # OSError: git not installed
            return None
        if done.returncode != 0:
            return None
        out.append(done.stdout.strip())
    return {"commit": out[0], "dirty": bool(out[1])}


def describe_run_environment(device: torch.device, repo_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Everything needed to tell two runs' machines apart, as JSON-ready plain types. On a CPU,
    torch_cpu_capability names the vector kernels torch runs (e.g. AVX512, or AVX2 where capped)."""
    try:  # from the package metadata: importing torchvision takes about 2 s
        torchvision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        torchvision = None
    return {
        "python": platform.python_version(), "torch": str(torch.__version__), "torchvision": torchvision,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "git": git_state(repo_path) if repo_path else None,
    }
