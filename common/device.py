"""Device and precision choice: the training loop's concern, never the model's."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from common.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


def accelerator() -> torch.device | None:
    """This machine's accelerator (CUDA, MPS, ...) if one is usable, through torch.accelerator."""
    return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None


def get_device(name: str = "auto") -> torch.device:
    """'auto': the accelerator (cuda or mps) if there is one, else cpu; an explicit device must be available."""
    base = name.split(":")[0]
    if base not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; choose from {', '.join(DEVICES)}")
    found = accelerator()
    if base == "auto":
        return torch.device(found.type) if found is not None else torch.device("cpu")
    if base != "cpu" and (found is None or found.type != base):
        raise DeviceError(f"device {base!r} requested but {base.upper()} is not available")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{name!r} is not a device name; choose from {', '.join(DEVICES)}") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                          f"device(s)")
    return device


def fork_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Fork the CPU's and the accelerator's random streams: code inside may reseed, the training stream goes on."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device], device_type=device.type)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The random state a resumed run needs: the CPU's and, on an accelerator, that device's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type != "cpu":
        state["device_type"] = device.type
        state["device"] = torch.get_device_module(device.type).get_rng_state()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what rng_state saved; an accelerator's state only on that kind of device (a CUDA run
    resumed on a CPU keeps the CPU stream)."""
    torch.set_rng_state(state["torch"])
    if device.type != "cpu" and state.get("device_type") == device.type:
        torch.get_device_module(device.type).set_rng_state(state["device"])
    elif device.type == "cuda" and "cuda" in state:  # checkpoints written before the accelerator API
        torch.cuda.set_rng_state_all(state["cuda"])


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which it has no native bf16 kernels
_ONEDNN_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def bf16_is_fast(device: torch.device) -> bool:
    """True where bfloat16 convs and matmuls run natively: CUDA with bf16, or a CPU with AVX-512 BF16 or
    AMX whose kernels are not capped below them (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA). Elsewhere
    bf16 is emulated, about ten times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        capped = (not torch.backends.cpu.get_cpu_capability().startswith("AVX512")
                  or os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() in _ONEDNN_WITHOUT_BF16)
        return native and not capped
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where bf16 is fast on this device, else 'fp32'."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise DeviceError(f"bf16 autocast is not supported on {device.type}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: convs and matmuls in bf16, reductions in fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

