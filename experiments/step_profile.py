"""Where a CPU training step's time goes, layer by layer: oneDNN's own timing of every convolution kernel.

    python -m experiments.step_profile --data-dir ../shared/data
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m experiments.step_profile --data-dir ../shared/data \\
        --precision fp32

Each convolution of a training step runs as up to three oneDNN kernels: the forward pass, the
gradient of its input (backward data) and the gradient of its weights (backward weights). This
runs the default path's step (train.py's memory format, precision and `train_one_epoch`) in a
child process with ONEDNN_VERBOSE=1, which makes oneDNN print each kernel's implementation and
milliseconds, and prints per layer and pass the mean milliseconds a step, the GFLOP/s that gives,
and the implementation oneDNN chose; then what the convolutions take of the step's wall time and
what is left for everything else (batch norm, ReLU, the dense layers, the loss, Adam, Python).
The verbose output costs a little time itself, so the step is a few per cent slower than in the
benchmark (experiments/bench.py), whose rates are the ones to quote.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from common.data import IMAGE_SIZE
from common.device import PRECISIONS, autocast, get_device, memory_format_for, resolve_precision
from common.errors import ProjectError, exit_on_error
from common.host_memory import keep_freed_memory
from common.loop import LossFn
from common.options import NumberRange, seed_int
from common.trainer import TrainConfig
from experiments.bench import MODELS, bench_images, default_steps, describe_machine, labels

step_count = NumberRange(int, 1, 1000)
TIMED = "step_profile: timed steps start"  # the child's marker between warm-up and timed steps
# oneDNN's problem descriptor of a convolution, e.g. mb128_ic64oc32_ih14oh28kh3sh2dh0ph1_iw14ow28kw3sw2dw0pw1
PROBLEM = re.compile(r"(?:g(?P<g>\d+))?mb(?P<mb>\d+)_ic(?P<ic>\d+)oc(?P<oc>\d+)_ih(?P<ih>\d+)oh(?P<oh>\d+)"
                     r"kh(?P<kh>\d+)sh(?P<sh>\d+)dh\d+ph\d+_iw(?P<iw>\d+)ow(?P<ow>\d+)kw(?P<kw>\d+)sw\d+dw\d+pw\d+")
PASSES = {"forward_training": "forward", "forward_inference": "forward", "backward_data": "grad input",
          "backward_weights": "grad weights", "backward": "grad input + weights"}


@dataclass
class Kernel:
    """One convolution kernel (layer, pass) summed over the timed steps."""

    ms: float = 0.0
    calls: int = 0
    flops: float = 0.0  # of one call
    implementations: set[str] = field(default_factory=set)


def read_problem(problem: str) -> dict[str, int]:
    """oneDNN's convolution descriptor as numbers: g (groups, 1 if absent), mb, ic, oc, ih, oh, kh, sh, iw, ow, kw."""
    m = PROBLEM.fullmatch(problem)
    if m is None:
        raise ProjectError(f"cannot read oneDNN's convolution descriptor {problem!r}")
    return {k: int(x) for k, x in m.groupdict(default="1").items()}


def conv_flops(kind: str, problem: str) -> float:
    """Multiply-adds x 2 of one convolution call: every output pixel of a convolution, every
    input pixel of a transposed one (deconvolution) meets ic x oc x kh x kw weights (/ groups).
    The forward, input-gradient and weight-gradient passes all cost this much."""
    v = read_problem(problem)
    pixels = v["ih"] * v["iw"] if kind == "deconvolution" else v["oh"] * v["ow"]
    return 2.0 * v["mb"] * v["ic"] * v["oc"] * v["kh"] * v["kw"] * pixels / v["g"]


def layer_key(kind: str, problem: str) -> tuple:
    """What names a layer in oneDNN's descriptor, the batch left out (kind, ic, oc, ih, iw, oh, ow, kh, sh)."""
    v = read_problem(problem)
    return (kind, *(v[k] for k in ("ic", "oc", "ih", "iw", "oh", "ow", "kh", "sh")))


def parse_verbose(text: str) -> dict[tuple[tuple, str], Kernel]:
    """The convolution kernels oneDNN ran after the TIMED marker: (layer key, pass) -> Kernel.
    A verbose line reads onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,<prop kind>,
    <memory descriptors>,<attributes>,<auxiliary>,<problem>,<milliseconds>."""
    kernels: dict[tuple[tuple, str], Kernel] = defaultdict(Kernel)
    timed = False
    for line in text.splitlines():
        if line.startswith(TIMED):
            timed = True
            continue
        parts = line.strip().split(",")
        if not timed or len(parts) < 13 or parts[:5] != ["onednn_verbose", "v1", "primitive", "exec", "cpu"]:
            continue
        kind, impl, prop, problem, ms = parts[5], parts[6], parts[7], parts[-2], parts[-1]
        if kind not in ("convolution", "deconvolution"):
            continue
        k = kernels[(layer_key(kind, problem), PASSES.get(prop, prop))]
        k.ms += float(ms)
        k.calls += 1
        k.flops = conv_flops(kind, problem)
        k.implementations.add(impl)
    return dict(kernels)


