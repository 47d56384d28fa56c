"""Everything around the training loop: settings, start or resume, signals, per-epoch checkpoints.

    run_training(kind=..., model_cls=..., config_cls=..., loss_fn=..., args=...)

builds the model (or restores it with its optimizer and RNG state from <out-dir>/checkpoints/last.pt
on --resume), then for each epoch runs `train_one_epoch` and `evaluate` (common/loop.py), writes
the checkpoint, history.json and run.json, and prints one line. Ctrl-C or SIGTERM stops it between
two steps with one line saying what was kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from common import code_history
from common.checkpoint import check_resumable, load_checkpoint, save_checkpoint, unwrap
from common.codes import balanced_labels, decode_codes, encode_codes
from common.conv import ConvNetConfig
from common.data import (BINARIZATIONS, DATASETS, binarization_generator, binarized, epoch_generator,
                         evaluation_split, iterate_batches, load_dataset)
from common.device import DEVICES, PRECISIONS, autocast, get_device, resolve_precision, rng_state, set_rng_state
from common.errors import CheckpointError, TrainingError, WriteError
from common.files import check_writable, write_json
from common.host_memory import keep_freed_memory_on
from common.lock import output_lock
from common.loop import (LR_SCHEDULES, CudaGraphStep, LossFn, NonFiniteLoss, evaluate, lr_at, make_optimizer, make_step,
                         train_one_epoch)
from common.machine import describe_run_environment
from common.options import (add_options, check_options, epochs_int, merge_options, option, positive_float,
                            positive_int, seed_int)
from common.tensorboard_log import log_embedding, log_image_grid, log_terms, open_writer

COMPILE_MODES = ("off", "default", "reduce-overhead")
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # its git commit goes into run.json
SAMPLE_GRID = 10  # TensorBoard's prior-sample grid is SAMPLE_GRID x SAMPLE_GRID


@dataclass
class TrainConfig:
    """How to train (not what). Runtime options may change on --resume."""

    epochs: int = option(8, "total epochs (on --resume: the total to reach)", parse=epochs_int, runtime=True)
    batch_size: int = option(128, "images per optimisation step", parse=positive_int)
    lr: float = option(2e-3, "Adam learning rate (the peak, with a schedule)", parse=positive_float)
    lr_schedule: str = option("cosine", "constant, or cosine decay to 0 over --epochs, step by step",
                              choices=LR_SCHEDULES)
    seed: int = option(0, "seeds initialisation, shuffling and the VAE's noise", parse=seed_int)
    data_dir: str = option("data", "folder holding MNIST/raw/ (torchvision's layout)", runtime=True)
    dataset: str = option("mnist", "which MNIST-format dataset", choices=tuple(DATASETS))
    binarize: str = option("none", "none: grey levels; dynamic: every training image drawn as Bernoulli(intensity) "
                                   "afresh each time it is used, evaluation on one fixed binary test set",
                           choices=BINARIZATIONS)
    download: bool = option(True, "download the dataset when missing", runtime=True)
    out_dir: str = option(".", "where checkpoints/, figures/, history.json and run.json go", runtime=True)
    device: str = option("auto", "auto: cuda, then mps, then cpu", choices=DEVICES, runtime=True)
    precision: str = option("auto", "bf16 autocast or fp32; auto: bf16 where the hardware is fast at it",
                            choices=PRECISIONS, runtime=True)
    channels_last: bool = option(True, "NHWC memory format: faster convolutions on CPU and GPU", runtime=True)
    compile: str = option("off", "torch.compile the model: off, default, or reduce-overhead (CUDA graphs: fewer "
                                 "kernel launches on a GPU)", choices=COMPILE_MODES, runtime=True)
    cuda_graph: bool = option(True, "on CUDA: replay the step's forward and backward as one captured CUDA graph "
                                    "(one launch instead of one per kernel; ignored on a CPU and with --compile)",
                              runtime=True)
    eval_batch_size: int = option(1000, "images per batch when evaluating", parse=positive_int, runtime=True)
    log_every: int = option(50, "steps between progress-bar refreshes (each one syncs the device)",
                            parse=positive_int, runtime=True)
    tensorboard: bool = option(False, "also log to <out-dir>/tensorboard/ (pip install -e .[tensorboard])",
                               runtime=True)

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):  # checkpoints written when --compile was a switch
            self.compile = "default" if self.compile else "off"
        check_options(self)  # ranges and choices, as for the flags: saved settings are held to them too


def build_parser(description: str, config_cls: type[ConvNetConfig], default_out_dir: Path) -> argparse.ArgumentParser:
    """train.py's flags: the model config's options, then TrainConfig's, then --resume/--overwrite."""
    parser = argparse.ArgumentParser(description=description)
    add_options(parser, config_cls, "model")
    add_options(parser, TrainConfig, "training", shown_defaults={"out_dir": str(default_out_dir)})
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from <out-dir>/checkpoints/last.pt")
    start.add_argument("--overwrite", action="store_true",
                       help="start afresh even if <out-dir>/checkpoints/last.pt exists (it is replaced)")
    return parser


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Any]:
    """Turn SIGINT/SIGTERM into a flag; the returned `check()` raises Interrupted once it is up.
    The loop calls it between steps, so a checkpoint being written is never cut short. Outside
    the main thread (where Python cannot install handlers) the flag never rises."""
    flag: dict[str, int | None] = {"signum": None}

    def check() -> None:
        if flag["signum"] is not None:
            raise Interrupted(flag["signum"])

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def handler(signum: int, frame: object) -> None:
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def snapshot_epoch(model: nn.Module, epoch: int, step: int, out_dir: Path, test_x: torch.Tensor,
                   test_y: torch.Tensor, subset: torch.Tensor, writer: Any | None) -> None:
    """After each epoch: the codes of the fixed test subset into latent_codes.npz; with TensorBoard
    also a grid of decoded z ~ N(0, I) (the same z every epoch) and the codes for the projector."""
    labels = test_y[subset]
    codes = encode_codes(model, test_x[subset], labels=labels)
    code_history.append_epoch(out_dir / code_history.FILE_NAME, epoch, codes, labels, subset)
    if writer is not None:
        z = torch.randn(SAMPLE_GRID**2, codes.shape[1], generator=torch.Generator().manual_seed(0))
        samples = decode_codes(model, z, labels=balanced_labels(SAMPLE_GRID**2))
        log_image_grid(writer, "samples/prior", samples, step, nrow=SAMPLE_GRID)
        log_embedding(writer, codes, test_y[subset].cpu(), test_x[subset].float().cpu(), step)


