"""common.tensorboard_log: what it writes, read back the way TensorBoard reads it (event files and projector files)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from common.errors import ProjectError  # noqa: E402
from common.tensorboard_log import (  # noqa: E402
    INSTALL_HINT,
    log_embedding,
    log_image_grid,
    log_terms,
    open_writer,
)


def read_events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalar_points(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in acc.Scalars(tag)]


def embedding_dir(log_dir: Path) -> Path:
    """The one <step>/<encoded tag>/ folder that add_embedding made."""
    found = sorted(log_dir.glob("*/*/tensors.tsv"))
    assert len(found) == 1, found
    return found[0].parent


def read_tsv(path: Path) -> list[list[float]]:
    return [[float(x) for x in line.split("\t")] for line in path.read_text().splitlines()]


def test_terms_images_and_embedding_read_back(tmp_path: Path) -> None:
    log_dir = tmp_path / "runs" / "tb"  # nested and missing: open_writer creates it
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 28, 28, generator=gen)
    codes = torch.randn(12, 3, generator=gen)
    labels = torch.arange(12) % 10

    with open_writer(log_dir) as writer:
        # a NaN is logged as is
        log_terms(writer, "train", {"loss": 101.5, "recon": 90.25}, step=1)
        log_terms(writer, "train", {"loss": 80.125, "recon": 70.5}, step=2)
        log_terms(writer, "test", {"loss": 85.75, "kl": float("nan")}, step=2)
        log_image_grid(writer, "samples", images, step=2)
        log_embedding(writer, codes, labels, images, step=2)

    acc = read_events(log_dir)
    tags = acc.Tags()
    assert set(tags["scalars"]) == {"train/loss", "train/recon", "test/loss", "test/kl"}
    expected = {"train/loss": [(1, 101.5), (2, 80.125)], "train/recon": [(1, 90.25), (2, 70.5)],
                "test/loss": [(2, 85.75)]}
    for tag, points in expected.items():
        got = scalar_points(acc, tag)
        assert [step for step, _ in got] == [step for step, _ in points], tag
        assert [value for _, value in got] == pytest.approx([value for _, value in points], rel=1e-6), tag
    [(kl_step, kl_value)] = scalar_points(acc, "test/kl")
    assert kl_step == 2 and math.isnan(kl_value)

    assert tags["images"] == ["samples"]
    [image] = acc.Images("samples")
    assert image.step == 2
    # 12 images, 10 per row, 2 px of padding around each: 2 rows x 10 columns of 30 px, plus the outer 2 px.
    assert (image.width, image.height) == (10 * 30 + 2, 2 * 30 + 2)

    assert (log_dir / "projector_config.pbtxt").is_file()
    folder = embedding_dir(log_dir)
    assert folder.parent.name == "00002"
    rows = read_tsv(folder / "tensors.tsv")
    assert len(rows) == 12 and all(len(row) == 3 for row in rows)
    assert torch.tensor(rows) == pytest.approx(codes, rel=1e-6, abs=1e-7)
    assert (folder / "metadata.tsv").read_text().splitlines() == [str(int(label)) for label in labels]
    assert (folder / "sprite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = (log_dir / "projector_config.pbtxt").read_text()
    assert "latent codes:00002" in config and "sprite.png" in config


def test_one_dimensional_codes_get_a_zero_second_column(tmp_path: Path) -> None:
    codes = torch.tensor([[-1.5], [0.25], [2.0], [3.125]])
    with open_writer(tmp_path) as writer:
        log_embedding(writer, codes, torch.tensor([3, 1, 4, 1]), torch.rand(4, 1, 8, 8), step=0)

    folder = embedding_dir(tmp_path)
    assert read_tsv(folder / "tensors.tsv") == [[-1.5, 0.0], [0.25, 0.0], [2.0, 0.0], [3.125, 0.0]]
    assert (folder / "metadata.tsv").read_text().splitlines() == ["3", "1", "4", "1"]


def test_purge_step_drops_events_after_the_resume_point(tmp_path: Path) -> None:
    with open_writer(tmp_path) as writer:
        for step in range(5):
            log_terms(writer, "train", {"loss": float(step)}, step)
    with open_writer(tmp_path, purge_step=3) as writer:  # resumed from a checkpoint at step 3
        for step in range(3, 5):
            log_terms(writer, "train", {"loss": 10.0 * step}, step)

    assert scalar_points(read_events(tmp_path), "train/loss") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_open_writer_without_tensorboard_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # None in sys.modules: the import raises
    with pytest.raises(ProjectError) as info:
        open_writer(tmp_path / "tb")
    message = str(info.value)
    assert message == INSTALL_HINT == "--tensorboard needs the tensorboard package: pip install -e .[tensorboard]"
    assert "\n" not in message
    assert isinstance(info.value.__cause__, ImportError)
