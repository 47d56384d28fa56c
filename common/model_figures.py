"""Every figure of one trained model, which is what each plot.py runs: load a checkpoint and the
test set, compute each figure's arrays (common/latents.py), draw them (common/figures.py).

What differs by model (loss terms, prior circles, random codes, what the code is called) comes in
through `PlotSpec`, so this file never asks which model it has.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from common import figures, latents
from common.checkpoint import load_for_inference
from common.data import DATASETS, NUM_CLASSES, data_dir_for, evaluation_split, load_split
from common.device import DEVICES, get_device
from common.errors import CheckpointError, Signalled, exit_on_error
from common.files import check_writable, output_lock, publish, removed_if_left_empty, staging_folder
from common.options import NumberRange, seed_int
from common.registry import GenerativeModel

GRID = 10  # samples.png is GRID x GRID
MANIFOLD = 20  # manifold.png is MANIFOLD x MANIFOLD
MAX_RECONSTRUCTIONS = 100  # reconstructions.png is one inch per digit wide
Sampler = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]  # (codes, n, generator) -> (n, d)
AxesFn = Callable[[torch.Tensor, int], torch.Tensor]  # (codes, n) -> values along z0 and z1, shape (2, n)


@dataclass(frozen=True)
class PlotSpec:
    kind: str  # registry kind of the checkpoints this plot.py reads
    name: str  # for titles
    code_name: str  # what the point code is called in titles: "z", "μ"
    loss_terms: tuple[str, ...]  # panels of loss_curves.png
    prior_circles: bool  # draw N(0, I) circles on the latent scatter
    manifold_axes: AxesFn  # where manifold.png's grid lies
    manifold_label: str  # how its title describes that grid
    extra_samplers: tuple[tuple[str, Sampler], ...] = ()  # sample panels besides N(0, I)


def normal_quantile_axes(codes: torch.Tensor, n: int) -> torch.Tensor:
    """Standard-normal quantiles of linspace(0.05, 0.95, n): equal prior mass between points."""
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    return torch.stack([q, q])


def code_range_axes(codes: torch.Tensor, n: int) -> torch.Tensor:
    """From the smallest to the largest test code along each of the first two dimensions."""
    lo, hi = codes[:, :2].min(0).values, codes[:, :2].max(0).values
    return torch.stack([torch.linspace(float(lo[i]), float(hi[i]), n) for i in range(2)])


def build_plot_parser(description: str, default_out_dir: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out-dir", type=Path, default=default_out_dir,
                        help=f"figures go to <out-dir>/figures/ (default: {default_out_dir})")
    parser.add_argument("--checkpoint", type=Path, help="(default: <out-dir>/checkpoints/last.pt)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: the one used for training if it "
                                           "exists here, else data)")
    parser.add_argument("--dataset", choices=tuple(DATASETS),
                        help="the one the model was trained on, the only one it is drawn with (default: that one)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="download the dataset when missing (default: true)")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="(default: cpu)")
    parser.add_argument("--num-images", type=NumberRange(int, 1, MAX_RECONSTRUCTIONS), default=10,
                        help=f"test digits in reconstructions.png, 1 to {MAX_RECONSTRUCTIONS} (default: 10)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help=f"picks digits and random codes, {seed_int.span()} (default: 0)")
    return parser


def make_figures(model: GenerativeModel, history: list[dict[str, float]], test_x: torch.Tensor, test_y: torch.Tensor,
                 out_dir: Path, spec: PlotSpec, num_images: int = 10, seed: int = 0,
                 codes_per_epoch: latents.CodeHistory | None = None) -> list[Path]:
    """Every figure of one model into out_dir; returns their paths. With `codes_per_epoch` also
    latent_evolution.gif; a conditional model (the only one to use labels) gets conditional_grid.png
    instead of manifold.png."""
    gen = torch.Generator().manual_seed(seed)
    d = model.latent_dim
    conditional = getattr(model, "conditional", False)
    name = f"conditional {spec.name}" if conditional else spec.name  # for titles
    written: list[Path] = []

    pick = torch.randperm(len(test_x), generator=gen)[:num_images]
    written.append(figures.plot_reconstructions(
        test_x[pick].numpy(), latents.reconstruct(model, test_x[pick], labels=test_y[pick]).numpy(),
        out_dir / "reconstructions.png",
        title=f"{name}: test digits (top) and reconstructions (bottom)"))

    codes = latents.encode_codes(model, test_x, labels=test_y)  # (N, d): each image's point code
    dims = "" if d == 2 else (f" (first 2 of {d} dims)" if d > 2 else " (1-D, z[1] = 0)")
    written.append(figures.plot_latent_space(latents.first_two_dims(codes.numpy()), test_y.numpy(),
                                             out_dir / "latent_space.png",
                                             title=f"{name}: test-set {spec.code_name}{dims}",
                                             prior_circles=spec.prior_circles))

    terms = tuple(t for t in spec.loss_terms if history and f"test_{t}" in history[0])
    written.append(figures.plot_loss_curves(history, out_dir / "loss_curves.png", terms=terms,
                                            title=f"{name}: loss per epoch"))

    n = GRID * GRID
    wanted = latents.balanced_labels(n)  # for a conditional model: each row of the grid shows 0..9
    panels = [("z ~ N(0, I)", latents.decode_codes(model, torch.randn(n, d, generator=gen), labels=wanted).numpy())]
    for label, sampler in spec.extra_samplers:
        panels.append((label, latents.decode_codes(model, sampler(codes, n, gen), labels=wanted).numpy()))
    written.append(figures.plot_image_panels(panels, GRID, GRID, out_dir / "samples.png",
                                             title=f"{name}: decoded random codes"))

    if d >= 2 and not conditional:
        axes = spec.manifold_axes(codes, MANIFOLD)
        grid = latents.decode_codes(model, latents.grid_codes(axes, d)).numpy()
        rest = "" if d == 2 else f"; z[2:{d}] = 0"
        written.append(figures.plot_image_grid(
            grid, MANIFOLD, MANIFOLD, out_dir / "manifold.png",
            title=f"{name}: decoded grid over z[0], z[1] at {spec.manifold_label}{rest}"))

    pairs, steps = 8, 10
    ends = torch.randperm(len(test_x), generator=gen)[: 2 * pairs]
    z = latents.interpolate(codes[ends[:pairs]], codes[ends[pairs:]], steps)
    start_labels = test_y[ends[:pairs]].repeat_interleave(steps)  # a conditional model keeps the first digit
    written.append(figures.plot_image_grid(latents.decode_codes(model, z, labels=start_labels).numpy(), pairs, steps,
                                           out_dir / "interpolation.png",
                                           title=f"{name}: straight lines between two test digits' codes"))

    if conditional:
        written.append(conditional_grid(model, out_dir / "conditional_grid.png", name, seed))

    if codes_per_epoch is not None:
        panel = (f"{name} {spec.code_name}", codes_per_epoch.epochs, latents.first_two_dims(codes_per_epoch.codes),
                 codes_per_epoch.labels, spec.prior_circles)
        written.append(figures.plot_latent_evolution([panel], out_dir / "latent_evolution.gif"))
    return written


def conditional_grid(model: GenerativeModel, path: Path, name: str, seed: int = 0, columns: int = GRID) -> Path:
    """One row per digit 0..9, one column per shared z ~ N(0, I): a "style" written as every digit."""
    z = torch.randn(columns, model.latent_dim, generator=torch.Generator().manual_seed(seed + 1))
    digits = torch.arange(NUM_CLASSES)
    images = latents.decode_codes(model, z.repeat(NUM_CLASSES, 1), labels=digits.repeat_interleave(columns))
    return figures.plot_image_grid(images.numpy(), NUM_CLASSES, columns, path,
                                   title=f"{name}: rows = digits 0-9, columns = shared z ~ N(0, I)")


def plot_main(spec: PlotSpec, argv: list[str] | None, default_out_dir: Path, description: str) -> list[Path]:
    """plot.py: every figure of the checkpoint into <out-dir>/figures/, all replaced together.

    It holds <out-dir>/.lock (no overlap with a training run or another plot.py) and draws into a
    staging folder first, so an interrupted or failed run leaves the earlier figures, and says so."""
    args = build_plot_parser(description, default_out_dir).parse_args(argv)
    figures_dir = args.out_dir / "figures"
    with exit_on_error(), removed_if_left_empty(figures_dir), output_lock(args.out_dir):
        try:
            ckpt = args.checkpoint or args.out_dir / "checkpoints" / "last.pt"
            model, state = load_for_inference(ckpt, get_device(args.device), kind=spec.kind)
            train_cfg = state.get("train", {})
            data_dir = data_dir_for(args.data_dir, train_cfg)
            dataset = train_cfg.get("dataset", "mnist")
            if args.dataset not in (None, dataset):
                raise CheckpointError(f"--dataset {args.dataset}: {ckpt} was trained on {dataset}; drop the flag")
            check_writable(figures_dir)  # before the slow part
            # the split the model was evaluated on: the fixed binary test set after --binarize dynamic
            test = evaluation_split(load_split(data_dir, dataset, "test", download=args.download),
                                    train_cfg.get("binarize", "none"))
            with staging_folder(figures_dir) as staged:
                drawn = make_figures(model, state.get("history", []), test.images, test.labels, staged, spec,
                                     args.num_images, args.seed, codes_per_epoch=latents.find_code_history(ckpt, state))
                written = publish(drawn, figures_dir)
        except Signalled as stop:
            if stop.kept:  # from publish, which holds signals back: every figure was replaced
                raise
            raise Signalled(stop.signum, f"no figure in {figures_dir} was replaced (any there are from an "
                                         f"earlier run)") from None
    for path in written:
        print(path)
    return written
