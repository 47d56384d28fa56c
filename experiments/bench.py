"""Training-step throughput: the project's default path against a plain PyTorch loop, in one run.

    python -m experiments.bench                 # CPU, both models
    python -m experiments.bench --device cuda   # the same on a GPU

The reference is the same architecture and loss trained the plain way: fp32, NCHW, eager,
batch 128, `loss.item()` every step. The default path is what train.py does: channels_last,
bf16 autocast where the hardware is fast at it (--precision auto), the real `train_one_epoch`
(no per-step sync). Rounds alternate reference / default so that machine noise hits both; the
median of the rounds is reported, and the ratio is taken within this one run.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from common.data import iterate_batches
from common.device import DEVICES, PRECISIONS, autocast, get_device, resolve_precision
from common.errors import exit_on_error
from common.loop import LossFn, evaluate, make_optimizer, train_one_epoch
from common.options import NumberRange, positive_int, seed_int
from common.trainer import TrainConfig
from variational_autoencoder import train as vae_train
from variational_autoencoder.model import VAE, VAEConfig
from vanila_autoencoder import train as ae_train
from vanila_autoencoder.model import AEConfig, Autoencoder

REFERENCE_BATCH = 128
# --steps, --warmup, --rounds: (steps + warmup) batches of random images are made up front
bench_count = NumberRange(int, 1, 1000)
# name -> (a fresh model with the default config, train.py's loss function)
MODELS: dict[str, tuple[Callable[[], nn.Module], LossFn]] = {
    "ae": (lambda: Autoencoder(AEConfig()), ae_train.loss_fn),
    "vae": (lambda: VAE(VAEConfig()), vae_train.loss_fn),
}


def labels(x: torch.Tensor) -> torch.Tensor:
    """Placeholder labels for random images (the models' losses do not read them)."""
    return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_steps(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, steps: int, lr: float) -> float:
    """The plain loop: fp32, NCHW, eager, a .item() per step as a logging loop does. Returns seconds."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    gen = torch.Generator().manual_seed(0)
    batches = iterate_batches((x, labels(x)), REFERENCE_BATCH, gen)
    _sync(x.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        optimizer.zero_grad()
        loss = loss_fn(model, batch)["loss"]
        loss.backward()
        optimizer.step()
        loss.item()
    _sync(x.device)
    return time.perf_counter() - t0


def default_steps(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, steps: int, lr: float, batch_size: int,
                  amp: Callable[[], contextlib.AbstractContextManager]) -> float:
    """The project's path: the real train_one_epoch over `steps` batches. Returns seconds."""
    optimizer = make_optimizer(model, lr)
    gen = torch.Generator().manual_seed(0)
    x = x[: steps * batch_size]
    batches = iterate_batches((x, labels(x)), batch_size, gen)
    _sync(x.device)
    t0 = time.perf_counter()
    train_one_epoch(model, batches, optimizer, loss_fn, amp=amp, log_every=50)
    _sync(x.device)
    return time.perf_counter() - t0


def timed_eval(model: nn.Module, x: torch.Tensor, loss_fn: LossFn, batch_size: int,
               amp: Callable[[], contextlib.AbstractContextManager]) -> float:
    """Images/s of `evaluate` (inference_mode), after one untimed call that warms up the kernels."""
    evaluate(model, (x[:batch_size], labels(x[:batch_size])), loss_fn, batch_size, amp=amp)
    _sync(x.device)
    t0 = time.perf_counter()
    evaluate(model, (x, labels(x)), loss_fn, batch_size, amp=amp)
    _sync(x.device)
    return len(x) / (time.perf_counter() - t0)


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                what = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        what += f", {torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()}"
    return f"{what}; torch {torch.__version__}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto)")
    p.add_argument("--models", nargs="+", choices=("ae", "vae"), default=["ae", "vae"], help="(default: ae vae)")
    p.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size,
                   help=f"batch of the default path (default: {TrainConfig.batch_size}, train.py's default)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="of the default path (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile the default path's model")
    p.add_argument("--steps", type=bench_count, default=40,
                   help=f"timed steps per measurement, {bench_count.span()} (default: 40)")
    p.add_argument("--warmup", type=bench_count, default=5,
                   help=f"untimed steps first, {bench_count.span()} (default: 5)")
    p.add_argument("--rounds", type=bench_count, default=5,
                   help=f"alternating rounds, {bench_count.span()} (default: 5)")
    p.add_argument("--eval-images", type=positive_int, default=10_000, help="(default: 10000)")
    p.add_argument("--seed", type=seed_int, default=0, help=f"{seed_int.span()} (default: 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    with exit_on_error():  # an unavailable --device, Ctrl-C or SIGTERM: one line, no traceback
        return benchmark(args)


def benchmark(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every measurement, one table row per model (see the module docstring)."""
    device = get_device(args.device)
    precision = resolve_precision(args.precision, device)
    amp = lambda: autocast(device, precision)  # noqa: E731
    print(f"device: {device} ({describe_machine(device)})")
    print(f"reference: fp32, NCHW, eager, batch {REFERENCE_BATCH}; default path: {precision}, channels_last, "
          f"batch {args.batch_size}{', torch.compile' if args.compile else ''}\n")
    torch.manual_seed(args.seed)
    n = max(args.steps + args.warmup, 1) * max(args.batch_size, REFERENCE_BATCH)
    x_nchw = torch.rand(n, 1, 28, 28, device=device)
    x_nhwc = x_nchw.contiguous(memory_format=torch.channels_last)
    x_eval = x_nhwc[: args.eval_images] if args.eval_images <= n else torch.rand(
        args.eval_images, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    lr = TrainConfig.lr
    results: dict[str, dict[str, float]] = {}
    rows = []
    for name in args.models:
        build, loss_fn = MODELS[name]
        ref_model = build().to(device)
        fast_model = build().to(device=device, memory_format=torch.channels_last)
        fast = torch.compile(fast_model) if args.compile else fast_model
        reference_steps(ref_model, loss_fn, x_nchw, args.warmup, lr)
        default_steps(fast, loss_fn, x_nhwc, args.warmup, lr, args.batch_size, amp)
        ref_rates, def_rates = [], []
        for _ in range(args.rounds):
            ref_rates.append(args.steps * REFERENCE_BATCH / reference_steps(ref_model, loss_fn, x_nchw, args.steps, lr))
            def_rates.append(args.steps * args.batch_size /
                             default_steps(fast, loss_fn, x_nhwc, args.steps, lr, args.batch_size, amp))
        eval_rate = timed_eval(fast, x_eval, loss_fn, TrainConfig.eval_batch_size, amp)
        ref_eval_rate = timed_eval(ref_model, x_eval.contiguous(), loss_fn, REFERENCE_BATCH, contextlib.nullcontext)
        ref, default = statistics.median(ref_rates), statistics.median(def_rates)
        results[name] = {"reference_img_s": ref, "default_img_s": default, "speedup": default / ref,
                         "reference_eval_img_s": ref_eval_rate, "default_eval_img_s": eval_rate}
        rows.append(f"| {name.upper()} | {ref:,.0f} | {default:,.0f} | {default / ref:.2f}x | "
                    f"{ref_eval_rate:,.0f} | {eval_rate:,.0f} |")
    print("| model | reference train img/s | default train img/s | speed-up | reference eval img/s | default eval img/s |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return results


if __name__ == "__main__":
    main()
