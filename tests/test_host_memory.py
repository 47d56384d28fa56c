"""common/host_memory.py: freed tensor memory stays in the process (no page faults on reuse); the
scripts leave without a last garbage collection."""

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from common.host_memory import skip_exit_collection

# Five training steps of the default VAE at batch 128, after two that warm up, in a fresh
# process (mallopt's settings last for the process): the minor page faults of those five steps.
PROGRAM = """
import resource, sys, torch
from common.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
from variational_autoencoder.model import VAE, VAEConfig
from variational_autoencoder.train import loss_fn
torch.manual_seed(0)
model = VAE(VAEConfig())
optimizer = torch.optim.Adam(model.parameters())
batch = (torch.rand(128, 1, 28, 28).round(), torch.zeros(128, dtype=torch.long))
def step():
    optimizer.zero_grad()
    loss_fn(model, batch)["loss"].backward()
    optimizer.step()
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def step_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True).stdout
    kept, count = out.split()
    return kept == "True", int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    kept, with_keep = step_faults("keep")
    _, without = step_faults("plain")
    assert kept
    # measured on the development machine: about 158,000 faults without, 3,100 with
    assert without > 10 * with_keep


def test_only_a_cpu_program_changes_the_allocator(monkeypatch):
    import torch

    from common import host_memory

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    assert host_memory.keep_freed_memory_on(torch.device("meta")) is False and calls == []
    assert host_memory.keep_freed_memory_on(torch.device("cuda")) is False and calls == []
    assert host_memory.keep_freed_memory_on(torch.device("cpu")) is True and calls == [1]


def test_skip_exit_collection_takes_every_live_object_out_of_the_collectors_reach():
    try:
        skip_exit_collection()
        assert gc.get_freeze_count() > 1000  # torch alone leaves far more
        assert sum(gc.get_count()) < 100  # the generations a collection walks are (nearly) empty
    finally:
        gc.unfreeze()


def test_train_scripts_skip_the_exit_collection(tmp_path, tiny_mnist):
    """Run as scripts, train.py exits through skip_exit_collection (a child process reports its
    freeze count from an atexit hook, which runs before the interpreter's last collection)."""
    root = Path(__file__).resolve().parents[1]
    for folder in ("vanila_autoencoder", "variational_autoencoder"):
        code = ("import atexit, gc, runpy, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count())); "
                f"sys.argv = ['train.py', '--data-dir', {str(tiny_mnist)!r}, '--out-dir', {str(tmp_path / folder)!r}, "
                "'--epochs', '1', '--device', 'cpu', '--no-download']; "
                f"runpy.run_path({str(root / folder / 'train.py')!r}, run_name='__main__')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300,
                             check=False)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout.split("frozen")[-1]) > 1000
