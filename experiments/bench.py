"""Throughput of the default path against a plain PyTorch loop, and the whole epoch a user waits for.

    python -m experiments.bench --data-dir data                # CPU, both models
    python -m experiments.bench --device cuda --data-dir data  # the same on a GPU

The reference is the same architecture and loss trained the plain way: fp32, NCHW, eager,
batch 128, `loss.item()` every step, in a process of its own as a plain script runs (on a CPU,
glibc's malloc returns freed memory to the OS). The default path is what train.py does: its
memory format and precision for this machine (--precision auto), the real `train_one_epoch` (no
per-step sync), in a process of its own that keeps freed memory as train.py does
(common/speed.py). Each path runs in a fresh process so that neither inherits the other's
heap: in one shared process the reference ran on the heap the default path had grown, not as a
plain script does. Rounds alternate reference / default so that machine noise hits both;
the median of the rounds is reported, and the ratio is taken within this one run.

Steps are timed on uniform noise, or with --data-dir on MNIST's own images (the step time depends
on the data). With --data-dir it also times a whole default epoch the way a user runs it,
`python -m <model>.train --epochs 1`, from start to exit (imports, data, the epoch with its
progress bar and schedule, evaluation, checkpoint), and reports it as images/s of the epoch and
against the reference; --whole-epochs N times N of them, one in each of the first N rounds, and
reports the median. The header gives the CPU's ISA, threads, torch version and the measured
fp32 matrix-product peak; the table the share of that peak each path reaches. Under the table,
each round's two rates and the peak measured again after the rounds show how far the machine
drifted while they ran (a shared cloud machine can lose a third of its speed within minutes).

With --choices it also times each choice the default path makes for this machine against its
alternative, one changed at a time: the memory format for training and for evaluation, Adam's
implementation, how often losses are read back, (on CUDA) the step as a captured CUDA graph or
eager, and (on a CPU) freed memory kept or returned to the OS, and one run on every core against
one-thread runs side by side, as the reproduction and the studies train.

    python -m experiments.bench --data-dir data --models vae --choices
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from common.data import IMAGE_SIZE, iterate_batches, load_split
from common.device import DEVICES, PRECISIONS, autocast, get_device, resolve_precision
from common.errors import ProjectError, exit_on_error
from common.loop import COMPILE_MODES, LossFn, TrainConfig, evaluate, make_optimizer, make_step, train_one_epoch
from common.machine import cpu_model_name, cpuinfo_field
from common.options import NumberRange, positive_int, seed_int
from common.registry import MODELS, model_classes
from common.speed import keep_freed_memory
from experiments.runs import train_module

REFERENCE_BATCH = 128
# --steps, --warmup, --rounds: (steps + warmup) batches of random images are made up front
bench_count = NumberRange(int, 1, 1000)
eval_count = NumberRange(int, 0, 1_000_000)
# the allocator setting each path runs with by default: train.py keeps freed memory in the process
# (common/speed.py); a plain script leaves glibc's malloc as it is
FREED_MEMORY = {"default": "kept", "reference": "returned"}
TRAIN_FORMAT = TrainConfig().memory_format  # train.py's memory format (channels_last), for training
EVAL_FORMAT = torch.channels_last  # and for evaluation (common/checkpoint.for_inference)


def model_and_loss(kind: str) -> tuple[Callable[[], nn.Module], LossFn]:
    """A fresh model of `kind` with the default config, and its train.py's loss function."""
    model_cls, config_cls = model_classes(kind)
    return lambda: model_cls(config_cls()), train_module(kind).loss_fn


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
                  amp: Callable[[], contextlib.AbstractContextManager],
                  optimizer_for: Callable[[nn.Module, float], torch.optim.Optimizer] = make_optimizer,
                  log_every: int = 50, warmup: int = 0, cuda_graph: bool = True) -> float:
    """The project's path: the real train_one_epoch over `steps` batches, with train.py's step
    (make_step: on CUDA a captured graph). Returns seconds. `warmup` untimed batches go first
    through the same optimizer and step (a CUDA graph is captured there), then the next `steps`
    batches are timed. `optimizer_for`, `log_every` and `cuda_graph` let --choices change one
    thing at a time."""
    optimizer = optimizer_for(model, lr)
    step = make_step(model, optimizer, loss_fn, amp, cuda_graph)
    gen = torch.Generator().manual_seed(0)
    if warmup:
        first = x[: warmup * batch_size]
        train_one_epoch(model, iterate_batches((first, labels(first)), batch_size, gen), optimizer, loss_fn, amp=amp,
                        log_every=log_every, train_step=step)
        x = x[warmup * batch_size:]
    x = x[: steps * batch_size]
    batches = iterate_batches((x, labels(x)), batch_size, gen)
    _sync(x.device)
    t0 = time.perf_counter()
    train_one_epoch(model, batches, optimizer, loss_fn, amp=amp, log_every=log_every, train_step=step)
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


