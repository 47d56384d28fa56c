"""Run-keeping for train.py: the output folder's lock, settings and resume, signals, checkpoints,
history.json, run.json, latent-code snapshots, TensorBoard and the one line per epoch.

    with exit_on_error(), Run("vae", VAEConfig, args, default_out_dir, argv) as run:
        ...  # data, model, optimizer (see a train.py)
        run.restore(model, optimizer)
        for epoch in run.epochs(train_data, test_data, step):
            ...  # train one epoch, evaluate
            run.save(model, optimizer, train_terms, test_terms, seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from common import latents
from common.checkpoint import check_resumable, load_checkpoint, save_checkpoint
from common.cuda_graph import CudaGraphStep
from common.device import autocast, get_device, resolve_precision, rng_state, set_rng_state
from common.errors import CheckpointError, Signalled, TrainingError, WriteError, signals_deferred
from common.files import check_writable, output_lock, removed_if_left_empty, write_json
from common.loop import Batch, NonFiniteLoss, TrainConfig, lr_at
from common.machine import describe_run_environment
from common.options import add_options, merge_options
from common.speed import keep_freed_memory_on
from common.tensorboard_log import log_embedding, log_image_grid, log_terms, open_writer

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # its git commit goes into run.json
SAMPLE_GRID = 10  # TensorBoard's prior-sample grid is SAMPLE_GRID x SAMPLE_GRID


def build_parser(description: str, config_cls: type, default_out_dir: Path) -> argparse.ArgumentParser:
    """train.py's flags: the model config's options, then TrainConfig's, then --resume/--overwrite."""
    parser = argparse.ArgumentParser(description=description)
    add_options(parser, config_cls, "model")
    add_options(parser, TrainConfig, "training", shown_defaults={"out_dir": str(default_out_dir)})
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from <out-dir>/checkpoints/last.pt")
    start.add_argument("--overwrite", action="store_true",
                       help="start afresh even if <out-dir>/checkpoints/last.pt exists (it is replaced)")
    return parser


