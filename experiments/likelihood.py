"""A VAE checkpoint's likelihood on the test set: −ELBO and the IWAE bound on −log p(x), in nats.

    python -m experiments.likelihood results/models/vae_binarized_d20.pt --iwae-k 1000

Evaluates on the split the model was trained for: a model trained with --binarize dynamic is
scored on the one fixed binary test set (Burda et al., 2016), as published likelihoods are. The
IWAE estimate is reported with its standard error over the images; --out writes it all as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.checkpoint import load_for_inference
from common.data import data_dir_for, evaluation_split, load_split
from common.device import DEVICES, get_device
from common.errors import CheckpointError, DataError, exit_on_error
from common.files import write_json
from common.options import positive_int, seed_int
from common.speed import keep_freed_memory_on
from experiments.metrics import estimate_images, iwae_nll, neg_elbo
from experiments.slots import refuse_to_replace


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="-ELBO and the IWAE bound of a VAE checkpoint on the test set.")
    p.add_argument("checkpoint", type=Path, help="a VAE checkpoint (last.pt or a shipped model)")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: the training folder if it exists "
                                      "here, else data)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download the dataset when missing (default: true)")
    p.add_argument("--iwae-k", type=positive_int, default=1000, help="importance samples per image (default: 1000)")
    p.add_argument("--iwae-images", type=estimate_images,
                   help=f"the first N test images, {estimate_images.span()} (default: all)")
    p.add_argument("--seed", type=seed_int, default=0, help=f"the estimates' noise, {seed_int.span()} (default: 0)")
    p.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    p.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        if args.out is not None:
            refuse_to_replace(args.out.parent, [args.out.name], args.overwrite, "estimate", flag="--out")
        model, state = load_for_inference(args.checkpoint, device := get_device(args.device), kind="vae")
        keep_freed_memory_on(device)  # the IWAE's decodes reuse their memory (common/speed.py)
        if model.config.conditional:
            raise CheckpointError(f"{args.checkpoint} is a conditional VAE: its likelihood is log p(x | y), not "
                                  f"comparable with log p(x); give an unconditional VAE")
        train = state.get("train", {})
        binarize = train.get("binarize", "none")
        dataset = train.get("dataset", "mnist")
        test = load_split(data_dir_for(args.data_dir, train), dataset, "test", download=args.download)
        test = evaluation_split(test, binarize)
        if len(test) < 2:
            raise DataError(f"the {dataset} test split holds {len(test)} image; the estimates' standard error needs "
                            f"2 at least")
        x = test.images[: args.iwae_images]
        print(f"{args.checkpoint}: d = {model.latent_dim}, {dataset} ({'binarized' if binarize != 'none' else 'grey'}"
              f" test set), IWAE k = {args.iwae_k} on {len(x)} images ...", flush=True)
        result = {"checkpoint": str(args.checkpoint), "latent_dim": model.latent_dim, "dataset": dataset,
                  "binarize": binarize, "epochs": state.get("epoch"), **neg_elbo(model, x, seed=args.seed),
                  "iwae": iwae_nll(model, x, args.iwae_k, seed=args.seed), "seed": args.seed, "device": str(device)}
        if args.out is not None:
            write_json(args.out, result)
    iwae = result["iwae"]
    print(f"test −ELBO {result['neg_elbo']:.2f} nats (reconstruction {result['recon']:.2f}, KL {result['kl']:.2f}); "
          f"IWAE −log p(x) {iwae['nll']:.2f} ± {iwae['se']:.2f} (k = {iwae['k']}, {iwae['images']} images)")
    return result


if __name__ == "__main__":
    main()