ISA_FLAGS = {"avx2": "avx2", "avx512": "avx512f", "avx512_bf16": "avx512_bf16", "amx": "amx_tile"}  # -> cpuinfo flag
ISA_NAMES = (("amx", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512", "AVX-512"), ("avx2", "AVX2"))  # best first


def cpu_isa_features(flags: set[str] | None = None) -> dict[str, bool]:
    """Which of AVX2, AVX-512, AVX-512 BF16 and AMX the CPU has, from the cpuinfo `flags` if given,
    else from /proc/cpuinfo, else (macOS, Windows, ARM) from torch's own CPU dispatch."""
    if flags is None:
        line = cpuinfo_field("flags")
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


def format_name(memory_format: torch.memory_format) -> str:
    return "channels_last" if memory_format == torch.channels_last else "NCHW"


def describe_machine(device: torch.device) -> str:
    """The device, and on a CPU the ISA that actually runs (AVX2 / AVX-512 / AVX-512 BF16 / AMX,
    capped where ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY says so), the threads and torch's version."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; torch {torch.__version__}"
    features = cpu_isa_features()
    capped = [f"{name}={os.environ[name]}" for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
              if name in os.environ]
    isa = isa_summary(features) + (f", capped by {' '.join(capped)}" if capped else "")
    return (f"{cpu_model_name() or platform.machine()}, ISA {isa}, torch kernels "
            f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; torch {torch.__version__}")


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 1024,
                seconds: float = 1.0) -> float:
    """Measured GFLOP/s of a square matrix product, the most this machine gives one op."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    _sync(device)
    return 2 * size**3 * count / (time.perf_counter() - t0) / 1e9


def step_flops(build: Callable[[], nn.Module], loss_fn: LossFn, batch_size: int) -> float:
    """Floating-point operations of one training step (forward and backward) per image, counted
    by torch's FlopCounterMode (convolutions and matrix products; elementwise work is not counted)."""
    model = build()
    x = torch.rand(batch_size, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model, (x, labels(x)))["loss"].backward()
    return counter.get_total_flops() / batch_size


def all_in_epoch(kind: str, data_dir: str, precision: str, device: str, extra: list[str]) -> tuple[float, float]:
    """Seconds of `python -m <model>.train --epochs 1` with train.py's defaults, from start to
    exit: what a user waits for (imports, data, the epoch, evaluation, checkpoint); and the
    training images/s train.py itself recorded for the epoch (history.json), to set beside the
    benchmark's step rate of the default path."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", f"{MODELS[kind].package}.train", "--epochs", "1", "--data-dir", data_dir,
               "--no-download", "--out-dir", out, "--precision", precision, "--device", device, *extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise ProjectError(f"the timed train.py run failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        with open(Path(out) / "history.json") as f:
            return seconds, json.load(f)[-1]["images_per_second"]


def bench_images(args: argparse.Namespace, n: int, device: torch.device, split: str = "train") -> torch.Tensor:
    """n images (N, 1, 28, 28) to time on: MNIST's own (the first of `split`, repeated if more are
    needed) with --data-dir, else uniform noise. The step rate is timed on what train.py trains on
    whenever it is at hand: under the AVX2 cap one session measured the VAE's step at 962-980
    images/s on MNIST and 1,056-1,096 on noise (separate processes, so partly machine noise)."""
    if not args.data_dir:
        return torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    images = load_split(args.data_dir, "mnist", split, download=False).images
    return images.repeat(-(-n // len(images)), 1, 1, 1)[:n].to(device)


def other_adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with the other implementation than make_optimizer's: fused on a CPU, for-each on CUDA."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=next(model.parameters()).device.type == "cpu")


def alternating(first: Callable[[], float], second: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Medians of `rounds` alternating calls of two rate measurements."""
    a, b = [], []
    for _ in range(rounds):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def own_process_cmd(args: argparse.Namespace, model: str, path: str, precision: str, freed_memory: str,
                    eval_images: int) -> list[str]:
    """The command that times one path of `model` in a fresh process (see rate_only)."""
    return [sys.executable, "-m", "experiments.bench", "--rate-only", "--models", model, "--path", path,
            "--freed-memory", freed_memory, "--device", args.device, "--precision", precision,
            "--compile", args.compile, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--eval-images", str(eval_images),
            *(["--data-dir", args.data_dir] if args.data_dir else [])]


def run_processes(cmds: list[list[str]], env: dict[str, str] | None = None) -> list[tuple[float, float]]:
    """Start every command at once and wait for all: each one's (train img/s, eval img/s)."""
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]
    outputs = [proc.communicate() for proc in procs]
    for (_, err), proc in zip(outputs, procs):
        if proc.returncode != 0:
            raise ProjectError(f"a timed run failed: {(err.strip().splitlines() or ['?'])[-1]}")
    return [(float(out.split()[0]), float(out.split()[1])) for out, _ in outputs]