class Run:
    """One training run's records. Entering takes <out-dir>/.lock (a second run there is refused) and
    settles the settings (flags, checkpoint resumed, defaults) and the device; `epochs()` defers SIGINT
    and SIGTERM to the loop's checks; leaving turns a stop (a signal, a non-finite loss) into one line
    naming what was kept."""

    def __init__(self, kind: str, config_cls: type, args: argparse.Namespace, default_out_dir: Path,
                 argv: list[str] | None):
        self.kind, self.config_cls, self.args = kind, config_cls, args
        self.argv = sys.argv[1:] if argv is None else list(argv)
        self.out_dir = Path(args.out_dir if args.out_dir is not None else default_out_dir)
        self.ckpt_path = self.out_dir / "checkpoints" / "last.pt"
        self.history: list[dict[str, float]] = []
        self.start_epoch = self.epoch = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Run:
        with contextlib.ExitStack() as stack:
            # outermost, so that it runs after the lock is let go: a run that fails before its first
            # checkpoint (no data, say) leaves none of the folders it made
            stack.enter_context(removed_if_left_empty(self.ckpt_path.parent))
            stack.enter_context(output_lock(self.out_dir))
            self._settings()
            self.device = get_device(self.train.device)
            self.precision = resolve_precision(self.train.precision, self.device)
            keep_freed_memory_on(self.device)  # no page faults on every step's activations (common/speed.py)
            check_writable(self.out_dir / "checkpoints")
            self._stack = stack.pop_all()
        return self

    def _settings(self) -> None:
        args, path = self.args, self.ckpt_path
        self.saved: dict[str, Any] | None = None
        if args.resume:
            self.saved = load_checkpoint(path, kind=self.kind)
            check_resumable(path, self.saved)
        elif path.exists() and not args.overwrite:
            raise TrainingError(f"{path} already exists: pass --resume to continue it or --overwrite to replace it")
        elif not args.overwrite:  # the records of a run whose checkpoint is gone (results/ae/, say)
            records = [name for name in ("history.json", "run.json", latents.FILE_NAME)
                       if os.path.lexists(self.out_dir / name)]
            if records:
                raise TrainingError(f"{self.out_dir} holds {', '.join(records)} of an earlier run but no "
                                    f"checkpoint: pass --overwrite to replace them, or use another --out-dir")
        saved = self.saved
        train_values = merge_options(TrainConfig, args, saved.get("train", {}) if saved else None)
        train_values["out_dir"] = str(self.out_dir)
        self.train = TrainConfig(**train_values)
        try:
            self.config = self.config_cls(**merge_options(self.config_cls, args, saved["config"] if saved else None))
        except (TypeError, ValueError) as err:
            raise TrainingError(f"invalid model settings: {err}") from None
        if saved is not None and saved["epoch"] >= self.train.epochs:
            raise TrainingError(f"{path} already has {saved['epoch']} epochs; pass --epochs N with N > "
                                f"{saved['epoch']} to train further")

    def amp(self) -> contextlib.AbstractContextManager:
        """A fresh autocast context for the run's device and precision (bf16 or none)."""
        return autocast(self.device, self.precision)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """On --resume: the saved weights, Adam's state, the RNG state and the history; else nothing."""
        if self.saved is None:
            return
        try:
            model.load_state_dict(self.saved["model"])
            optimizer.load_state_dict(self.saved["optimizer"])
            set_rng_state(self.saved["rng"], next(model.parameters()).device)
        except (RuntimeError, ValueError, TypeError, KeyError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{self.ckpt_path} cannot be resumed, its saved state does not fit: "
                                  f"{reason[:200]}") from None
        self.history = list(self.saved["history"])
        self.start_epoch = self.saved["epoch"]

    def epochs(self, train_data: Batch, test_data: Batch, step: object = None) -> Iterator[int]:
        """The epochs still to train; first prints what runs where."""
        tc = self.train
        # from here on Ctrl-C and SIGTERM wait for the loop's next check (between two steps)
        self.check_stop = self._stack.enter_context(signals_deferred())
        self.num_train, self.test_data = len(train_data[0]), test_data
        self.steps = math.ceil(self.num_train / tc.batch_size)
        self.subset = latents.subset_indices(len(test_data[0]))
        self.writer = None
        if tc.tensorboard:  # a resumed run drops the events a crashed run logged after its checkpoint
            self.writer = self._stack.enter_context(
                open_writer(self.out_dir / "tensorboard", purge_step=self.start_epoch * self.steps))
        self.run_info = {"argv": self.argv, "kind": self.kind, "config": dataclasses.asdict(self.config),
                         "train": dataclasses.asdict(tc), "device": str(self.device), "precision": self.precision,
                         "environment": describe_run_environment(self.device, PROJECT_ROOT)}
        graphed = ", CUDA graph" if isinstance(step, CudaGraphStep) else ""
        print(f"training {self.kind} on {self.device} ({self.precision}, "
              f"{'channels_last' if tc.channels_last else 'NCHW'}{graphed}), {self.num_train} train / "
              f"{len(test_data[0])} test images, epochs {self.start_epoch + 1}..{tc.epochs}", flush=True)
        for epoch in range(self.start_epoch + 1, tc.epochs + 1):
            self.epoch = epoch
            if epoch > 1:
                self.kept = f"{self.ckpt_path} still holds epoch {epoch - 1}"
            else:  # a fresh run (with --overwrite, an older run's file may be there: it is not touched)
                self.kept = (f"{self.ckpt_path} is unchanged" if self.ckpt_path.exists()
                             else f"nothing was saved to {self.ckpt_path}")
            with tqdm(total=self.steps, desc=f"epoch {epoch}/{tc.epochs}", leave=False, disable=None) as self.bar:
                yield epoch

    def lr_for_step(self, i: int) -> float:
        """The learning rate of step i (0-based) of the current epoch (common/loop.lr_at)."""
        tc = self.train
        return lr_at((self.epoch - 1) * self.steps + i, tc.epochs * self.steps, tc.lr, tc.lr_schedule)

    def on_log(self, step: int, terms: dict[str, float]) -> None:
        """At the loop's read-backs: the progress bar, and TensorBoard's training curves."""
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{terms['loss']:.2f}", refresh=False)
        if self.writer is not None:
            log_terms(self.writer, "train", terms, (self.epoch - 1) * self.steps + step)

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, train_terms: dict[str, float],
             test_terms: dict[str, float], seconds: float) -> None:
        """After an epoch: the checkpoint first, then the files that describe it, then one line."""
        epoch, tc = self.epoch, self.train
        self.bar.close()
        if not math.isfinite(test_terms["loss"]):
            # finite training losses, yet the last updates blew the weights up: do not save them
            raise TrainingError(f"the test loss became {test_terms['loss']} after epoch {epoch}, step {self.steps} "
                                f"(its last); training stopped and {self.kept} (try a lower --lr)")
        record = {"epoch": epoch, **{f"train_{k}": v for k, v in train_terms.items()},
                  **{f"test_{k}": v for k, v in test_terms.items()},
                  "train_seconds": seconds, "images_per_second": self.num_train / seconds}
        self.history.append(record)
        if self.writer is not None:
            log_terms(self.writer, "test", test_terms, epoch * self.steps)
        try:
            save_checkpoint(self.ckpt_path, {
                "kind": self.kind, "config": dataclasses.asdict(self.config), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "epoch": epoch, "history": self.history,
                "rng": rng_state(self.device), "train": dataclasses.asdict(tc), "argv": self.argv,
            })
            self.kept = f"{self.ckpt_path} holds epoch {epoch}"
            write_json(self.out_dir / "history.json", self.history)
            self._snapshot(model, epoch * self.steps)
            if epoch == self.start_epoch + 1:  # with the first checkpoint: a run that fails early replaces nothing
                write_json(self.out_dir / "run.json", self.run_info)
        except WriteError as err:  # disk full, folder removed, ...: names the file, which is left as it was
            raise TrainingError(f"{err}; training stopped and {self.kept}") from None
        terms = ", ".join(f"{k} {v:.2f}" for k, v in test_terms.items() if k != "loss")
        print(f"epoch {epoch}/{tc.epochs}  train loss {train_terms['loss']:.2f}  test loss {test_terms['loss']:.2f} "
              f"({terms})  {seconds:.1f}s, {record['images_per_second']:.0f} img/s", flush=True)

    def _snapshot(self, model: nn.Module, step: int) -> None:
        """The fixed test subset's codes into latent_codes.npz; with TensorBoard also decoded
        z ~ N(0, I) (the same z every epoch) and the codes for the projector."""
        images, labels = self.test_data[0][self.subset], self.test_data[1][self.subset]
        codes = latents.encode_codes(model, images, labels=labels)
        latents.append_epoch(self.out_dir / latents.FILE_NAME, self.epoch, codes, labels, self.subset)
        if self.writer is not None:
            z = torch.randn(SAMPLE_GRID**2, codes.shape[1], generator=torch.Generator().manual_seed(0))
            samples = latents.decode_codes(model, z, labels=latents.balanced_labels(SAMPLE_GRID**2))
            log_image_grid(self.writer, "samples/prior", samples, step, nrow=SAMPLE_GRID)
            log_embedding(self.writer, codes, labels.cpu(), images.float().cpu(), step)

    @property
    def result(self) -> dict[str, Any]:
        return {"checkpoint": self.ckpt_path, "history": self.history, "config": self.config, "train": self.train}

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._stack.__exit__(exc_type, exc, tb)
        except Signalled:  # came after the last step was saved: the run is complete
            if exc is not None:
                raise
        if isinstance(exc, Signalled) and self.epoch:
            if getattr(self, "bar", None) is not None:
                self.bar.close()
            if self.epoch > 1:
                hint = f"{self.kept}; continue with: --resume --out-dir {self.out_dir}"
            else:
                hint = f"{self.kept} (no epoch finished); start again with --overwrite --out-dir {self.out_dir}"
            print(f"interrupted by {exc} during epoch {self.epoch}; {hint}", file=sys.stderr)
            raise SystemExit(128 + exc.signum) from None
        if isinstance(exc, NonFiniteLoss):
            raise TrainingError(f"{exc}; training stopped and {self.kept} (try a lower --lr)") from None
