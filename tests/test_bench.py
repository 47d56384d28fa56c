"""experiments/bench.py: a smoke run reports both paths."""

import time

import pytest
import torch

from experiments import bench


def test_benchmark_runs_and_reports_both_paths():
    results = bench.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--rounds", "1",
                          "--eval-images", "64", "--batch-size", "16"])
    assert set(results) == {"ae", "vae", "peak_gflop_s_after"} and results["peak_gflop_s_after"] > 0
    for r in (results["ae"], results["vae"]):
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


def test_rate_only_prints_the_training_and_evaluation_rates(capsys):
    results = bench.main(["--device", "cpu", "--models", "ae", "--steps", "1", "--warmup", "1",
                          "--batch-size", "8", "--eval-images", "16", "--rate-only"])
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2
    # printed to 0.1 image/s: equal to within the rounding, however slow the machine is
    assert float(printed[0]) == pytest.approx(results["ae"]["train_img_s"], abs=0.05)
    assert float(printed[1]) == pytest.approx(results["ae"]["eval_img_s"], abs=0.05)
    bench.main(["--device", "cpu", "--models", "ae", "--steps", "1", "--warmup", "1", "--batch-size", "8",
                "--eval-images", "0", "--rate-only", "--path", "reference"])
    assert capsys.readouterr().out.split()[1] == "0.0"  # no evaluation timed


@pytest.mark.parametrize("path, freed, keeps", [("default", None, True), ("reference", None, False),
                                                ("default", "returned", False), ("reference", "kept", True)])
def test_each_path_keeps_freed_memory_as_its_program_does(monkeypatch, capsys, path, freed, keeps):
    """The default path keeps freed memory as train.py does; the reference runs as a plain script."""
    calls = []
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: calls.append(1))
    bench.main(["--device", "cpu", "--models", "ae", "--steps", "1", "--warmup", "1", "--batch-size", "8",
                "--eval-images", "0", "--rate-only", "--path", path, *(["--freed-memory", freed] if freed else [])])
    assert calls == ([1] if keeps else [])


def test_each_round_times_both_paths_in_fresh_processes(monkeypatch):
    commands = []

    def fake(cmds, env=None):
        commands.extend(cmds)
        args = bench.parse_args(cmds[0][cmds[0].index("--rate-only"):])  # the flags the child parses
        return [(100.0, 1000.0) if args.path == "reference" else (150.0, 3000.0)]

    monkeypatch.setattr(bench, "run_processes", fake)
    results = bench.main(["--device", "cpu", "--models", "vae", "--steps", "3", "--warmup", "2", "--rounds", "2",
                          "--eval-images", "64", "--batch-size", "16"])
    paths = [(c[c.index("--path") + 1], c[c.index("--freed-memory") + 1]) for c in commands]
    assert paths == [("reference", "returned"), ("default", "kept")] * 2
    assert all(c[c.index("--steps") + 1] == "3" and c[c.index("--eval-images") + 1] == "64" for c in commands)
    r = results["vae"]
    assert (r["reference_img_s"], r["default_img_s"], r["speedup"]) == (100.0, 150.0, 1.5)
    assert (r["reference_eval_img_s"], r["default_eval_img_s"]) == (1000.0, 3000.0)


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


def test_whole_epochs_are_timed_between_the_rounds_and_their_median_reported(monkeypatch, tiny_mnist):
    events, epoch_runs = [], iter([(90.0, 140.0), (60.0, 160.0), (75.0, 120.0)])

    def fake_processes(cmds, env=None):
        path = cmds[0][cmds[0].index("--path") + 1]
        events.append(path)
        return [(100.0, 1000.0) if path == "reference" else (150.0, 3000.0)]

    def fake_epoch(kind, data_dir, precision, device, extra):
        events.append("epoch")
        return next(epoch_runs)  # (seconds start to exit, train.py's own training img/s)

    monkeypatch.setattr(bench, "run_processes", fake_processes)
    monkeypatch.setattr(bench, "all_in_epoch", fake_epoch)
    results = bench.main(["--device", "cpu", "--models", "vae", "--rounds", "4", "--whole-epochs", "3",
                          "--data-dir", str(tiny_mnist), "--eval-images", "16"])
    assert events == ["reference", "default", "epoch"] * 3 + ["reference", "default"]
    r = results["vae"]
    assert r["epoch_seconds_each"] == [90.0, 60.0, 75.0] and r["epoch_seconds"] == 75.0
    assert r["epoch_img_s"] == pytest.approx(96 / 75.0)  # the tiny training split's 96 images
    assert r["epoch_vs_reference"] == pytest.approx(96 / 75.0 / 100.0)
    assert r["train_py_img_s"] == 140.0 and r["train_py_vs_default"] == pytest.approx(140.0 / 150.0)


def test_each_rounds_rates_and_the_peak_after_the_rounds_are_reported(monkeypatch, capsys):
    rates = iter([(100.0, 0.0), (150.0, 0.0), (80.0, 0.0), (200.0, 0.0), (120.0, 0.0), (90.0, 0.0)])
    monkeypatch.setattr(bench, "run_processes", lambda cmds, env=None: [next(rates)])
    peaks = iter([50.0, 40.0])
    monkeypatch.setattr(bench, "matmul_peak", lambda device: next(peaks))
    results = bench.main(["--device", "cpu", "--models", "vae", "--rounds", "3", "--eval-images", "0"])
    r = results["vae"]
    assert r["reference_img_s_each"] == [100.0, 80.0, 120.0] and r["default_img_s_each"] == [150.0, 200.0, 90.0]
    assert (r["reference_img_s"], r["default_img_s"]) == (100.0, 150.0)  # the medians
    out = capsys.readouterr().out
    assert "VAE, each round's reference / default train img/s (speed-up): 100 / 150 (1.50x), 80 / 200 (2.50x), " \
           "120 / 90 (0.75x)" in out
    assert results["peak_gflop_s_after"] == 40.0
    assert "peak after the rounds: 40 GFLOP/s (50 before)" in out


def test_more_whole_epochs_than_rounds_is_refused(tiny_mnist, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--rounds", "2", "--whole-epochs", "3", "--data-dir", str(tiny_mnist)])
    assert exit_info.value.code == 2 and "--whole-epochs 3 needs as many --rounds" in capsys.readouterr().err


def test_a_whole_epoch_is_timed_from_start_to_exit_with_train_pys_own_rate(tiny_mnist):
    t0 = time.perf_counter()
    seconds, rate = bench.all_in_epoch("ae", str(tiny_mnist), "fp32", "cpu", ["--batch-size", "32"])
    wall = time.perf_counter() - t0
    assert 0 < seconds <= wall
    # train.py's own rate covers its training loop only: 96 images in less than the whole run
    assert rate > 96 / seconds
