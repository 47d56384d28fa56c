"""Device and precision choice: the training loop's concern, never the model's."""

from __future__ import annotations

import contextlib

import torch

from common.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


def get_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must be available."""
    base = name.split(":")[0]
    if base not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; choose from {', '.join(DEVICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but CUDA is not available")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{name!r} is not a device name; choose from {', '.join(DEVICES)}") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if base == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' requested but MPS is not available")
    return device


def bf16_is_fast(device: torch.device) -> bool:
    """True where bfloat16 matmuls/convs run natively: CUDA with bf16 support, or a CPU with
    AVX-512 BF16 or AMX. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
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
