"""Figures for a trained plain autoencoder.

    python vanila_autoencoder/plot.py

Reads <out-dir>/checkpoints/last.pt and writes into <out-dir>/figures/: reconstructions.png,
latent_space.png, loss_curves.png, samples.png (N(0, I) codes and codes uniform over the test
codes' bounding box), manifold.png, interpolation.png.
"""

from __future__ import annotations

from pathlib import Path

from common.latents import uniform_in_box
from common.model_figures import PlotSpec, code_range_axes, plot_main

HERE = Path(__file__).resolve().parent
SPEC = PlotSpec(
    kind="ae",
    name="AE",
    code_name="z",
    loss_terms=("loss",),
    prior_circles=False,
    manifold_axes=code_range_axes,
    manifold_label="the test codes' range",
    extra_samplers=(("z uniform in the test codes' box", uniform_in_box),),
)


def main(argv: list[str] | None = None) -> list[Path]:
    return plot_main(SPEC, argv, HERE, "Figures for a trained plain autoencoder (AE).")


if __name__ == "__main__":
    main()
