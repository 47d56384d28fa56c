"""Reproduce the README's main results in one command.

    python -m experiments.reproduce                  # into ./reproduction/
    python -m experiments.reproduce --seed 1 --out-dir runs/seed1

Trains the AE, the VAE and the conditional VAE with train.py's defaults (on a CPU all three at
once, an equal share of the cores each: one thread each on 2 cores), draws every plot.py figure
for each, runs the comparison, writes the shipped models, and prints how long each stage took.
Outputs go to --out-dir (default: reproduction/, a new folder): ae/, vae/, cvae/ (checkpoints,
history.json, run.json, latent_codes.npz, figures/), compare/ and models/. The committed results/
are replaced only when asked: --out-dir results --replace-results. A model already trained to
the requested epochs with the same seed is skipped, one trained part-way is resumed, one trained
longer or with another seed is refused; --overwrite starts them afresh.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common.device import DEVICES
from common.errors import ProjectError, exit_on_error
from common.loop import TrainConfig
from common.options import epochs_int, positive_int, seed_int
from experiments import compare, ship
from experiments.runs import plot_module, run_in_parallel, train_command, train_flags, train_module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the three models, draw every figure, compare them; timed.")
    p.add_argument("--data-dir", default="data", help="folder holding MNIST/raw/ (default: data)")
    p.add_argument("--out-dir", type=Path, default=Path("reproduction"), help="(default: reproduction)")
    p.add_argument("--replace-results", action="store_true",
                   help="allow --out-dir to be the committed results/ folder, whose files it then replaces")
    p.add_argument("--epochs", type=epochs_int, default=TrainConfig.epochs,
                   help=f"epochs for each model (default: {TrainConfig.epochs}, train.py's default)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto)")
    p.add_argument("--seed", type=seed_int, default=TrainConfig.seed,
                   help=f"seed of every training run and of the comparison (judges, samples, IWAE) "
                        f"(default: {TrainConfig.seed})")
    p.add_argument("--iwae-k", type=positive_int, default=1000, help="importance samples (default: 1000)")
    p.add_argument("--iwae-images", type=positive_int, default=1000, help="test images for the IWAE (default: 1000)")
    p.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=None,
                   help="train the models at once, an equal share of the CPU threads each (default: on a CPU "
                        "with 2+ cores; on 2 cores 1.2-1.3x the throughput of one run on 2 threads)")
    p.add_argument("--cvae", action=argparse.BooleanOptionalAction, default=True,
                   help="also train, plot, compare and ship the conditional VAE (default: on; --no-cvae: the AE "
                        "and the VAE alone, two thirds of the training)")
    p.add_argument("--overwrite", action="store_true", help="retrain the models from scratch")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail instead of trying to download missing data")
    return p.parse_args(argv)


# run name -> (model kind, extra train.py flags): the three models of the README
RUNS = {"ae": ("ae", []), "vae": ("vae", []), "cvae": ("vae", ["--conditional"])}
COMMITTED_RESULTS = Path(__file__).resolve().parent.parent / "results"


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    common_flags = ["--data-dir", str(args.data_dir), "--device", args.device]
    if not args.download:
        common_flags.append("--no-download")
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> None:
        print(f"\n=== {name}", flush=True)
        t0 = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t0
        print(f"=== {name}: {timings[name]:.1f} s", flush=True)

    runs = {name: run for name, run in RUNS.items() if args.cvae or name != "cvae"}
    checkpoint = {name: args.out_dir / name / "checkpoints" / "last.pt" for name in runs}
    t_start = time.perf_counter()
    with exit_on_error():
        if args.out_dir.resolve() == COMMITTED_RESULTS and not args.replace_results:
            raise ProjectError(f"{args.out_dir} holds the committed results; pass --replace-results to replace them, "
                               f"or choose another --out-dir")
        jobs: dict[str, list[str]] = {}
        for name, (kind, extra) in runs.items():
            flags = train_flags(checkpoint[name], args.epochs, kind, args.overwrite,
                                expected={"seed": args.seed, "conditional": name == "cvae"} if kind == "vae"
                                else {"seed": args.seed})
            if flags is None:
                print(f"\n=== train {name}: {checkpoint[name]} already has {args.epochs} epochs, skipped")
            else:
                jobs[name] = [*common_flags, *extra, "--out-dir", str(args.out_dir / name),
                              "--epochs", str(args.epochs), "--seed", str(args.seed), *flags]
        parallel = args.parallel if args.parallel is not None else (
            args.device in ("auto", "cpu") and not torch.cuda.is_available() and (os.cpu_count() or 1) >= 2)
        if parallel and jobs:
            # All runs at once, each with 1/len(RUNS) of the cores (one thread on 2 cores) however many
            # are left, so a resumed run keeps its thread count and its numbers. On 2 cores, three
            # one-thread runs train at the total rate of two (measured under the AVX2 cap: 996
            # against 957 images/s) and end together; two-then-one left a core idle for a third of
            # the time. The share stays 1/len(RUNS) with --no-cvae too: the same models as a full run.
            stage(f"train {' + '.join(jobs)} (at once)", lambda: run_in_parallel(
                [(name, train_command(RUNS[name][0], flags)) for name, flags in jobs.items()], len(RUNS)))
        else:
            for name, flags in jobs.items():
                stage(f"train {name}", lambda: train_module(RUNS[name][0]).main(flags))
        for name, (kind, _) in runs.items():
            stage(f"plot {name}", lambda: plot_module(kind).main(["--out-dir", str(args.out_dir / name), *common_flags]))
        stage("compare", lambda: compare.main([
            "--ae", str(checkpoint["ae"]), "--vae", str(checkpoint["vae"]),
            *(["--cvae", str(checkpoint["cvae"])] if "cvae" in checkpoint else []),
            "--out-dir", str(args.out_dir / "compare"), *common_flags,
            "--iwae-k", str(args.iwae_k), "--iwae-images", str(args.iwae_images), "--seed", str(args.seed)]))
        stage("ship", lambda: ship.main([*(str(args.out_dir / name) for name in runs),
                                         "--out-dir", str(args.out_dir / "models")]))
    timings["total"] = time.perf_counter() - t_start
    print("\n| stage | seconds |\n|---|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.0f} |")
    return timings


if __name__ == "__main__":
    main()