def in_own_process(args: argparse.Namespace, model: str, path: str, precision: str,
                   freed_memory: str | None = None) -> tuple[float, float]:
    """(train img/s, eval img/s) of one path timed in a fresh process: a plain script for the
    reference, train.py's process for the default path."""
    freed_memory = freed_memory or FREED_MEMORY[path]
    return run_processes([own_process_cmd(args, model, path, precision, freed_memory, args.eval_images)])[0]


def runs_at_once(runs: int, threads: int, args: argparse.Namespace, precision: str) -> float:
    """Total training images/s of `runs` default-path VAE runs started together, `threads` CPU
    threads each: separate processes, as experiments.reproduce and the studies train."""
    cmd = own_process_cmd(args, "vae", "default", precision, "kept", 0)
    return sum(train for train, _ in run_processes([cmd] * runs, {**os.environ, "OMP_NUM_THREADS": str(threads)}))


def choices(args: argparse.Namespace, device: torch.device, precision: str,
            amp: Callable[[], contextlib.AbstractContextManager]) -> list[tuple[str, str, float, str, float]]:
    """Each choice the default path makes for this machine against its alternative, one changed
    at a time (the VAE, the default path otherwise): (choice, default, img/s, alternative, img/s)."""
    build, loss_fn = model_and_loss("vae")
    lr, rows = TrainConfig.lr, []
    x = bench_images(args, (args.steps + args.warmup) * args.batch_size, device)
    x_eval = bench_images(args, args.eval_images, device, "test")
    formats = {"channels_last": torch.channels_last, "NCHW": torch.contiguous_format}
    train_default = format_name(TRAIN_FORMAT)
    eval_default = format_name(EVAL_FORMAT)

    def train_rate(fmt: str, **kw) -> Callable[[], float]:
        model = build().to(device=device, memory_format=formats[fmt])
        data = x.contiguous(memory_format=formats[fmt])
        return lambda: args.steps * args.batch_size / default_steps(model, loss_fn, data, args.steps, lr,
                                                                    args.batch_size, amp, warmup=args.warmup, **kw)

    def eval_rate(fmt: str) -> Callable[[], float]:
        model = build().to(device=device, memory_format=formats[fmt])
        data = x_eval.contiguous(memory_format=formats[fmt])
        return lambda: timed_eval(model, data, loss_fn, TrainConfig.eval_batch_size, amp)

    other = {"channels_last": "NCHW", "NCHW": "channels_last"}
    pairs = [
        ("training memory format", train_default, train_rate(train_default), other[train_default],
         train_rate(other[train_default])),
        ("evaluation memory format (batches of 1,000)", eval_default, eval_rate(eval_default), other[eval_default],
         eval_rate(other[eval_default])),
        ("Adam", "fused" if device.type == "cuda" else "for-each", train_rate(train_default),
         "for-each" if device.type == "cuda" else "fused", train_rate(train_default, optimizer_for=other_adam)),
        ("losses read back", "every 50 steps", train_rate(train_default), "every step",
         train_rate(train_default, log_every=1)),
    ]
    if device.type == "cuda":
        pairs.append(("training step", "CUDA graph", train_rate(train_default), "eager",
                      train_rate(train_default, cuda_graph=False)))
    if device.type == "cpu":
        pairs.append(("freed memory (glibc malloc)", "kept in the process",
                      lambda: in_own_process(args, "vae", "default", precision, "kept")[0], "returned to the OS",
                      lambda: in_own_process(args, "vae", "default", precision, "returned")[0]))
        # not a choice of the default path: how much the same setting would give the plain loop
        pairs.append(("freed memory, the reference's (not a choice: for scale)", "returned to the OS",
                      lambda: in_own_process(args, "vae", "reference", precision, "returned")[0], "kept in the process",
                      lambda: in_own_process(args, "vae", "reference", precision, "kept")[0]))
    for name, default, first, alternative, second in pairs:
        a, b = alternating(first, second, args.rounds)
        rows.append((name, default, a, alternative, b))
    cores = torch.get_num_threads()
    if device.type == "cpu" and cores >= 2:
        one = runs_at_once(1, cores, args, precision)
        rows.append((f"{cores} cores: runs side by side", f"1 run, {cores} threads", one,
                     f"{cores} runs, 1 thread each", runs_at_once(cores, 1, args, precision)))
        rows.append((f"{cores} cores: runs side by side", f"1 run, {cores} threads", one,
                     f"{cores + 1} runs, 1 thread each", runs_at_once(cores + 1, 1, args, precision)))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto)")
    p.add_argument("--models", nargs="+", choices=("ae", "vae"), default=["ae", "vae"], help="(default: ae vae)")
    p.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size,
                   help=f"batch of the default path (default: {TrainConfig.batch_size}, train.py's default)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="of the default path (default: auto)")
    p.add_argument("--compile", choices=COMPILE_MODES, default="off",
                   help="torch.compile the default path's model (default: off, as train.py)")
    p.add_argument("--steps", type=bench_count, default=40,
                   help=f"timed steps per measurement, {bench_count.span()} (default: 40)")
    p.add_argument("--warmup", type=bench_count, default=5,
                   help=f"untimed steps first, {bench_count.span()} (default: 5)")
    p.add_argument("--rounds", type=bench_count, default=5,
                   help=f"alternating rounds, {bench_count.span()} (default: 5)")
    p.add_argument("--eval-images", type=eval_count, default=10_000,
                   help=f"test images the evaluation rate is timed on, {eval_count.span()} (default: 10000)")
    p.add_argument("--seed", type=seed_int, default=0, help=f"{seed_int.span()} (default: 0)")
    p.add_argument("--data-dir", help="with real MNIST here, time the steps on its images and also a whole default "
                                      "train.py epoch per model from start to exit (default: noise, and no epoch)")
    p.add_argument("--whole-epochs", type=bench_count, default=1,
                   help="with --data-dir: whole train.py epochs timed, one in each of the first rounds, median "
                        "reported (default: 1)")
    p.add_argument("--train-flags", default="", help="extra train.py flags for the whole-epoch run (default: none)")
    p.add_argument("--choices", action="store_true",
                   help="also time each choice the default path makes for this machine against its alternative "
                        "(memory formats, Adam's implementation, loss read-back, CUDA graph, freed memory, runs side "
                        "by side)")
    p.add_argument("--rate-only", action="store_true",
                   help="time one --path of the first --models in this process and print only its training and "
                        "evaluation images/s (each round of the benchmark runs both paths this way)")
    p.add_argument("--path", choices=tuple(FREED_MEMORY), default="default",
                   help="with --rate-only: the path to time (default: default)")
    p.add_argument("--freed-memory", choices=("kept", "returned"),
                   help="with --rate-only, on a CPU: keep freed memory in the process as train.py does, or return "
                        "it to the OS as a plain script does (default: kept for the default path, returned for the "
                        "reference)")
    args = p.parse_args(argv)
    args.freed_memory = args.freed_memory or FREED_MEMORY[args.path]
    if args.data_dir and args.whole_epochs > args.rounds:
        p.error(f"--whole-epochs {args.whole_epochs} needs as many --rounds (one epoch per round), got {args.rounds}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():  # an unavailable --device, Ctrl-C or SIGTERM: one line, no traceback
        if args.rate_only:
            train, eval_ = rate_only(args)
            return {args.models[0]: {"train_img_s": train, "eval_img_s": eval_}}
        return benchmark(args)


def rate_only(args: argparse.Namespace) -> tuple[float, float]:
    """One path of the first --models timed in this process, as `in_own_process` runs it: prints
    its training images/s and its evaluation images/s (0 with --eval-images 0). The default path
    first keeps freed memory in the process as train.py does (common/speed.py); the reference
    leaves glibc's malloc as a plain script has it."""
    device = get_device(args.device)
    precision = resolve_precision(args.precision, device)
    if device.type == "cpu" and args.freed_memory == "kept":
        keep_freed_memory()
    build, loss_fn = model_and_loss(args.models[0])
    torch.manual_seed(args.seed)
    lr = TrainConfig.lr
    x = bench_images(args, (args.steps + args.warmup) * max(args.batch_size, REFERENCE_BATCH), device)
    x_eval = bench_images(args, max(args.eval_images, 1), device, "test")
    if args.path == "reference":
        model = build().to(device)
        reference_steps(model, loss_fn, x, args.warmup, lr)
        train = args.steps * REFERENCE_BATCH / reference_steps(model, loss_fn, x, args.steps, lr)
        eval_ = timed_eval(model, x_eval, loss_fn, REFERENCE_BATCH, contextlib.nullcontext) if args.eval_images else 0.0
    else:
        fmt = TRAIN_FORMAT
        model = build().to(device=device, memory_format=fmt)
        fast = model if args.compile == "off" else torch.compile(model, mode=args.compile)
        amp = lambda: autocast(device, precision)  # noqa: E731
        x = x.contiguous(memory_format=fmt)
        train = args.steps * args.batch_size / default_steps(fast, loss_fn, x, args.steps, lr, args.batch_size, amp,
                                                             warmup=args.warmup, cuda_graph=args.compile == "off")
        eval_fmt = EVAL_FORMAT
        model.to(memory_format=eval_fmt)
        eval_ = timed_eval(fast, x_eval.contiguous(memory_format=eval_fmt), loss_fn, TrainConfig.eval_batch_size,
                           amp) if args.eval_images else 0.0
    print(f"{train:.1f} {eval_:.1f}")
    return train, eval_


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, one table row per model (see the module docstring)."""
    device = get_device(args.device)
    precision = resolve_precision(args.precision, device)
    train_format = TRAIN_FORMAT
    eval_format = EVAL_FORMAT
    print(f"device: {device} ({describe_machine(device)})")
    peak = matmul_peak(device)
    print(f"measured fp32 matrix-product peak: {peak:,.0f} GFLOP/s")
    print(f"reference: fp32, NCHW, eager, batch {REFERENCE_BATCH}, loss.item() every step; default path: {precision}, "
          f"{format_name(train_format)} for training and {format_name(eval_format)} for evaluation, batch "
          f"{args.batch_size}{'' if args.compile == 'off' else f', torch.compile {args.compile}'}"
          f"{', training step as a CUDA graph' if device.type == 'cuda' and args.compile == 'off' else ''}; each path in "
          f"a fresh process of its own, {args.rounds} alternating rounds, medians"
          f"{'; freed memory returned to the OS for the reference, kept for the default path' if device.type == 'cpu' else ''}\n")
    results: dict[str, Any] = {}
    rows, flop_notes, round_notes = [], [], []
    for name in args.models:
        build, loss_fn = model_and_loss(name)
        flops = step_flops(build, loss_fn, REFERENCE_BATCH)
        flop_notes.append(f"{name.upper()} {flops / 1e6:.0f}")
        ref_runs, def_runs, epochs = [], [], []
        for i in range(args.rounds):
            ref_runs.append(in_own_process(args, name, "reference", precision))
            def_runs.append(in_own_process(args, name, "default", precision))
            if args.data_dir and i < args.whole_epochs:  # interleaved, so that the drift hits it alike
                epochs.append(all_in_epoch(name, args.data_dir, args.precision, str(device), args.train_flags.split()))
        ref, ref_eval_rate = (statistics.median(rates) for rates in zip(*ref_runs))
        default, eval_rate = (statistics.median(rates) for rates in zip(*def_runs))
        result = {"reference_img_s": ref, "default_img_s": default, "speedup": default / ref,
                  "reference_eval_img_s": ref_eval_rate, "default_eval_img_s": eval_rate,
                  "step_mflop_per_image": flops / 1e6, "peak_gflop_s": peak,
                  "reference_share_of_peak": ref * flops / (peak * 1e9),
                  "default_share_of_peak": default * flops / (peak * 1e9)}
        if args.data_dir:
            seconds = statistics.median(t for t, _ in epochs)
            result["epoch_seconds"], result["epoch_seconds_each"] = seconds, [t for t, _ in epochs]
            result["train_py_img_s"] = statistics.median(rate for _, rate in epochs)
            result["train_py_vs_default"] = result["train_py_img_s"] / default
            result["epoch_img_s"] = len(load_split(args.data_dir, "mnist", "train", download=False).images) / seconds
            result["epoch_vs_reference"] = result["epoch_img_s"] / ref
        result["reference_img_s_each"] = [rate for rate, _ in ref_runs]
        result["default_img_s_each"] = [rate for rate, _ in def_runs]
        results[name] = result
        round_notes.append(f"{name.upper()}, each round's reference / default train img/s (speed-up): " + ", ".join(
            f"{r:,.0f} / {d:,.0f} ({d / r:.2f}x)" for (r, _), (d, _) in zip(ref_runs, def_runs)))
        each = f" (median of {', '.join(f'{t:.1f}' for t, _ in epochs)} s)" if len(epochs) > 1 else ""
        all_in = (f" | {result['epoch_seconds']:.1f} s{each} = {result['epoch_img_s']:,.0f} img/s, "
                  f"{result['epoch_vs_reference']:.2f}x | {result['train_py_img_s']:,.0f} "
                  f"({result['train_py_vs_default']:.2f}x)" if args.data_dir else " | – | –")
        rows.append(f"| {name.upper()} | {ref:,.0f} ({result['reference_share_of_peak']:.0%}) | "
                    f"{default:,.0f} ({result['default_share_of_peak']:.0%}) | {default / ref:.2f}x{all_in} | "
                    f"{ref_eval_rate:,.0f} | {eval_rate:,.0f} |")
    print(f"training step, MFLOP per image (forward and backward): {', '.join(flop_notes)}; in brackets: the "
          f"share of the fp32 peak this gives\n")
    print("| model | reference train img/s | default train img/s | speed-up | whole train.py epoch, start to exit "
          "(vs reference) | train.py's own training img/s (vs default) | reference eval img/s | default eval img/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\n" + "\n".join(round_notes))
    # the same peak measured again after the rounds: how far the machine drifted while they ran
    results["peak_gflop_s_after"] = matmul_peak(device)
    print(f"measured fp32 matrix-product peak after the rounds: {results['peak_gflop_s_after']:,.0f} GFLOP/s "
          f"({peak:,.0f} before)")
    if args.choices:
        if device.type == "cpu":
            keep_freed_memory()  # the in-process choices run as train.py does
        print(f"\nEach choice of the default path against its alternative (VAE, {precision}, batch {args.batch_size}, "
              f"medians of {args.rounds} alternating rounds; runs side by side: one round, total img/s):\n")
        print("| choice | default | img/s | alternative | img/s | default / alternative |")
        print("|---|---|---:|---|---:|---:|")
        amp = lambda: autocast(device, precision)  # noqa: E731
        for name, default, a, alternative, b in choices(args, device, precision, amp):
            results.setdefault("choices", {})[f"{name}: {alternative}"] = {"default_img_s": a, "alternative_img_s": b}
            print(f"| {name} | {default} | {a:,.0f} | {alternative} | {b:,.0f} | {a / b:.2f}x |")
    return results


if __name__ == "__main__":
    main()
