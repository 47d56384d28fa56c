"""Write the shipped models: weights-only copies of trained runs, small enough to commit.

    python -m experiments.ship results/ae results/vae results/cvae --out-dir results/models --overwrite
    python -m experiments.ship <run>/vae_binarized --max-bytes 2000000   # latent size 20: 1.5 MB

For each run folder, reads <run>/checkpoints/last.pt and writes <out-dir>/<run name>.pt holding
only what figures and metrics need: kind, config, the model's weights, the history, the training
settings and the run's latent_codes.npz (for latent_evolution.gif); no optimizer or RNG state, so
it cannot be resumed. `plot.py --checkpoint` and the comparison read these files like last.pt.

A file already in <out-dir> is replaced only with --overwrite, and two runs whose folders share a
name (a/vae, b/vae) are refused: they would be shipped to the same file. Every run is read and
checked before the first file is written.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import FORMAT_VERSION, load_checkpoint
from common.errors import ProjectError, exit_on_error
from common.files import atomic_write
from common.latents import FILE_NAME, read_code_history
from common.options import NumberRange

MAX_BYTES = 1_000_000  # what a shipped model may weigh, unless --max-bytes says otherwise
SHIPPED_KEYS = ("kind", "config", "model", "epoch", "history", "train", "argv")


def _serialised(state: dict[str, Any]) -> bytes:
    """The file torch.save writes for `state`, in memory: its size is known before anything is replaced."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    return buffer.getvalue()


def shipped_state(run_dir: Path, max_bytes: int = MAX_BYTES) -> tuple[dict[str, Any], bytes]:
    """The weights-only copy of the run in `run_dir`, and its file's bytes: with the run's
    latent-code history when that still fits in `max_bytes` (the weights themselves are never rounded)."""
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    shipped = {key: state[key] for key in SHIPPED_KEYS if key in state}
    if (run_dir / FILE_NAME).is_file():
        history = read_code_history(run_dir / FILE_NAME)
        # the codes exactly (figures drawn from the file equal the run's); labels and indices fit int16
        with_codes = {**shipped, "latent_codes": {"epochs": torch.from_numpy(history.epochs),
                                                  "codes": torch.from_numpy(history.codes),
                                                  "labels": torch.from_numpy(history.labels).short(),
                                                  "indices": torch.from_numpy(history.indices).short()}}
        data = _serialised(with_codes)
        if len(data) <= max_bytes:
            return with_codes, data
        print(f"{run_dir}: shipped without its latent-code history, which would take it over {max_bytes:,} bytes")
    data = _serialised(shipped)
    if len(data) > max_bytes:
        raise ProjectError(f"{run_dir}'s model would weigh {len(data):,} bytes, more than {max_bytes:,}: not shipped "
                           f"(--max-bytes)")
    return shipped, data


def shipped_from(path: Path, run_dir: Path) -> bool:
    """Whether the model file at `path` is what shipping the run in `run_dir` would write: the same
    kind, config, weights, epochs and history (so that replacing it would change nothing)."""
    try:
        shipped = load_checkpoint(path)
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    except ProjectError:
        return False
    return (all(shipped.get(key) == state.get(key) for key in ("kind", "config", "epoch", "history", "train"))
            and shipped["model"].keys() == state["model"].keys()
            and all(torch.equal(shipped["model"][k], state["model"][k]) for k in state["model"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write weights-only copies of trained runs (the shipped models).")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders holding checkpoints/last.pt")
    parser.add_argument("--out-dir", type=Path, default=Path("results/models"),
                        help="where <run name>.pt go (default: results/models)")
    parser.add_argument("--overwrite", action="store_true", help="replace model files already in --out-dir")
    parser.add_argument("--max-bytes", type=NumberRange(int, 1, 10**9), default=MAX_BYTES,
                        help=f"the most a model file may weigh (default: {MAX_BYTES:,}, small enough to commit)")
    return parser.parse_args(argv)


def targets(runs: list[Path], out_dir: Path) -> dict[Path, Path]:
    """run folder -> the file it is shipped to; a folder named twice counts once, two folders with
    one name (a/vae, b/vae) are refused."""
    found: dict[Path, Path] = {}
    for run in runs:
        if any(other.resolve() == run.resolve() for other in found):
            continue
        out_path = out_dir / f"{run.resolve().name}.pt"  # resolved: "." is shipped under its folder's name
        clash = next((other for other, path in found.items() if path == out_path), None)
        if clash is not None:
            raise ProjectError(f"{clash} and {run} would both be shipped to {out_path}; ship them into different "
                               f"--out-dir folders")
        found[run] = out_path
    return found


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    with exit_on_error():
        plan = targets(args.runs, args.out_dir)
        existing = [path for path in plan.values() if os.path.lexists(path)]
        if existing and not args.overwrite:
            raise ProjectError(f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}: "
                               f"pass --overwrite to replace {'it' if len(existing) == 1 else 'them'}, or use "
                               f"another --out-dir")
        files = {run: shipped_state(run, args.max_bytes)[1] for run in plan}  # every run checked before anything is written
        written = [atomic_write(out_path, lambda f, data=files[run]: f.write(data)) for run, out_path in plan.items()]
    for path in written:
        print(f"{path}  {path.stat().st_size:,} bytes")
    return written


if __name__ == "__main__":
    main()
