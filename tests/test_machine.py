"""The machine description: CPU feature parsing on hand-made flag sets (experiments.bench), git state on
throwaway repos and the run record (common.machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from common import machine
from experiments import bench

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.mark.parametrize(("flags", "expected", "summary"), [
    (set(), {"avx2": False, "avx512": False, "avx512_bf16": False, "amx": False}, "no AVX2"),
    ({"sse4_2", "avx2"}, {"avx2": True, "avx512": False, "avx512_bf16": False, "amx": False}, "AVX2"),
    ({"avx2", "avx512f"}, {"avx2": True, "avx512": True, "avx512_bf16": False, "amx": False}, "AVX-512"),
    ({"avx2", "avx512f", "avx512_bf16"}, {"avx2": True, "avx512": True, "avx512_bf16": True, "amx": False},
     "AVX-512 BF16"),
    ({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"},
     {"avx2": True, "avx512": True, "avx512_bf16": True, "amx": True}, "AMX"),
])
def test_cpu_isa_features_from_flags(flags: set[str], expected: dict[str, bool], summary: str) -> None:
    features = bench.cpu_isa_features(flags)
    assert features == expected
    assert bench.isa_summary(features) == summary


def test_amx_needs_the_tile_flag() -> None:
    # amx_bf16 alone is not what we key on: AMX means tiles.
    assert bench.cpu_isa_features({"amx_bf16", "amx_int8"})["amx"] is False


def test_cpu_isa_features_of_this_machine() -> None:
    features = bench.cpu_isa_features()
    assert set(features) == {"avx2", "avx512", "avx512_bf16", "amx"}
    assert all(isinstance(v, bool) for v in features.values())


def test_cpu_isa_features_without_proc_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS and friends: torch's own dispatch level and its private probes answer instead.
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert bench.cpu_isa_features() == {"avx2": True, "avx512": True, "avx512_bf16": True, "amx": False}
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert bench.isa_summary(bench.cpu_isa_features()) == "no AVX2"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repo with one committed file, isolated from any checkout above tmp_path."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a.txt").write_text("one\n")
    git(root, "add", "a.txt")
    git(root, "commit", "-q", "-m", "first")
    return root


@needs_git
def test_git_state_clean_then_dirty(repo: Path) -> None:
    state = machine.git_state(repo)
    assert state == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    assert len(state["commit"]) == 40
    (repo / "a.txt").write_text("two\n")
    assert machine.git_state(repo) == {"commit": state["commit"], "dirty": True}


@needs_git
def test_untracked_files_are_not_dirty(repo: Path) -> None:
    (repo / "new.txt").write_text("untracked\n")
    state = machine.git_state(repo)
    assert state is not None and state["dirty"] is False


@needs_git
def test_git_state_of_a_file_and_a_subfolder(repo: Path) -> None:
    (repo / "sub").mkdir()
    commit = git(repo, "rev-parse", "HEAD")
    assert machine.git_state(repo / "sub")["commit"] == commit
    assert machine.git_state(repo / "a.txt")["commit"] == commit


@needs_git
def test_git_state_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert machine.git_state(tmp_path) is None
    assert machine.git_state(tmp_path / "does-not-exist") is None


def test_git_state_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH: None, not FileNotFoundError
    assert machine.git_state(tmp_path) is None


@needs_git
def test_describe_run_environment(repo: Path) -> None:
    info = machine.describe_run_environment(torch.device("cpu"), repo_path=repo)
    assert set(info) == {"python", "torch", "torchvision", "device", "device_name", "torch_cpu_capability",
                         "threads", "git"}
    assert json.loads(json.dumps(info)) == info
    assert info["device"] == "cpu"
    assert info["threads"] == torch.get_num_threads()
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}


def test_describe_run_environment_without_repo() -> None:
    info = machine.describe_run_environment(torch.device("cpu"))
    assert info["git"] is None
    json.dumps(info)