def conv_layers(model: nn.Module, loss_fn: LossFn) -> dict[tuple, str]:
    """Layer key (as oneDNN describes it) -> the module's name, for every convolution of `model`,
    from one forward pass on two blank images (in eval mode; the model's mode is left as it was)."""
    names: dict[tuple, str] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            kind = "deconvolution" if isinstance(module, nn.ConvTranspose2d) else "convolution"
            (_, ic, ih, iw), (_, oc, oh, ow) = inputs[0].shape, out.shape
            names[(kind, ic, oc, ih, iw, oh, ow, module.kernel_size[0], module.stride[0])] = name
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            x = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
            loss_fn(model, (x, labels(x)))
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=tuple(MODELS), default="vae", help="(default: vae)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="of the step (default: auto)")
    p.add_argument("--steps", type=step_count, default=20, help=f"timed steps, {step_count.span()} (default: 20)")
    p.add_argument("--warmup", type=step_count, default=5,
                   help=f"untimed steps first, {step_count.span()} (default: 5)")
    p.add_argument("--batch-size", type=step_count, default=TrainConfig.batch_size,
                   help=f"{step_count.span()} (default: {TrainConfig.batch_size}, train.py's)")
    p.add_argument("--seed", type=seed_int, default=0, help=f"{seed_int.span()} (default: 0)")
    p.add_argument("--data-dir", help="time the steps on MNIST's own images from here (default: uniform noise)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the verbose process itself
    return p.parse_args(argv)


def run_steps(args: argparse.Namespace) -> None:
    """The child: the benchmark's default-path step (experiments.bench.default_steps) for the
    warm-up, the TIMED marker, the timed steps, then their wall seconds."""
    device = get_device("cpu")
    precision = resolve_precision(args.precision, device)
    keep_freed_memory()
    build, loss_fn = MODELS[args.model]
    torch.manual_seed(args.seed)
    fmt = memory_format_for(device, precision, training=True)
    model = build().to(memory_format=fmt)
    x = bench_images(args, (args.warmup + args.steps) * args.batch_size, device).contiguous(memory_format=fmt)
    amp = lambda: autocast(device, precision)  # noqa: E731
    warm = args.warmup * args.batch_size
    default_steps(model, loss_fn, x[:warm], args.warmup, TrainConfig.lr, args.batch_size, amp)
    print(TIMED, flush=True)
    seconds = default_steps(model, loss_fn, x[warm:], args.steps, TrainConfig.lr, args.batch_size, amp)
    print(f"step_profile: seconds {seconds:.6f}", flush=True)


def format_table(kernels: dict[tuple[tuple, str], Kernel], names: dict[tuple, str], steps: int,
                 step_ms: float) -> str:
    """Markdown: a row per layer (network order) with each pass's ms a step, GFLOP/s and kernel."""
    standard = ("forward", "grad input", "grad weights")
    passes = standard + tuple(sorted({p for _, p in kernels} - set(standard)))
    rows = ["| layer | " + " | ".join(f"{p}: ms, GFLOP/s, kernel" for p in passes) + " |",
            "|---|" + "---|" * len(passes)]
    by_layer: dict[tuple, dict[str, Kernel]] = defaultdict(dict)
    for (key, pass_), kernel in kernels.items():
        by_layer[key][pass_] = kernel
    order = list(names)
    total = 0.0
    for key in sorted(by_layer, key=lambda k: order.index(k) if k in order else len(order)):
        cells = []
        for p in passes:
            k = by_layer[key].get(p)
            if k is None:
                cells.append("–")
                continue
            ms = k.ms / steps
            total += ms
            rate = k.flops * k.calls / (k.ms / 1e3) / 1e9
            cells.append(f"{ms:.2f}, {rate:.0f}, {'/'.join(sorted(k.implementations))}")
        kind, ic, oc, ih, iw, oh, ow, _, sh = key
        transposed = "transposed " if kind == "deconvolution" else ""
        label = f"{names.get(key, '?')} ({transposed}{ic}->{oc}, {ih}x{iw}->{oh}x{ow}, stride {sh})"
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append(f"\nconvolution kernels: {total:.1f} ms of the step's {step_ms:.1f} ms ({total / step_ms:.0%}); "
                f"everything else (batch norm, ReLU, dense layers, loss, Adam, Python): {step_ms - total:.1f} ms")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    with exit_on_error():
        if args.child:
            run_steps(args)
            return ""
        cmd = [sys.executable, "-m", "experiments.step_profile", "--child", "--model", args.model,
               "--precision", args.precision, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--seed", str(args.seed),
               *(["--data-dir", args.data_dir] if args.data_dir else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "ONEDNN_VERBOSE": "1"})
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1].removeprefix("error: ")
            raise ProjectError(f"the profiled run failed: {last}")
        seconds = re.search(r"^step_profile: seconds ([\d.]+)$", done.stdout, re.MULTILINE)
        kernels = parse_verbose(done.stdout)
        if seconds is None or not kernels:
            raise ProjectError("the profiled run printed no oneDNN convolution timings (is this a CPU build of "
                               "torch with oneDNN?)")
        device = get_device("cpu")
        build, loss_fn = MODELS[args.model]
        names = conv_layers(build(), loss_fn)
        step_ms = float(seconds[1]) * 1e3 / args.steps
        table = format_table(kernels, names, args.steps, step_ms)
        print(f"device: cpu ({describe_machine(device)})")
        print(f"{args.model.upper()} training step, {resolve_precision(args.precision, device)}, batch "
              f"{args.batch_size}, {args.steps} steps after {args.warmup} untimed: "
              f"{step_ms:.1f} ms a step ({args.batch_size / step_ms * 1e3:,.0f} images/s, with oneDNN's "
              f"verbose output on)\n")
        print(table)
        return table


if __name__ == "__main__":
    main()
