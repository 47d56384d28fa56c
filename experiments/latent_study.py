"""Latent-size study: train the VAE at several latent sizes with the same settings, then measure
test -ELBO and the IWAE estimate of -log p(x) for each (cf. Kingma & Welling 2014, Fig. 2).

    python -m experiments.latent_study --data-dir ../shared/data --out-dir latent_study \
        --latent-dims 2 5 10 20 --epochs 6 --device cuda

Each size trains into <out-dir>/latent_<d>/ through train.py; a size whose checkpoint already has
--epochs epochs is not trained again, and an unfinished one is resumed, so re-running is cheap.
Writes <out-dir>/latent_study.png (both numbers against latent size), <out-dir>/latent_samples.png
(decoded z ~ N(0, I) for each size) and <out-dir>/study.json, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from common import figures
from common.checkpoint import load_for_inference
from common.codes import decode_codes
from common.conv import MAX_LATENT_DIM
from common.data import DATASETS, load_split
from common.device import DEVICES, get_device
from common.errors import exit_on_error, signals_deferred
from common.files import write_json
from common.metrics import iwae_nll, neg_elbo
from common.options import NumberRange, epochs_int, positive_int, seed_int
from common.trainer import TrainConfig
from experiments.runs import train_flags
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
    parser.add_argument("--iwae-images", type=positive_int, default=1000,
                        help="test images for the -log p(x) estimate (default: 1000)")
    return parser.parse_args(argv)


def train_size(latent_dim: int, run_dir: Path, args: argparse.Namespace) -> Path:
    """Train (or finish) one latent size through train.py; returns its checkpoint."""
    ckpt = run_dir / "checkpoints" / "last.pt"
    argv = ["--latent-dim", str(latent_dim), "--epochs", str(args.epochs), "--out-dir", str(run_dir),
            "--data-dir", str(args.data_dir), "--dataset", args.dataset, "--device", args.device,
            "--seed", str(args.seed), "--download" if args.download else "--no-download"]
    if args.batch_size is not None:
        argv += ["--batch-size", str(args.batch_size)]
    flags = train_flags(ckpt, args.epochs, "vae")
    if flags is None:
        print(f"latent {latent_dim}: {ckpt} already has {args.epochs} epochs, not retrained", flush=True)
        return ckpt
    vae_train.main([*argv, *flags])
    return ckpt


def format_table(rows: list[dict[str, Any]]) -> str:
    k, n = rows[0]["iwae"]["k"], rows[0]["iwae"]["images"]
    lines = [f"| latent size | test −ELBO | recon | KL | IWAE −log p(x) (k={k}, {n} images) | epochs |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['latent_dim']} | {r['neg_elbo']:.2f} | {r['recon']:.2f} | {r['kl']:.2f} | "
                     f"{r['iwae']['nll']:.2f} | {r['epochs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        device = get_device(args.device)
        checkpoints = {d: train_size(d, args.out_dir / f"latent_{d}", args) for d in args.latent_dims}

        test = load_split(args.data_dir, args.dataset, "test", download=args.download)
        x_iwae = test.images[: args.iwae_images]
        rows, panels = [], []
        for d, ckpt in checkpoints.items():
            model, state = load_for_inference(ckpt, device, kind="vae")
            print(f"latent {d}: test -ELBO and IWAE (k={args.iwae_k}, {len(x_iwae)} images) ...", flush=True)
            terms = neg_elbo(model, test.images, EVAL_BATCH, seed=args.seed)
            iwae = iwae_nll(model, x_iwae, args.iwae_k, seed=args.seed)
            rows.append({"latent_dim": d, **terms, "iwae": iwae, "epochs": state["epoch"], "checkpoint": str(ckpt),
                         "train_seconds": sum(h.get("train_seconds", 0.0) for h in state["history"])})
            z = torch.randn(GRID * GRID, d, generator=torch.Generator().manual_seed(args.seed))
            panels.append((f"d = {d}", decode_codes(model, z).numpy()))

        study = {"rows": rows, "settings": {"epochs": args.epochs, "dataset": args.dataset, "seed": args.seed,
                                            "iwae_k": args.iwae_k, "iwae_images": len(x_iwae), "device": str(device)}}
        with signals_deferred():  # SIGINT/SIGTERM wait: the figures and study.json are written together
            dims = [r["latent_dim"] for r in rows]
            curve_figure = figures.plot_latent_study(
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
