"""experiments/bench.py: a smoke run reports both paths."""

import pytest
import torch

from experiments import bench


def test_benchmark_runs_and_reports_both_paths():
    results = bench.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--rounds", "1",
                          "--eval-images", "64", "--batch-size", "16"])
    assert set(results) == {"ae", "vae"}
    for r in results.values():
        assert r["reference_img_s"] > 0 and r["default_img_s"] > 0
        assert r["speedup"] == pytest.approx(r["default_img_s"] / r["reference_img_s"])


def test_choices_time_each_default_against_its_alternative(capsys):
    results = bench.main(["--device", "cpu", "--models", "vae", "--steps", "1", "--warmup", "1", "--rounds", "1",
                          "--eval-images", "32", "--batch-size", "16", "--choices"])
    out = capsys.readouterr().out
    choices = results["choices"]
    assert {"training memory format: NCHW", "evaluation memory format (batches of 1,000): NCHW", "Adam: fused",
            "losses read back: every step"} <= set(choices)
    for rates in choices.values():
        assert rates["default_img_s"] > 0 and rates["alternative_img_s"] > 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and line.endswith("x |")]
    assert len(rows) == len(choices)


def test_rate_only_prints_one_number(capsys):
    results = bench.main(["--device", "cpu", "--models", "ae", "--steps", "1", "--warmup", "1",
                          "--batch-size", "8", "--rate-only"])
    printed = capsys.readouterr().out.split()
    assert len(printed) == 1 and float(printed[0]) == pytest.approx(results["ae"]["default_img_s"], rel=1e-3)


def test_steps_are_timed_on_mnist_itself_when_it_is_at_hand(tiny_mnist):
    from common.data import load_split

    train = load_split(tiny_mnist, "mnist", "train", download=False).images  # 96 images
    args = bench.parse_args(["--data-dir", str(tiny_mnist)])
    x = bench.bench_images(args, 200, torch.device("cpu"))
    assert x.shape == (200, 1, 28, 28)
    assert torch.equal(x[:96], train) and torch.equal(x[96:192], train) and torch.equal(x[192:], train[:8])
    test = load_split(tiny_mnist, "mnist", "test", download=False).images
    assert torch.equal(bench.bench_images(args, 10, torch.device("cpu"), "test"), test[:10])
    noise = bench.bench_images(bench.parse_args([]), 5, torch.device("cpu"))
    assert noise.shape == (5, 1, 28, 28) and 0 <= noise.min() and noise.max() <= 1