def format_terms(terms: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in terms.items() if k != "loss")


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any], ckpt_path: Path) -> None:
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"], next(model.parameters()).device)
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{ckpt_path} cannot be resumed, its saved state does not fit: {reason[:200]}") from None


def run_training(
    *,
    kind: str,
    model_cls: type[nn.Module],
    config_cls: type[ConvNetConfig],
    loss_fn: LossFn,
    args: argparse.Namespace,
    default_out_dir: Path,
    argv: list[str],
) -> dict[str, Any]:
    """Build (or resume) a model and train it; returns {"checkpoint", "history", "config", "train"}.
    The whole run holds <out-dir>/.lock (common/lock.py), taken before anything in the folder is
    looked at: a second run into the same folder, --overwrite or not, is refused."""
    out_dir = Path(args.out_dir if args.out_dir is not None else default_out_dir)
    with output_lock(out_dir):
        return _train(kind=kind, model_cls=model_cls, config_cls=config_cls, loss_fn=loss_fn, args=args,
                      out_dir=out_dir, argv=argv)


def _train(
    *,
    kind: str,
    model_cls: type[nn.Module],
    config_cls: type[ConvNetConfig],
    loss_fn: LossFn,
    args: argparse.Namespace,
    out_dir: Path,
    argv: list[str],
) -> dict[str, Any]:
    # --- settings: flags, the checkpoint being resumed, defaults
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    saved = None
    if args.resume:
        saved = load_checkpoint(ckpt_path, kind=kind)
        check_resumable(ckpt_path, saved)
    elif ckpt_path.exists() and not args.overwrite:
        raise TrainingError(f"{ckpt_path} already exists: pass --resume to continue it or --overwrite to replace it")
    train_values = merge_options(TrainConfig, args, saved.get("train", {}) if saved else None)
    train_values["out_dir"] = str(out_dir)
    tc = TrainConfig(**train_values)
    try:
        config = config_cls(**merge_options(config_cls, args, saved["config"] if saved else None))
    except (TypeError, ValueError) as err:
        raise TrainingError(f"invalid model settings: {err}") from None
    if saved is not None and saved["epoch"] >= tc.epochs:
        raise TrainingError(f"{ckpt_path} already has {saved['epoch']} epochs; pass --epochs N with N > "
                            f"{saved['epoch']} to train further")

    # --- device, data, model, optimizer
    device = get_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    keep_freed_memory_on(device)  # no page faults on every step's activations (common/host_memory.py)
    check_writable(out_dir / "checkpoints")
    train, test = load_dataset(tc.data_dir, tc.dataset, download=tc.download)
    test = evaluation_split(test, tc.binarize)
    torch.manual_seed(tc.seed)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model = model_cls(config).to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model, tc.lr)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if saved is not None:
        _restore(model, optimizer, saved, ckpt_path)
        history = list(saved["history"])
        start_epoch = saved["epoch"]
    # The whole dataset lives on the device from here on: no per-step host -> device copies.
    train_data = (train.images.to(device).contiguous(memory_format=memory_format), train.labels.to(device))
    test_data = (test.images.to(device).contiguous(memory_format=memory_format), test.labels.to(device))
    fast_model = model if tc.compile == "off" else torch.compile(model, mode=tc.compile)
    amp = lambda: autocast(device, precision)  # noqa: E731
    # one step object for the whole run: a CUDA graph is captured once, then replayed every epoch
    train_step = make_step(fast_model, optimizer, loss_fn, amp, cuda_graph=tc.cuda_graph and tc.compile == "off")
    subset = code_history.subset_indices(len(test))
    steps = math.ceil(len(train) / tc.batch_size)
    # a resumed run drops the events a crashed run logged after its checkpoint
    writer = open_writer(out_dir / "tensorboard", purge_step=start_epoch * steps) if tc.tensorboard else None

    run_info = {"argv": argv, "kind": kind, "config": dataclasses.asdict(config),
                "train": dataclasses.asdict(tc), "device": str(device), "precision": precision,
                "environment": describe_run_environment(device, PROJECT_ROOT)}
    graphed = ", CUDA graph" if isinstance(train_step, CudaGraphStep) else ""
    print(f"training {kind} on {device} ({precision}, {'channels_last' if tc.channels_last else 'NCHW'}{graphed}), "
          f"{len(train)} train / {len(test)} test images, epochs {start_epoch + 1}..{tc.epochs}", flush=True)

    # --- the epochs
    with stop_on_signals() as check_stop, writer if writer is not None else contextlib.nullcontext():
        for epoch in range(start_epoch + 1, tc.epochs + 1):
            t0 = time.perf_counter()
            if epoch > 1:
                kept = f"{ckpt_path} still holds epoch {epoch - 1}"
            else:  # a fresh run (with --overwrite, an older run's file may be there: it is not touched)
                kept = f"{ckpt_path} is unchanged" if ckpt_path.exists() else f"nothing was saved to {ckpt_path}"
            first_step = (epoch - 1) * steps
            batches = iterate_batches(train_data, tc.batch_size, epoch_generator(tc.seed, epoch))
            if tc.binarize == "dynamic":
                batches = binarized(batches, binarization_generator(tc.seed, epoch, device))
            with tqdm(total=steps, desc=f"epoch {epoch}/{tc.epochs}", leave=False, disable=None) as bar:
                try:
                    train_terms = train_one_epoch(
                        fast_model, batches, optimizer, loss_fn, amp=amp, progress=bar, log_every=tc.log_every,
                        check_stop=check_stop,
                        lr_for_step=lambda i: lr_at(first_step + i, tc.epochs * steps, tc.lr, tc.lr_schedule),
                        on_log=None if writer is None else lambda i, terms: log_terms(writer, "train", terms,
                                                                                      first_step + i),
                        epoch=epoch, train_step=train_step)
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
            test_terms = evaluate(fast_model, test_data, loss_fn, tc.eval_batch_size, amp=amp, seed=tc.seed)
            if not math.isfinite(test_terms["loss"]):
                # finite training losses, yet the last updates blew the weights up: do not save them
                raise TrainingError(f"the test loss became {test_terms['loss']} after epoch {epoch}, step {steps} "
                                    f"(its last); training stopped and {kept} (try a lower --lr)")
            record = {"epoch": epoch,
                      **{f"train_{k}": v for k, v in train_terms.items()},
                      **{f"test_{k}": v for k, v in test_terms.items()},
                      "train_seconds": train_time, "images_per_second": len(train) / train_time}
            history.append(record)
            if writer is not None:
                log_terms(writer, "test", test_terms, epoch * steps)

            # --- save: checkpoint first, then the files that describe it
            try:
                save_checkpoint(ckpt_path, {
                    "kind": kind, "config": dataclasses.asdict(config), "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history,
                    "rng": rng_state(device), "train": dataclasses.asdict(tc), "argv": list(argv),
                })
                kept = f"{ckpt_path} holds epoch {epoch}"
                write_json(out_dir / "history.json", history)
                snapshot_epoch(model, epoch, epoch * steps, out_dir, test_data[0], test_data[1], subset, writer)
                if epoch == start_epoch + 1:  # with the first checkpoint: a run that fails early replaces nothing
                    write_json(out_dir / "run.json", run_info)
            except WriteError as err:  # disk full, folder removed, ...: names the file, which is left as it was
                raise TrainingError(f"{err}; training stopped and {kept}") from None
            print(f"epoch {epoch}/{tc.epochs}  train loss {train_terms['loss']:.2f}  "
                  f"test loss {test_terms['loss']:.2f} ({format_terms(test_terms)})  "
                  f"{train_time:.1f}s, {record['images_per_second']:.0f} img/s", flush=True)
    return {"checkpoint": ckpt_path, "history": history, "config": config, "train": tc}
