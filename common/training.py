"""The training loop shared by both models; it knows nothing about their internals.

A model's train.py supplies the model, its config and a `loss_fn(model, x) -> dict of scalar
tensors` whose "loss" entry is minimised; everything else (data on the device, mixed precision,
progress bar, evaluation, checkpoints, resume, interruption) lives here once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from common.checkpoint import CheckpointError, check_resumable, load_checkpoint, save_checkpoint, unwrap
from common.data import DATASETS, DataError, iterate_batches, load_dataset
from common.device import DEVICES, PRECISIONS, DeviceError, autocast, get_device, resolve_precision
from common.nets import ConvNetConfig

LossFn = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """How to train (not what): every field is a train.py flag of the same name."""

    epochs: int = 8  # total number of epochs (on --resume: the total to reach)
    batch_size: int = 128  # images per optimisation step
    lr: float = 2e-3  # Adam learning rate (the peak, with a schedule)
    lr_schedule: str = "cosine"  # "constant", or "cosine": decay to 0 over all epochs, step by step
    seed: int = 0  # seeds initialisation, shuffling and the VAE's noise
    data_dir: str = "data"  # folder holding MNIST/raw/ (torchvision's layout)
    dataset: str = "mnist"  # "mnist" or "fashion-mnist"
    download: bool = True  # try torchvision's download when the files are missing
    out_dir: str = "."  # checkpoints/, figures/ and history.json go here
    device: str = "auto"  # auto: cuda, then mps, then cpu
    precision: str = "auto"  # auto: bf16 autocast where the hardware runs it natively
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU and GPU
    compile: bool = False  # wrap the model in torch.compile
    eval_batch_size: int = 1000  # images per batch when evaluating
    log_every: int = 50  # steps between progress-bar refreshes (each one syncs the device)


# Flags whose value on --resume may differ from the checkpoint's: they change how, not what.
RUNTIME_FIELDS = {"epochs", "data_dir", "download", "out_dir", "device", "precision", "channels_last",
                  "compile", "eval_batch_size", "log_every"}


class TrainingError(Exception):
    """A condition that stops training with a one-line message (exit status 1)."""


class NonFiniteLoss(TrainingError):
    """The training loss became NaN or infinite at `step` (1-based) of `epoch`."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"the loss became NaN or infinite at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ----------------------------------------------------------------------------------------------
# command line


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _default(cls: type, name: str) -> Any:
    value = {f.name: f.default for f in dataclasses.fields(cls)}[name]
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


def add_model_args(parser: argparse.ArgumentParser, config_cls: type[ConvNetConfig]) -> None:
    """Architecture and loss flags. Defaults are None so that --resume can tell what was given."""
    g = parser.add_argument_group("model")
    d = lambda name: _default(config_cls, name)  # noqa: E731
    g.add_argument("--latent-dim", type=positive_int, help=f"size of the code z (default: {d('latent_dim')})")
    g.add_argument("--filters", type=int_tuple, help=f"encoder conv channels (default: {d('filters')})")
    g.add_argument("--kernel-sizes", type=int_tuple, help=f"encoder conv kernels, odd (default: {d('kernel_sizes')})")
    g.add_argument("--strides", type=int_tuple, help=f"encoder conv strides (default: {d('strides')})")
    g.add_argument("--loss", choices=("bce", "mse"),
                   help=f"reconstruction loss: bce = Bernoulli nats/image, mse = the original (default: {d('loss')})")


