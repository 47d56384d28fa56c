"""experiments/bench.py: a smoke run reports both paths."""

import pytest

from experiments import bench


def test_benchmark_runs_and_reports_both_paths():
    results = bench.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--rounds", "1",
                          "--eval-images", "64", "--batch-size", "16"])
    assert set(results) == {"ae", "vae"}
    for r in results.values():
        assert r["reference_img_s"] > 0 and r["default_img_s"] > 0
        assert r["speedup"] == pytest.approx(r["default_img_s"] / r["reference_img_s"])
