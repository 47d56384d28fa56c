"""common/speed.py: freed tensor memory stays in the process (no page faults on reuse)."""

import subprocess
import sys

import pytest

# Five training steps of the default VAE at batch 128, after two that warm up, in a fresh
# process (mallopt's settings last for the process): the minor page faults of those five steps.
PROGRAM = """
import resource, sys, torch
from common.speed import keep_freed_memory
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

    from common import speed as host_memory

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    assert host_memory.keep_freed_memory_on(torch.device("meta")) is False and calls == []
    assert host_memory.keep_freed_memory_on(torch.device("cuda")) is False and calls == []
    assert host_memory.keep_freed_memory_on(torch.device("cpu")) is True and calls == [1]