def add_train_args(parser: argparse.ArgumentParser, default_out_dir: Path) -> None:
    g = parser.add_argument_group("training")
    d = lambda name: _default(TrainConfig, name)  # noqa: E731
    g.add_argument("--epochs", type=positive_int, help=f"total epochs (default: {d('epochs')})")
    g.add_argument("--batch-size", type=positive_int, help=f"images per step (default: {d('batch_size')})")
    g.add_argument("--lr", type=positive_float, help=f"Adam learning rate (default: {d('lr')})")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help=f"constant, or cosine decay to 0 over --epochs (default: {d('lr_schedule')})")
    g.add_argument("--seed", type=int, help=f"random seed (default: {d('seed')})")
    g.add_argument("--data-dir", help=f"folder holding MNIST/raw/ (default: {d('data_dir')})")
    g.add_argument("--dataset", choices=tuple(DATASETS), help=f"(default: {d('dataset')})")
    g.add_argument("--download", action=argparse.BooleanOptionalAction,
                   help="download the dataset when missing (default: true)")
    g.add_argument("--out-dir", help=f"where checkpoints/, figures/, history.json go (default: {default_out_dir})")
    g.add_argument("--device", choices=DEVICES, help=f"(default: {d('device')}: cuda, then mps, then cpu)")
    g.add_argument("--precision", choices=PRECISIONS,
                   help=f"bf16 autocast or fp32 (default: {d('precision')}: bf16 where the hardware is fast at it)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="NHWC memory format (default: true)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, help="use torch.compile (default: false)")
    g.add_argument("--eval-batch-size", type=positive_int, help=f"(default: {d('eval_batch_size')})")
    g.add_argument("--log-every", type=positive_int, help=f"steps between progress refreshes (default: {d('log_every')})")
    start = g.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from <out-dir>/checkpoints/last.pt")
    start.add_argument("--overwrite", action="store_true",
                       help="start afresh even if <out-dir>/checkpoints/last.pt exists (it is replaced)")


def _pick(cls: type, args: argparse.Namespace, saved: dict[str, Any] | None, runtime: set[str]) -> dict[str, Any]:
    """Field values: explicit flag > checkpoint (on --resume) > dataclass default.

    On --resume, an explicit flag that contradicts the checkpoint is an error, except for the
    runtime fields that only change how training runs.
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if saved is not None and f.name in saved:
            old = tuple(saved[f.name]) if isinstance(saved[f.name], list) else saved[f.name]
            if given is not None and f.name not in runtime and given != old:
                flag = "--" + f.name.replace("_", "-")
                raise TrainingError(f"{flag} {given} contradicts the checkpoint being resumed ({old}); "
                                    f"drop the flag or start a new run with --overwrite")
            values[f.name] = given if given is not None else old
        else:
            values[f.name] = given if given is not None else f.default
    return values


# ----------------------------------------------------------------------------------------------
# the loop


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, int | None]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps, so a checkpoint being
    written is never cut short. Outside the main thread (where Python cannot install handlers)
    the flag simply never rises."""
    flag: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train_flags(ckpt: Path, epochs: int, kind: str, overwrite: bool = False) -> list[str] | None:
    """The train.py flags that bring the run saved at `ckpt` to exactly `epochs` epochs: [] to
    start it, ["--resume"] to finish it, ["--overwrite"] to start afresh, or None when it is done.
    For the scripts that drive several runs (reproduce, the latent and precision studies). A run
    with more epochs is refused: its learning-rate schedule differs, so its numbers would not be
    comparable with the others'."""
    if overwrite:
        return ["--overwrite"]
    if not ckpt.exists():
        return []
    done = load_checkpoint(ckpt, kind=kind)["epoch"]
    if done > epochs:
        raise TrainingError(f"{ckpt} has {done} epochs, more than --epochs {epochs}: the runs would not be "
                            f"comparable; pass --epochs {done} or another --out-dir")
    return None if done == epochs else ["--resume"]


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; on CUDA the fused kernel (one launch for all parameters instead of several per tensor)."""
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused)


def lr_at(step: int, total_steps: int, lr: float, schedule: str) -> float:
    """Learning rate for global step `step` (0-based) of `total_steps`. A pure function of the
    step, so a resumed run follows exactly the schedule of an uninterrupted one."""
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lr


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    *,
    lr_for_step: Callable[[int], float] | None = None,
    amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    progress: tqdm | None = None,
    log_every: int = 50,
    stop: dict[str, int | None] | None = None,
    epoch: int = 0,
) -> dict[str, float]:
    """One pass over `batches`; returns the image-weighted mean of each loss term.

    Terms are accumulated on the device and read back only every `log_every` steps: reading a
    CUDA tensor (.item()) waits for all queued work, which would stall the GPU every step. For the
    same reason the first step whose loss is not finite is recorded on the device and checked at
    those read-backs; it raises NonFiniteLoss naming that exact step.
    """
    model.train()
    sums: dict[str, torch.Tensor] = {}
    first_bad: torch.Tensor | None = None  # 0-d long on the device: first non-finite step, 0 if none
    seen = 0
    for step, x in enumerate(batches, start=1):
        if stop is not None and stop["signum"] is not None:
            raise Interrupted(stop["signum"])
        if lr_for_step is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_for_step(step - 1)
        with amp():
            terms = loss_fn(model, x)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        n = x.shape[0]
        seen += n
        for name, value in terms.items():
            value = value.detach().float() * n
            sums[name] = sums[name] + value if name in sums else value
        bad_now = ~torch.isfinite(terms["loss"].detach())
        first_bad = bad_now.long() * step if first_bad is None else first_bad.masked_fill(
            bad_now & (first_bad == 0), step)
        if step % log_every == 0:
            if int(first_bad):  # one sync per refresh
                raise NonFiniteLoss(epoch, int(first_bad))
            if progress is not None:
                progress.set_postfix(loss=f"{sums['loss'].item() / seen:.2f}", refresh=False)
        if progress is not None:
            progress.update(1)
    if first_bad is not None and int(first_bad):
        raise NonFiniteLoss(epoch, int(first_bad))
    return {name: value.item() / seen for name, value in sums.items()}


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: LossFn,
    batch_size: int = 1000,
    *,
    amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    seed: int = 0,
) -> dict[str, float]:
    """Image-weighted mean loss terms over `x`, in eval mode, with fixed noise (VAE sampling)
    so the number is reproducible and the training RNG stream is left untouched."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(seed)
        for batch in iterate_batches(x, batch_size):
            with amp():
                terms = loss_fn(model, batch)
            for name, value in terms.items():
                value = value.float() * batch.shape[0]
                sums[name] = sums[name] + value if name in sums else value
    return {name: value.item() / x.shape[0] for name, value in sums.items()}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON atomically (temporary file, then rename), like the checkpoints."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and make sure a file can be written in it, before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise TrainingError(f"cannot write to output folder {folder}: {err.strerror}") from None


