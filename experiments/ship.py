"""Write the shipped models: weights-only copies of trained runs, small enough to commit.

    python -m experiments.ship results/ae results/vae results/cvae --out-dir results/models

For each run folder, reads <run>/checkpoints/last.pt and writes <out-dir>/<run name>.pt holding
only what figures and metrics need: kind, config, the model's weights, the history, the training
settings and the run's latent_codes.npz (for latent_evolution.gif); no optimizer or RNG state, so
it cannot be resumed. `plot.py --checkpoint` and the comparison read these files like last.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.checkpoint import load_checkpoint, save_checkpoint
from common.errors import ProjectError, exit_on_error
from common.latents import FILE_NAME, read_code_history

MAX_BYTES = 1_000_000  # what a shipped model may weigh
SHIPPED_KEYS = ("kind", "config", "model", "epoch", "history", "train", "argv")


def ship(run_dir: Path, out_path: Path) -> Path:
    """Write the weights-only copy of the run in `run_dir` to `out_path`, with its latent-code
    history when that still fits in MAX_BYTES (the weights themselves are never rounded)."""
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    shipped = {key: state[key] for key in SHIPPED_KEYS if key in state}
    if (run_dir / FILE_NAME).is_file():
        history = read_code_history(run_dir / FILE_NAME)
        codes = {"epochs": history.epochs, "codes": history.codes, "labels": history.labels,
                 "indices": history.indices}
        # the codes exactly (figures drawn from the file equal the run's); labels and indices fit int16
        with_codes = {**shipped, "latent_codes": {"epochs": torch.from_numpy(codes["epochs"]),
                                                  "codes": torch.from_numpy(codes["codes"]),
                                                  "labels": torch.from_numpy(codes["labels"]).short(),
                                                  "indices": torch.from_numpy(codes["indices"]).short()}}
        save_checkpoint(out_path, with_codes)
        if out_path.stat().st_size <= MAX_BYTES:
            return out_path
        print(f"{out_path}: without its latent-code history, which would take it over {MAX_BYTES:,} bytes")
    save_checkpoint(out_path, shipped)
    size = out_path.stat().st_size
    if size > MAX_BYTES:
        out_path.unlink()
        raise ProjectError(f"{out_path} would weigh {size:,} bytes, more than {MAX_BYTES:,}: not shipped")
    return out_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write weights-only copies of trained runs (the shipped models).")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders holding checkpoints/last.pt")
    parser.add_argument("--out-dir", type=Path, default=Path("results/models"),
                        help="where <run name>.pt go (default: results/models)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    with exit_on_error():
        written = [ship(run, args.out_dir / f"{run.name}.pt") for run in args.runs]
    for path in written:
        print(f"{path}  {path.stat().st_size:,} bytes")
    return written


if __name__ == "__main__":
    main()
