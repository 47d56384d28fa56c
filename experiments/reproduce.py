"""Reproduce the README's main results in one command.

    python -m experiments.reproduce                  # into ./reproduction/
    python -m experiments.reproduce --seed 1 --out-dir runs/seed1

Trains the AE, the VAE and the conditional VAE with train.py's defaults (on a CPU all three at
once, an equal share of the cores each: one thread each on 2 cores), draws every plot.py figure
for each, runs the comparison, writes the shipped models, and prints how long each stage took.
Outputs go to --out-dir (default: reproduction/, a new folder): ae/, vae/, cvae/ (checkpoints,
history.json, run.json, latent_codes.npz, figures/), compare/ and models/. The committed results/
are replaced only when asked: --out-dir results --replace-results. A model already trained to
the requested epochs with the same seed (and train.py's defaults otherwise) is skipped, one trained
part-way is resumed, one trained longer or with other settings is refused; --overwrite starts them
afresh. The comparison and the shipped models are replaced where a model was trained in this run
(or with --overwrite or --replace-results); otherwise an existing one is kept when it is what this
run would write, and refused when it is not.
"""

from __future__ import annotations

import argparse
import json
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
from experiments.metrics import estimate_images
from experiments.runs import default_settings, plot_module, run_in_parallel, train_command, train_flags, train_module


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
    p.add_argument("--iwae-images", type=estimate_images, default=1000,
                   help=f"test images for the IWAE, {estimate_images.span()} (default: 1000)")
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


# run name -> (model kind, extra train.py flags, the settings they give): the three models of the README
RUNS = {"ae": ("ae", [], {}), "vae": ("vae", [], {"conditional": False}),
        "cvae": ("vae", ["--conditional"], {"conditional": True})}
COMMITTED_RESULTS = Path(__file__).resolve().parent.parent / "results"


def is_same_comparison(path: Path, compare_argv: list[str]) -> bool:
    """False when there is no comparison at `path` (metrics.json); True when it is the one
    `compare_argv` would make (the same checkpoints, samples, IWAE settings and seed). Another
    comparison is refused: no model was retrained, so it was not made from this run's models."""
    if not os.path.lexists(path):
        return False
    asked = compare.parse_args(compare_argv)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        settings, models = metrics["settings"], metrics["models"]
        checkpoints = {name: model["checkpoint"] for name, model in models.items()}
        used = min(asked.iwae_images, settings.get("test_images", asked.iwae_images))
        differ = [f"{key} {settings.get(key)!r}, not {want!r}" for key, want in (
            ("num_samples", asked.num_samples), ("iwae_k", asked.iwae_k), ("iwae_images", used),
            ("seed", asked.seed)) if settings.get(key) != want]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        differ = ["it cannot be read"]
    else:
        wanted = {name: str(getattr(asked, name)) for name in ("ae", "vae", "cvae") if getattr(asked, name)}
        if checkpoints != wanted:
            differ.insert(0, f"it compares {', '.join(sorted(checkpoints.values()))}")
    if differ:
        raise ProjectError(f"{path} holds another comparison ({differ[0]}) and no model was retrained: pass "
                           f"--overwrite to redo the run, or use another --out-dir")
    return True


def already_shipped(runs: dict[str, Any], replace: set[str], out_dir: Path) -> list[str]:
    """The runs whose shipped model in <out-dir>/models/ is already what shipping them would write;
    a file there that is not, for a run this reproduction does not retrain, is refused."""
    kept = []
    for name in runs:
        path = out_dir / "models" / f"{name}.pt"
        if name in replace or not os.path.lexists(path):
            continue
        if not ship.shipped_from(path, out_dir / name):
            raise ProjectError(f"{path} does not hold {out_dir / name}'s model and {name} is not retrained: pass "
                               f"--overwrite to redo the run, or use another --out-dir")
        kept.append(name)
    return kept


def ship_models(names: list[str], replace: set[str], out_dir: Path) -> None:
    """Ship the runs `names` into <out-dir>/models/, replacing only the files of the runs in `replace`."""
    for overwrite in (True, False):
        group = [str(out_dir / name) for name in names if (name in replace) == overwrite]
        if group:
            ship.main([*group, "--out-dir", str(out_dir / "models"), *(["--overwrite"] if overwrite else [])])


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
        for name, (kind, extra, given) in runs.items():
            flags = train_flags(checkpoint[name], args.epochs, kind, args.overwrite,
                                expected=default_settings(kind, seed=args.seed, **given))
            if flags is None:
                print(f"\n=== train {name}: {checkpoint[name]} already has {args.epochs} epochs, skipped")
            else:
                if flags == [] and args.replace_results:  # results/<name>/ keeps its records, not its checkpoint
                    flags = ["--overwrite"]
                jobs[name] = [*common_flags, *extra, "--out-dir", str(args.out_dir / name),
                              "--epochs", str(args.epochs), "--seed", str(args.seed), *flags]
        # Decided before any training, so that a conflict is reported at once: the comparison and
        # the shipped models are replaced where a model was (re)trained in this run, or when asked
        # (--overwrite, --replace-results); otherwise they must be what this run would write.
        replace = set(jobs) if not (args.overwrite or args.replace_results) else set(runs)
        compare_argv = ["--ae", str(checkpoint["ae"]), "--vae", str(checkpoint["vae"]),
                        *(["--cvae", str(checkpoint["cvae"])] if "cvae" in checkpoint else []),
                        "--out-dir", str(args.out_dir / "compare"), *common_flags,
                        "--iwae-k", str(args.iwae_k), "--iwae-images", str(args.iwae_images), "--seed", str(args.seed)]
        compare_done = not replace and is_same_comparison(args.out_dir / "compare" / "metrics.json", compare_argv)
        shipped = already_shipped(runs, replace, args.out_dir)
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
        for name, (kind, _, _) in runs.items():
            stage(f"plot {name}", lambda: plot_module(kind).main(["--out-dir", str(args.out_dir / name), *common_flags]))
        if compare_done:
            print(f"\n=== compare: {args.out_dir / 'compare' / 'metrics.json'} already compares these models with "
                  f"these settings, kept")
        else:
            stage("compare", lambda: compare.main([*compare_argv, *(["--overwrite"] if replace else [])]))
        models = args.out_dir / "models"
        for name in shipped:
            print(f"\n=== ship: {models / name}.pt already holds {args.out_dir / name}'s model, kept")
        if set(runs) - set(shipped):
            stage("ship", lambda: ship_models([name for name in runs if name not in shipped], replace, args.out_dir))
    timings["total"] = time.perf_counter() - t_start
    print("\n| stage | seconds |\n|---|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.0f} |")
    return timings


if __name__ == "__main__":
    main()
