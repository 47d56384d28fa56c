"""Figures for a trained variational autoencoder.

    python variational_autoencoder/plot.py

Reads <out-dir>/checkpoints/last.pt and writes into <out-dir>/figures/: reconstructions.png,
latent_space.png (posterior means), loss_curves.png (-ELBO, reconstruction and KL apart),
samples.png (z ~ N(0, I)), manifold.png, interpolation.png.
"""

from __future__ import annotations

from pathlib import Path

from common.model_figures import PlotSpec, normal_quantile_axes, plot_main

HERE = Path(__file__).resolve().parent
SPEC = PlotSpec(
    kind="vae",
    name="VAE",
    code_name="μ",
    loss_terms=("neg_elbo", "recon", "kl"),
    prior_circles=True,
    manifold_axes=normal_quantile_axes,
    manifold_label="N(0,1) quantiles 0.05..0.95",
)


def main(argv: list[str] | None = None) -> list[Path]:
    return plot_main(SPEC, argv, HERE, "Figures for a trained variational autoencoder (VAE).")


if __name__ == "__main__":
    main()
