"""What a run ran on: versions, device, CPU features, threads and the git commit (run.json, the benchmark).

Best-effort throughout: a missing file, tool or private torch helper gives None or False, never an
exception, since describing a run must not break it.
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
ISA_FLAGS = {"avx2": "avx2", "avx512": "avx512f", "avx512_bf16": "avx512_bf16", "amx": "amx_tile"}  # -> cpuinfo flag
ISA_NAMES = (("amx", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512", "AVX-512"), ("avx2", "AVX2"))  # best first


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first `name : value` line of /proc/cpuinfo, or None."""
    try:
        with CPUINFO.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_isa_features(flags: set[str] | None = None) -> dict[str, bool]:
    """Which of AVX2, AVX-512, AVX-512 BF16 and AMX the CPU has, from the cpuinfo `flags` if given,
    else from /proc/cpuinfo, else (macOS, Windows, ARM) from torch's own CPU dispatch."""
    if flags is None:
        line = _cpuinfo_field("flags")
        if line is None:
            capability = torch.backends.cpu.get_cpu_capability().upper()
            # private torch probes: present in recent releases, absent in older ones
            bf16, amx = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                                      "_is_amx_tile_supported"))
            avx512 = capability.startswith("AVX512")
            return {"avx2": avx512 or capability.startswith("AVX2"), "avx512": avx512,
                    "avx512_bf16": bool(bf16()) if callable(bf16) else False,
                    "amx": bool(amx()) if callable(amx) else False}
        flags = set(line.split())
    return {feature: flag in flags for feature, flag in ISA_FLAGS.items()}


def isa_summary(features: dict[str, bool]) -> str:
    """The best vector ISA in `features` as a short label: "AMX", ..., "AVX2" or "no AVX2"."""
    return next((label for feature, label in ISA_NAMES if features.get(feature, False)), "no AVX2")


def cpu_model_name() -> str | None:
    """The CPU's marketing name, e.g. "Intel(R) Xeon(R) Platinum 8480+", or None where unknown."""
    return _cpuinfo_field("model name") or platform.processor() or None


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
    """Everything needed to tell two runs' machines apart, as JSON-ready plain types."""
    features = cpu_isa_features()
    try:  # from the package metadata: importing torchvision takes about 2 s
        torchvision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        torchvision = None
    return {
        "python": platform.python_version(), "torch": str(torch.__version__), "torchvision": torchvision,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name(),
        "cpu_features": features, "cpu_isa": isa_summary(features),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "git": git_state(repo_path) if repo_path else None,
    }
