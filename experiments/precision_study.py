"""Does bf16 training cost the VAE any quality? Paired runs over several seeds.

    python -m experiments.precision_study --seeds 0 1 2 3 4 5

For each seed, trains the VAE with train.py's defaults twice, once with `--precision bf16` and
once with `--precision fp32` (same seed, same data order, same everything else), then prints each
seed's test -ELBO in both precisions, their difference, and the mean difference with its standard
error and a 95 % t-interval.

Why several seeds: one training run's final -ELBO moves by about half a nat under anything that
changes floating-point rounding, the number of CPU threads included, because the rounding
differences grow over 3,750 optimiser steps into a different trajectory. So a single bf16/fp32
pair mostly measures that chaos; the mean over seeds measures what bf16 itself costs.

Runs go to --out-dir/vae_{precision} (seed 0) and vae_{precision}_seed{S}; a run already trained
to the requested epochs is reused, one trained part-way is resumed, one trained longer, or with
settings other than train.py's defaults and its seed and precision, is refused (--overwrite
retrains every run from scratch).
The table is also written to --out-dir/summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path

import scipy.stats

from common.device import DEVICES
from common.errors import TrainingError, exit_on_error
from common.files import write_json
from common.loop import TrainConfig
from common.options import NumberRange, epochs_int, seed_int
from experiments.runs import default_settings, run_in_parallel, train_command, train_flags

PRECISIONS = ("bf16", "fp32")


def run_dir(out_dir: Path, precision: str, seed: int) -> Path:
    return out_dir / (f"vae_{precision}" if seed == 0 else f"vae_{precision}_seed{seed}")


def paired_summary(diffs: list[float]) -> dict[str, float]:
    """Mean of paired differences, its standard error and a 95 % t-interval (needs 2+ pairs for
    the spread; with one pair only the mean is given)."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "mean": mean}
    sd = statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    t = float(scipy.stats.t.ppf(0.975, n - 1))
    return {"n": n, "mean": mean, "sd": sd, "se": se, "ci95_low": mean - t * se, "ci95_high": mean + t * se}


def final_neg_elbo(run: Path, precision: str, seed: int, epochs: int) -> float:
    """Test -ELBO after the last epoch, checked against what the run was asked to be."""
    try:
        info = json.loads((run / "run.json").read_text())
        history = json.loads((run / "history.json").read_text())
        matches = (info["precision"], info["train"]["seed"], len(history)) == (precision, seed, epochs)
        value = history[-1]["test_neg_elbo"]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise TrainingError(f"cannot read the result of {run}: {err}") from None
    if not matches:
        raise TrainingError(f"{run} is not a finished {precision} run with seed {seed} and {epochs} epochs")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="VAE test -ELBO in bf16 against fp32, paired by seed.")
    p.add_argument("--data-dir", default="data", help="folder holding MNIST/raw/ (default: data)")
    p.add_argument("--out-dir", type=Path, default=Path("results/precision"), help="(default: results/precision)")
    p.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2, 3, 4, 5],
                   help=f"each {seed_int.span()} (default: 0 1 2 3 4 5)")
    p.add_argument("--epochs", type=epochs_int, default=TrainConfig.epochs,
                   help=f"(default: {TrainConfig.epochs}, train.py's default)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto)")
    p.add_argument("--jobs", type=NumberRange(int, 1, 64), default=None,
                   help="runs at once, sharing the CPU cores (default: 2 on a CPU with 2+ cores, else 1)")
    p.add_argument("--overwrite", action="store_true", help="retrain every run from scratch")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail instead of trying to download missing data")
    args = p.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    jobs = args.jobs or (2 if args.device in ("auto", "cpu") and (os.cpu_count() or 1) >= 2 else 1)
    todo: list[tuple[str, list[str]]] = []
    with exit_on_error():
        for seed in args.seeds:
            for precision in PRECISIONS:
                out = run_dir(args.out_dir, precision, seed)
                flags = train_flags(out / "checkpoints" / "last.pt", args.epochs, "vae", args.overwrite,
                                    expected=default_settings("vae", seed=seed, precision=precision))
                if flags is None:
                    print(f"{out}: already trained, reused", flush=True)
                    continue
                cmd = train_command("vae", ["--data-dir", str(args.data_dir), "--device", args.device,
                                            "--precision", precision, "--seed", str(seed),
                                            "--epochs", str(args.epochs), "--out-dir", str(out), *flags])
                if not args.download:
                    cmd.append("--no-download")
                todo.append((f"{precision} seed {seed}", cmd))
        run_in_parallel(todo, jobs, share_cores=args.device in ("auto", "cpu"))

        rows = []
        for seed in args.seeds:
            bf16, fp32 = (final_neg_elbo(run_dir(args.out_dir, p, seed), p, seed, args.epochs) for p in PRECISIONS)
            rows.append({"seed": seed, "bf16": bf16, "fp32": fp32, "diff": bf16 - fp32})
        summary = {"epochs": args.epochs, "rows": rows, "diff": paired_summary([r["diff"] for r in rows])}
        write_json(args.out_dir / "summary.json", summary)  # a full disk: one line, like every other failure

    print("\n| seed | bf16 | fp32 | bf16 - fp32 |\n|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['bf16']:.2f} | {r['fp32']:.2f} | {r['diff']:+.2f} |")
    d = summary["diff"]
    line = f"\nmean bf16 - fp32 over {d['n']} seeds: {d['mean']:+.2f} nats"
    if "se" in d:
        line += (f" (sd {d['sd']:.2f}, standard error {d['se']:.2f}, 95 % interval {d['ci95_low']:+.2f} to "
                 f"{d['ci95_high']:+.2f})")
    print(line)
    return summary


if __name__ == "__main__":
    main()
