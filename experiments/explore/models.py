"""The explorer's models: the three checkpoints loaded and checked, and codes decoded to PNG images.

Every import from common/ of the explorer package is in this module (the errors are re-exported
from here), so that it is the one place to re-point when common/ is reorganised. Of a model the
explorer uses only `decode(z, y)` (through common.latents.decode_codes), `latent_dim` and, for a
VAE, `config.conditional`.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from common.checkpoint import load_for_inference
from common.data import DATASETS, NUM_CLASSES
from common.errors import ProjectError, exit_on_error
from common.latents import decode_codes, find_code_history
from common.options import NumberRange

__all__ = ["NUM_CLASSES", "Explorer", "Model", "NumberRange", "ProjectError", "class_names", "exit_on_error",
           "load_explorer", "load_model", "plane_view", "png_bytes", "to_uint8"]

NUM_SAMPLES = 16  # prior draws per press of the sample button, shown as a 4 x 4 grid
GRID_COLUMNS = 4
GMM_COMPONENTS = 10  # the AE's fair chance, as in experiments/compare.py
GMM_SEED = 0
PRIOR_EXTENT = 3.0  # every plane shows [-3, 3]^2 at least: the prior's 2σ circle with room around it
VIEW_PADDING = 0.05  # share of the view's half-width added on every side of the codes


@dataclass(frozen=True)
class Model:
    """One loaded model and what the page draws for it."""

    name: str  # the API's name: "ae", "vae" or "cvae"
    module: nn.Module
    latent_dim: int
    conditional: bool
    dataset: str  # the training dataset's name ("mnist", "fashion-mnist")
    binarize: str  # how its training images were drawn ("none": grey levels; "dynamic": binary)
    checkpoint: Path
    codes: np.ndarray | None  # (n, latent_dim) float32: the fixed test subset's codes after the last epoch
    labels: np.ndarray | None  # (n,) int64: their classes
    epoch: int | None  # the epoch those codes are from


def class_names(dataset: str) -> list[str]:
    """The names of the dataset's classes: the digits for MNIST, torchvision's names otherwise."""
    if dataset == "mnist":
        return [str(digit) for digit in range(NUM_CLASSES)]
    if dataset not in DATASETS:
        raise ProjectError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    import torchvision  # only here: a second or so of start-up that MNIST does not need

    return list(getattr(torchvision.datasets, DATASETS[dataset]).classes)


def _last_codes(flag: str, path: Path, state: dict[str, Any], latent_dim: int
                ) -> tuple[np.ndarray | None, np.ndarray | None, int | None]:
    """The test codes after the last recorded epoch (embedded in the checkpoint, or its run's
    latent_codes.npz), checked, or (None, None, None) when there are none."""
    history = find_code_history(path, state)
    if history is None:
        return None, None, None
    codes, labels = history.codes, history.labels
    if (codes.ndim != 3 or len(codes) == 0 or codes.shape[2] != latent_dim or labels.shape != (codes.shape[1],)
            or len(history.epochs) != len(codes)):
        raise ProjectError(f"{flag}: {path} holds malformed latent codes (shape {codes.shape} for latent size "
                           f"{latent_dim}, {labels.shape[0]} labels)")
    if not np.isfinite(codes[-1]).all() or labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise ProjectError(f"{flag}: {path} holds latent codes that are NaN or infinite, or labels outside "
                           f"0..{NUM_CLASSES - 1}")
    return codes[-1], labels, int(history.epochs[-1])


def load_model(name: str, path: str | Path, *, kind: str, conditional: bool) -> Model:
    """The checkpoint given to --<name>, which must hold a model of `kind` ("ae", "vae") and be
    conditional or not as asked; every failure is a one-line ProjectError naming the flag."""
    flag, path = f"--{name}", Path(path)
    try:
        module, state = load_for_inference(path, "cpu", kind=kind)
        is_conditional = bool(getattr(module.config, "conditional", False))  # the AE's config has no such field
        if is_conditional != conditional:
            wanted = ("a conditional VAE (trained with --conditional)" if conditional
                      else "a VAE that is not conditional")
            raise ProjectError(f"{path} holds {'a conditional' if is_conditional else 'an unconditional'} VAE; "
                               f"{flag} needs {wanted}")
        if module.latent_dim < 2:
            raise ProjectError(f"{path} has latent size {module.latent_dim}; the explorer draws a latent plane, "
                               f"which needs 2 or more")
        codes, labels, epoch = _last_codes(flag, path, state, module.latent_dim)
    except ProjectError as err:
        message = str(err)
        raise ProjectError(message if message.startswith(flag) else f"{flag}: {message}") from None
    train = state.get("train")
    dataset = train.get("dataset", "mnist") if isinstance(train, dict) else "mnist"
    binarize = train.get("binarize", "none") if isinstance(train, dict) else "none"
    return Model(name, module, module.latent_dim, is_conditional, dataset, binarize, path, codes, labels, epoch)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) intensities in [0, 1] -> (N, H, W) uint8, rounded to the nearest grey level."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, H, W) -> one (rows * H, columns * W) image, row by row, with no gap (N a multiple of columns)."""
    n, h, w = images.shape
    rows = n // columns
    return images.reshape(rows, columns, h, w).transpose(0, 2, 1, 3).reshape(rows * h, columns * w)