def format_terms(terms: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in terms.items() if k != "loss")


def run_training(
    *,
    kind: str,
    config_cls: type[ConvNetConfig],
    build_model: Callable[[Any], nn.Module],
    make_loss_fn: Callable[[Any], LossFn],
    args: argparse.Namespace,
    default_out_dir: Path,
    argv: list[str],
) -> dict[str, Any]:
    """Build (or resume) a model and train it; returns {"checkpoint", "history", "config", "train"}."""
    out_dir = Path(args.out_dir if args.out_dir is not None else default_out_dir)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    saved = None
    if args.resume:
        saved = load_checkpoint(ckpt_path, kind=kind)
        check_resumable(ckpt_path, saved)
    elif ckpt_path.exists() and not args.overwrite:
        raise TrainingError(f"{ckpt_path} already exists: pass --resume to continue it or --overwrite to replace it")

    train_values = _pick(TrainConfig, args, saved.get("train", {}) if saved else None, RUNTIME_FIELDS)
    train_values["out_dir"] = str(out_dir)
    tc = TrainConfig(**train_values)
    try:
        config = config_cls(**_pick(config_cls, args, saved["config"] if saved else None, set()))
    except (TypeError, ValueError) as err:
        raise TrainingError(f"invalid model settings: {err}") from None
    if saved is not None and saved["epoch"] >= tc.epochs:
        raise TrainingError(f"{ckpt_path} already has {saved['epoch']} epochs; pass --epochs N with N > "
                            f"{saved['epoch']} to train further")

    device = get_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    check_writable(out_dir / "checkpoints")
    train, test = load_dataset(tc.data_dir, tc.dataset, download=tc.download)

    torch.manual_seed(tc.seed)
    model = build_model(config)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model, tc.lr)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            _set_rng_state(saved["rng"])
        except (RuntimeError, ValueError, TypeError, KeyError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{ckpt_path} cannot be resumed, its saved state does not fit: "
                                  f"{reason[:200]}") from None
        history = list(saved["history"])
        start_epoch = saved["epoch"]
    # The whole dataset lives on the device from here on: no per-step host -> device copies.
    x_train = train.images.to(device).contiguous(memory_format=memory_format)
    x_test = test.images.to(device).contiguous(memory_format=memory_format)
    fast_model = torch.compile(model) if tc.compile else model
    loss_fn = make_loss_fn(config)
    amp = lambda: autocast(device, precision)  # noqa: E731

    run_info = {"argv": argv, "kind": kind, "config": dataclasses.asdict(config),
                "train": dataclasses.asdict(tc), "device": str(device), "precision": precision}
    print(f"training {kind} on {device} ({precision}, {'channels_last' if tc.channels_last else 'NCHW'}), "
          f"{len(train)} train / {len(test)} test images, epochs {start_epoch + 1}..{tc.epochs}", flush=True)

    steps = math.ceil(len(train) / tc.batch_size)
    with stop_on_signals() as stop:
        for epoch in range(start_epoch + 1, tc.epochs + 1):
            t0 = time.perf_counter()
            # The shuffle depends only on (seed, epoch), so a resumed run sees the same batches.
            gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)
            if epoch > 1:
                kept = f"{ckpt_path} still holds epoch {epoch - 1}"
            else:  # a fresh run (with --overwrite, an older run's file may be there: it is not touched)
                kept = f"{ckpt_path} is unchanged" if ckpt_path.exists() else f"nothing was saved to {ckpt_path}"
            with tqdm(total=steps, desc=f"epoch {epoch}/{tc.epochs}", leave=False, disable=None) as bar:
                try:
                    first_step = (epoch - 1) * steps
                    train_terms = train_one_epoch(fast_model, iterate_batches(x_train, tc.batch_size, gen),
                                                  optimizer, loss_fn, amp=amp, progress=bar,
                                                  lr_for_step=lambda i: lr_at(first_step + i, tc.epochs * steps,
                                                                              tc.lr, tc.lr_schedule),
                                                  log_every=tc.log_every, stop=stop, epoch=epoch)
                except Interrupted as sig:
                    bar.close()
                    if epoch > 1:
                        hint = f"{kept}; continue with: --resume --out-dir {out_dir}"
                    else:
                        hint = f"{kept} (no epoch finished); start again with --overwrite --out-dir {out_dir}"
                    print(f"interrupted by {sig} during epoch {epoch}; {hint}", file=sys.stderr)
                    raise SystemExit(128 + sig.signum) from None
                except NonFiniteLoss as err:
                    raise TrainingError(f"{err}; training stopped and {kept} (try a lower --lr)") from None
            train_time = time.perf_counter() - t0
            test_terms = evaluate(fast_model, x_test, loss_fn, tc.eval_batch_size, amp=amp, seed=tc.seed)
            if not math.isfinite(test_terms["loss"]):
                # finite training losses, yet the last updates blew the weights up: do not save them
                raise TrainingError(f"the test loss became {test_terms['loss']} after epoch {epoch}, step {steps} "
                                    f"(its last); training stopped and {kept} (try a lower --lr)")
            record = {"epoch": epoch,
                      **{f"train_{k}": v for k, v in train_terms.items()},
                      **{f"test_{k}": v for k, v in test_terms.items()},
                      "train_seconds": train_time, "images_per_second": len(train) / train_time}
            history.append(record)
            try:
                save_checkpoint(ckpt_path, {
                    "kind": kind, "config": dataclasses.asdict(config), "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history,
                    "rng": _rng_state(), "train": dataclasses.asdict(tc), "argv": list(argv),
                })
                kept = f"{ckpt_path} holds epoch {epoch}"
                write_json(out_dir / "history.json", history)
                if epoch == start_epoch + 1:  # with the first checkpoint: a run that fails early replaces nothing
                    write_json(out_dir / "run.json", run_info)
            except OSError as err:  # disk full, folder removed, ...: the replaced files are intact
                raise TrainingError(f"cannot write {err.filename or ckpt_path}: {err.strerror}; "
                                    f"training stopped and {kept}") from None
            print(f"epoch {epoch}/{tc.epochs}  train loss {train_terms['loss']:.2f}  "
                  f"test loss {test_terms['loss']:.2f} ({format_terms(test_terms)})  "
                  f"{train_time:.1f}s, {record['images_per_second']:.0f} img/s", flush=True)
    return {"checkpoint": ckpt_path, "history": history, "config": config, "train": tc}


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn the expected failures (bad data, checkpoint, settings) into one line on stderr and
    exit status 1, and Ctrl-C outside the training loop into one line and status 130, without a
    traceback. Anything else is a bug and keeps its traceback."""
    try:
        yield
    except (DataError, CheckpointError, DeviceError, TrainingError) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        print("interrupted by Ctrl-C", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
