"""The VAE at several latent sizes: train each with the same settings, then measure it.

For each size: test -ELBO, the IWAE estimate of -log p(x), the active units and the KL per latent
dimension (cf. Kingma & Welling 2014, Fig. 2; Burda et al. 2016 for active units).

    python -m experiments.latent_study --out-dir latent_study \
        --latent-dims 2 5 10 20 --epochs 6 --device cuda

The binarized-MNIST likelihood protocol (Burda et al. 2016) is a mode of it: --binarize dynamic
trains on Bernoulli draws of the images and evaluates on one fixed binary test set;
--iwae-images 10000 --iwae-k 5000 gives the published estimator, and --k-sweep 100 1000 5000 shows
how the estimate of the best size moves with k.

Each size trains into <out-dir>/latent_<d>/ through train.py (--jobs N runs N sizes at once as
subprocesses); a size whose checkpoint already has --epochs epochs is not trained again, and an
unfinished one is resumed, so re-running is cheap. Only a run trained with exactly these settings
(train.py's defaults and the flags given here) is reused: one with others (another --lr, say) is
refused, and so is a study.json made with other settings (besides a smaller --epochs, which the
runs are extended from); --overwrite retrains such runs and replaces the study.
Writes <out-dir>/latent_study.png (both numbers against latent size), <out-dir>/latent_samples.png
(decoded z ~ N(0, I) for each size) and <out-dir>/study.json, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from common import figures
from common.checkpoint import load_for_inference
from common.data import BINARIZATIONS, DATASETS, evaluation_split, load_split
from common.device import DEVICES, get_device
from common.errors import CheckpointError, DataError, TrainingError, exit_on_error, signals_deferred
from common.files import write_json
from common.latents import decode_codes
from common.loop import TrainConfig
from common.nets import MAX_LATENT_DIM
from common.options import NumberRange, epochs_int, learning_rate, positive_int, seed_int
from common.speed import keep_freed_memory_on
from experiments import figures as study_figures
from experiments.metrics import estimate_images, iwae_nll, neg_elbo, posterior_diagnostics, posterior_parameters
from experiments.runs import default_settings, run_in_parallel, train_command, train_flags
from experiments.slots import trained_with
from variational_autoencoder import train as vae_train

GRID = 10  # samples per size: GRID x GRID
EVAL_BATCH = 1000  # images per inference batch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and evaluate the VAE at several latent sizes.")
    parser.add_argument("--latent-dims", type=NumberRange(int, 1, MAX_LATENT_DIM), nargs="+",
                        default=[2, 5, 10, 20],
                        help=f"latent sizes to train, each 1 to {MAX_LATENT_DIM} (default: 2 5 10 20)")
    parser.add_argument("--epochs", type=epochs_int, default=TrainConfig.epochs,
                        help=f"epochs for every size (default: {TrainConfig.epochs}, train.py's)")
    parser.add_argument("--batch-size", type=positive_int, help="training batch size (default: train.py's)")
    parser.add_argument("--lr", type=learning_rate,
                        help=f"peak learning rate, {learning_rate.span()} (default: train.py's)")
    parser.add_argument("--binarize", choices=BINARIZATIONS, default="none",
                        help="none: grey levels; dynamic: binarized MNIST as in Burda et al. 2016 (default: none)")
    parser.add_argument("--jobs", type=NumberRange(int, 1, 64), default=1,
                        help="sizes trained at once, as subprocesses (on a CPU they share the cores; default: 1)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help=f"training seed and evaluation noise, {seed_int.span()} (default: 0)")
    parser.add_argument("--out-dir", type=Path, default=Path("latent_study"),
                        help="runs go to <out-dir>/latent_<d>/ (default: latent_study)")
    parser.add_argument("--data-dir", default=TrainConfig.data_dir,
                        help=f"folder holding MNIST/raw/ (default: {TrainConfig.data_dir})")
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="mnist", help="(default: mnist)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download the dataset when missing (default: true)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto: cuda, then mps, then cpu)")
    parser.add_argument("--iwae-k", type=positive_int, default=1000,
                        help="importance samples per image for -log p(x) (default: 1000)")
    parser.add_argument("--iwae-images", type=estimate_images, default=1000,
                        help=f"test images for the -log p(x) estimate, {estimate_images.span()} (default: 1000; "
                             f"10000: all)")
    parser.add_argument("--k-sweep", type=positive_int, nargs="*", default=[],
                        help="also estimate -log p(x) of the best size with each of these k (default: none)")
    parser.add_argument("--k-sweep-images", type=estimate_images, default=1000,
                        help=f"test images for the k sweep, {estimate_images.span()} (default: 1000)")
    parser.add_argument("--final-k", type=positive_int,
                        help="also estimate -log p(x) of the best size with this k on the --iwae-images "
                             "(the published protocol: 5000 on all 10000; default: none)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a study.json made with other settings, and retrain the sizes trained with "
                             "other settings (those trained with these are reused)")
    args = parser.parse_args(argv)
    if len(set(args.latent_dims)) != len(args.latent_dims):
        parser.error(f"--latent-dims must be distinct, got {' '.join(map(str, args.latent_dims))}")
    return args


def expected_settings(latent_dim: int, args: argparse.Namespace) -> dict[str, object]:
    """What a run of this study at `latent_dim` was trained with (train.py's defaults otherwise)."""
    given = {"latent_dim": latent_dim, "seed": args.seed, "dataset": args.dataset, "binarize": args.binarize}
    given.update({name: value for name, value in (("lr", args.lr), ("batch_size", args.batch_size))
                  if value is not None})
    return default_settings("vae", **given)


def study_settings(args: argparse.Namespace, test_images: int | None) -> dict[str, Any]:
    """How the study ran, as study.json records it (the device apart): the settings every size is
    trained with (train.py's defaults where no flag was given) and the evaluation's, with the image
    counts used (at most the test split's `test_images`)."""
    def used(n: int) -> int:
        return min(n, test_images) if test_images else n

    trained = expected_settings(args.latent_dims[0], args)
    return {"epochs": args.epochs, "dataset": args.dataset, "seed": args.seed, "binarize": args.binarize,
            "lr": trained["lr"], "batch_size": trained["batch_size"], "latent_dims": list(args.latent_dims),
            "iwae_k": args.iwae_k, "iwae_images": used(args.iwae_images), "k_sweep": list(args.k_sweep),
            "k_sweep_images": used(args.k_sweep_images) if args.k_sweep else None, "final_k": args.final_k,
            "test_images": test_images}


def check_earlier_study(path: Path, args: argparse.Namespace) -> None:
    """A study.json already at `path` is replaced only when it records the same study (its runs
    may be extended to more epochs), or with --overwrite."""
    if args.overwrite or not os.path.lexists(path):
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))["settings"]
        wanted = study_settings(args, old.get("test_images"))
        differ = [name for name in wanted if name not in ("epochs", "test_images") and old.get(name) != wanted[name]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        differ = ["(unreadable)"]
    if differ:
        what = ("it cannot be read" if differ == ["(unreadable)"] else
                f"{differ[0]} {old.get(differ[0])!r}, not {wanted[differ[0]]!r}")
        raise TrainingError(f"{path} records a study with other settings ({what}): pass --overwrite to replace it "
                            f"(sizes trained with these settings are reused), or use another --out-dir")


def train_flags_for(latent_dim: int, run_dir: Path, args: argparse.Namespace) -> list[str] | None:
    """train.py's flags for one latent size, or None when its run is already complete; a run made
    with other settings is refused, or with --overwrite retrained."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    try:
        flags = train_flags(ckpt, args.epochs, "vae", expected=expected_settings(latent_dim, args))
    except (TrainingError, CheckpointError):
        if not args.overwrite:
            raise
        print(f"latent {latent_dim}: {ckpt} is not a run of this study; retrained from scratch (--overwrite)",
              flush=True)
        flags = ["--overwrite"]
    if flags is None:
        print(f"latent {latent_dim}: {run_dir} already has {args.epochs} epochs, not retrained", flush=True)
        return None
    argv = ["--latent-dim", str(latent_dim), "--epochs", str(args.epochs), "--out-dir", str(run_dir),
            "--data-dir", str(args.data_dir), "--dataset", args.dataset, "--device", args.device,
            "--seed", str(args.seed), "--binarize", args.binarize, "--download" if args.download else "--no-download"]
    for flag, value in (("--batch-size", args.batch_size), ("--lr", args.lr)):
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, *flags]


def train_sizes(args: argparse.Namespace) -> tuple[dict[int, Path], dict[int, str]]:
    """Train (or finish) every latent size through train.py; returns their checkpoints and what
    this run did to each ("reused", "resumed" or "trained")."""
    runs = {d: args.out_dir / f"latent_{d}" for d in args.latent_dims}
    plan = {d: train_flags_for(d, runs[d], args) for d in runs}  # every size checked before any trains
    todo = [(d, flags) for d, flags in plan.items() if flags is not None]
    if args.jobs > 1:
        run_in_parallel([(f"d={d}", train_command("vae", flags)) for d, flags in todo], args.jobs,
                        share_cores=args.device in ("auto", "cpu") and not torch.cuda.is_available())
    else:
        for _, flags in todo:
            vae_train.main(flags)
    done = {d: "reused" if flags is None else "resumed" if "--resume" in flags else "trained"
            for d, flags in plan.items()}
    return {d: run / "checkpoints" / "last.pt" for d, run in runs.items()}, done


def format_table(rows: list[dict[str, Any]]) -> str:
    k, n = rows[0]["iwae"]["k"], rows[0]["iwae"]["images"]
    lines = [f"| latent size | test −ELBO | recon | KL | IWAE −log p(x) (k={k}, {n} images) | active units | "
             f"KL(q(z) ‖ p(z)) | epochs |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        post = r["posterior"]
        lines.append(f"| {r['latent_dim']} | {r['neg_elbo']:.2f} | {r['recon']:.2f} | {r['kl']:.2f} | "
                     f"{r['iwae']['nll']:.2f} ± {r['iwae']['se']:.2f} | {post['active_units']['active']} of "
                     f"{r['latent_dim']} | "
                     f"{post['aggregate_kl']['kl']:.2f} | {r['epochs']} |")
    lines.append("")
    for r in rows:  # largest first: how the KL (the information in z) spreads over the dimensions
        per_dim = sorted(r["posterior"]["kl_per_dim"], reverse=True)
        lines.append(f"KL per dimension, d = {r['latent_dim']} (nats, largest first): "
                     + ", ".join(f"{v:.2f}" for v in per_dim))
        for est in [*r.get("k_sweep", []), *([r["iwae_final"]] if "iwae_final" in r else [])]:
            lines.append(f"d = {r['latent_dim']}: IWAE −log p(x) with k = {est['k']} on {est['images']} images: "
                         f"{est['nll']:.2f} ± {est['se']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        device = get_device(args.device)
        keep_freed_memory_on(device)  # the IWAE's decodes reuse their memory (common/host_memory.py)
        check_earlier_study(args.out_dir / "study.json", args)
        checkpoints, done = train_sizes(args)

        test = evaluation_split(load_split(args.data_dir, args.dataset, "test", download=args.download), args.binarize)
        if len(test) < 2:
            raise DataError(f"the {args.dataset} test split holds {len(test)} image; the study's standard errors "
                            f"need 2 at least")
        x_iwae = test.images[: args.iwae_images]
        rows, panels = [], []
        for d, ckpt in checkpoints.items():
            model, state = load_for_inference(ckpt, device, kind="vae")
            print(f"latent {d}: test -ELBO and IWAE (k={args.iwae_k}, {len(x_iwae)} images) ...", flush=True)
            terms = neg_elbo(model, test.images, EVAL_BATCH, seed=args.seed)
            iwae = iwae_nll(model, x_iwae, args.iwae_k, seed=args.seed)
            posterior = posterior_diagnostics(*posterior_parameters(model, test.images, EVAL_BATCH), seed=args.seed)
            rows.append({"latent_dim": d, **terms, "iwae": iwae, "posterior": posterior, "epochs": state["epoch"],
                         "checkpoint": str(ckpt), "this_run": done[d], "trained_with": trained_with(state),
                         "train_seconds": sum(h.get("train_seconds", 0.0) for h in state["history"])})
            z = torch.randn(GRID * GRID, d, generator=torch.Generator().manual_seed(args.seed))
            panels.append((f"d = {d}", decode_codes(model, z).numpy()))

        settings = {**study_settings(args, len(test)), "device": str(device)}
        write_json(args.out_dir / "study.json", {"rows": rows, "settings": settings})  # kept if a later step fails
        best = min(rows, key=lambda r: r["neg_elbo"])
        if args.k_sweep or args.final_k:
            model, _ = load_for_inference(checkpoints[best["latent_dim"]], device, kind="vae")
        for k in args.k_sweep:
            x_sweep = test.images[: args.k_sweep_images]
            print(f"latent {best['latent_dim']}: IWAE with k={k} on {len(x_sweep)} images ...", flush=True)
            best.setdefault("k_sweep", []).append(iwae_nll(model, x_sweep, k, seed=args.seed))
            write_json(args.out_dir / "study.json", {"rows": rows, "settings": settings})
        if args.final_k:
            print(f"latent {best['latent_dim']}: IWAE with k={args.final_k} on {len(x_iwae)} images ...", flush=True)
            best["iwae_final"] = iwae_nll(model, x_iwae, args.final_k, seed=args.seed)

        study = {"rows": rows, "settings": settings}
        with signals_deferred():  # SIGINT/SIGTERM wait: the figures and study.json are written together
            dims = [r["latent_dim"] for r in rows]
            curve_figure = study_figures.plot_latent_study(
                dims, {"test −ELBO": [r["neg_elbo"] for r in rows],
                       f"IWAE −log p(x), k={args.iwae_k}": [r["iwae"]["nll"] for r in rows]},
                args.out_dir / "latent_study.png", title=f"VAE on {args.dataset}, {args.epochs} epochs per size")
            samples_figure = figures.plot_image_panels(panels, GRID, GRID, args.out_dir / "latent_samples.png",
                                                       title="VAE: decoded z ~ N(0, I) by latent size")
            write_json(args.out_dir / "study.json", study)
    print(format_table(rows))
    for path in (curve_figure, samples_figure, args.out_dir / "study.json"):
        print(path)
    return study


if __name__ == "__main__":
    main()