def png_bytes(image: np.ndarray) -> bytes:
    """A (H, W) uint8 array as a greyscale PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def plane_view(codes: np.ndarray | None) -> list[float]:
    """[x_min, x_max, y_min, y_max] of the square a plane shows: the codes' box and the prior's
    [-3, 3]^2 around the origin, padded (one scale on both axes, so circles stay circles)."""
    lo, hi = np.full(2, -PRIOR_EXTENT), np.full(2, PRIOR_EXTENT)
    if codes is not None:
        lo, hi = np.minimum(lo, codes[:, :2].min(0)), np.maximum(hi, codes[:, :2].max(0))
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * (1 + VIEW_PADDING)
    return [float(centre[0] - half), float(centre[0] + half), float(centre[1] - half), float(centre[1] + half)]


def _fit_mixture(codes: np.ndarray) -> Any:
    from experiments.samplers import fit_gmm  # here: scikit-learn takes a second to import, off the start-up path

    return fit_gmm(codes, GMM_COMPONENTS, GMM_SEED)


class Explorer:
    """The three models, and a Gaussian mixture fitted to the AE's test codes: what the server
    answers from. Thread-safe: the server decodes in one thread per connection."""

    def __init__(self, ae: Model, vae: Model, cvae: Model):
        if ae.codes is None or len(ae.codes) < GMM_COMPONENTS:
            raise ProjectError(f"--ae: {ae.checkpoint} has no latent codes, or fewer than {GMM_COMPONENTS} (no "
                               f"latent_codes entry and no latent_codes.npz in its run folder): the AE's plane and "
                               f"its {GMM_COMPONENTS}-component mixture need them")
        datasets = {ae.dataset, vae.dataset, cvae.dataset}
        if len(datasets) > 1:
            raise ProjectError(f"the checkpoints were trained on different datasets ({', '.join(sorted(datasets))})")
        binarized = {model.name: model.binarize for model in (ae, vae, cvae)}
        if len(set(binarized.values())) > 1:  # side by side, one plane of grey digits and one of binary ones
            raise ProjectError("the checkpoints were trained on different data (" + ", ".join(
                f"--{name} with --binarize {how}" for name, how in binarized.items()) + ")")
        self.models = {model.name: model for model in (ae, vae, cvae)}
        self.class_names = class_names(ae.dataset)
        # The mixture is fitted in the background (about 1.3 s with scikit-learn's import) so that
        # the page is usable sooner; the first prior draw waits for it.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fit-gmm")
        self._mixture: Future = pool.submit(_fit_mixture, ae.codes)
        pool.shutdown(wait=False)
        self._mixture_lock = threading.Lock()  # sample_gmm sets the mixture's random_state

    def decode(self, name: str, z: torch.Tensor, digits: torch.Tensor | None = None) -> np.ndarray:
        """(N, latent_dim) codes -> (N, 28, 28) uint8 images from model `name`; `digits` (N,) for
        the conditional VAE."""
        return to_uint8(decode_codes(self.models[name].module, z, labels=digits))

    def decode_png(self, name: str, z: Sequence[float], digit: int | None = None) -> bytes:
        """One code -> a PNG: the digit model `name` decodes there; for the conditional VAE
        `digit`'s image, or with `digit` None all its classes in one row."""
        model = self.models[name]
        if not model.conditional:
            return png_bytes(self.decode(name, torch.tensor([z], dtype=torch.float32))[0])
        digits = torch.arange(NUM_CLASSES) if digit is None else torch.tensor([digit])
        codes = torch.tensor([z], dtype=torch.float32).expand(len(digits), -1)
        return png_bytes(tile(self.decode(name, codes, digits), len(digits)))

    def sample(self, seed: int) -> dict[str, Any]:
        """NUM_SAMPLES draws from N(0, I), decoded by the AE and by the VAE (the same draws when
        their latent sizes agree), and as many from the mixture fitted to the AE's codes; each
        grid with its codes and a PNG data URL."""
        ae, vae = self.models["ae"], self.models["vae"]
        prior = torch.randn(NUM_SAMPLES, ae.latent_dim, generator=torch.Generator().manual_seed(seed))
        vae_prior = prior if vae.latent_dim == ae.latent_dim else torch.randn(
            NUM_SAMPLES, vae.latent_dim, generator=torch.Generator().manual_seed(seed))
        from experiments.samplers import sample_gmm

        mixture = self._mixture.result()
        with self._mixture_lock:
            mixture_z = sample_gmm(mixture, NUM_SAMPLES, seed)
        grids = {}
        for key, name, z in (("ae", "ae", prior), ("vae", "vae", vae_prior), ("gmm", "ae", mixture_z)):
            png = png_bytes(tile(self.decode(name, z), GRID_COLUMNS))
            grids[key] = {"model": name, "z": z.tolist(), "columns": GRID_COLUMNS,
                          "image": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
        return {"seed": seed, "grids": grids}

    def info(self) -> dict[str, Any]:
        """What the page needs to draw the planes (plain JSON types)."""
        models = {}
        for name, model in self.models.items():
            codes = None if model.codes is None else model.codes[:, :2]
            models[name] = {
                "latent_dim": model.latent_dim, "conditional": model.conditional,
                "checkpoint": model.checkpoint.name, "epoch": model.epoch, "view": plane_view(codes),
                "codes": None if codes is None else np.round(codes, 3).tolist(),
                "labels": None if model.labels is None else model.labels.tolist(),
                "box": None if codes is None else [*map(float, codes.min(0)), *map(float, codes.max(0))],
            }
        return {"models": models, "class_names": self.class_names, "samples": NUM_SAMPLES}


def load_explorer(ae: str | Path, vae: str | Path, cvae: str | Path) -> Explorer:
    """The explorer on these three checkpoints (an AE, a VAE, a conditional VAE), each checked."""
    return Explorer(load_model("ae", ae, kind="ae", conditional=False),
                    load_model("vae", vae, kind="vae", conditional=False),
                    load_model("cvae", cvae, kind="vae", conditional=True))
