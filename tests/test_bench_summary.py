"""experiments/bench_summary.py: benchmark outputs grouped by machine kind, with medians worked out by hand."""

import pytest

from experiments import bench, bench_summary

CAPPED = ("device: cpu (AMD EPYC, ISA AVX-512 BF16, capped by ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2, "
          "torch kernels AVX2, 2 threads; torch 2.14.1+cu130)")
NATIVE = "device: cpu (AMD EPYC, ISA AVX-512 BF16, torch kernels AVX512, 2 threads; torch 2.14.1+cu130)"
HEADER = ("| model | reference train img/s | default train img/s | speed-up | whole train.py epoch, start to exit "
          "(vs reference) | train.py's own training img/s (vs default) | reference eval img/s | default eval img/s |")


def output(device: str, precision: str, step: str, whole: str, rounds: str = "", header: str = HEADER) -> str:
    """A benchmark output in the committed files' format (results/bench_cpu*.txt)."""
    lines = [device, "measured fp32 matrix-product peak: 164 GFLOP/s",
             (f"reference: fp32, NCHW, eager, batch 128, loss.item() every step; default path: {precision}, "
              "channels_last for training and channels_last for evaluation, batch 128; each path in a fresh process of "
              "its own"), "",
             header, "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| VAE | 762 (41%) | 1,134 (62%) | {step} | {whole} | 1,073 (0.95x) | 3,053 | 3,976 |", ""]
    if rounds:
        lines.append(f"VAE, each round's reference / default train img/s (speed-up): {rounds}")
    return "\n".join(lines) + "\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_runs_are_grouped_by_machine_kind_and_summed_up_by_hand(tmp_path, capsys):
    files = [
        write(tmp_path, "a.txt", output(CAPPED, "fp32", "1.47x", "59.6 s (median of 62.9, 59.3, 59.6 s) = 1,007 img/s, 1.33x",
                                        "660 / 910 (1.38x), 762 / 1,143 (1.50x), 732 / 1,127 (1.54x)")),
        write(tmp_path, "b.txt", output(CAPPED, "fp32", "1.21x", "69.5 s = 863 img/s, 1.09x")),
        write(tmp_path, "c.txt", output(CAPPED, "fp32", "1.38x", "58.7 s = 1,022 img/s, 1.26x", "1 / 1 (1.00x)")),
        write(tmp_path, "d.txt", output(NATIVE, "bf16", "2.30x", "46.3 s = 1,296 img/s, 1.73x")),
    ]
    summary = bench_summary.main([*files, "--step-at-least", "1.45", "--whole-at-least", "1.3"])
    assert summary == capsys.readouterr().out.rstrip("\n")
    capped, native = summary.split("\n\n")
    assert capped.startswith("VAE on cpu, AVX-512 BF16 capped to AVX2; default path: fp32, channels_last")
    assert native.startswith("VAE on cpu, AVX-512 BF16; default path: bf16")
    assert "  runs: 3" in capped and "  runs: 1" in native
    # steps 1.21, 1.38, 1.47: median 1.38, one at or above 1.45
    assert "step speed-up, median (range): 1.38x (1.21-1.47x), 1 of 3 at or above 1.45x" in capped
    # rounds 1.38, 1.50, 1.54 and 1.00 from two of the runs: median (1.38 + 1.50) / 2 = 1.44
    assert "single rounds (4 in 2 runs): 1.44x (1.00-1.54x), 2 of 4 at or above 1.45x" in capped
    # whole epochs 1.33, 1.09, 1.26: the last ratio of each cell, median 1.26
    assert "whole train.py epoch vs reference, median (range): 1.26x (1.09-1.33x), 1 of 3 at or above 1.3x" in capped
    assert f"    {files[1]}: step 1.21x, whole epoch 1.09x" in capped
    assert "step speed-up, median (range): 2.30x, 1 of 1 at or above 1.45x" in native
    assert "single rounds" not in native


def test_the_benchmarks_own_output_is_read(monkeypatch, capsys, tmp_path):
    # what `python -m experiments.bench` prints today, with its rates faked: 100 -> 150 and 80 -> 200 img/s
    rates = iter([(100.0, 0.0), (150.0, 0.0), (80.0, 0.0), (200.0, 0.0)])
    monkeypatch.setattr(bench, "run_processes", lambda cmds, env=None: [next(rates)])
    monkeypatch.setattr(bench, "matmul_peak", lambda device: 50.0)
    bench.main(["--device", "cpu", "--models", "vae", "--rounds", "2", "--eval-images", "0"])
    path = write(tmp_path, "bench.txt", capsys.readouterr().out)
    summary = bench_summary.main([path])
    # the medians of the rounds: reference 90, default 175 img/s, 1.94x; the rounds 1.50x and 2.50x
    assert "step speed-up, median (range): 1.94x" in summary
    assert "single rounds (2 in 1 run): 2.00x (1.50-2.50x)" in summary
    assert "whole train.py epoch" not in summary  # no --data-dir: no whole epoch timed


def test_an_older_table_without_some_columns_is_read(tmp_path):
    header = HEADER.replace(" train.py's own training img/s (vs default) |", "")
    text = output(CAPPED, "fp32", "1.51x", "65.7 s = 914 img/s, 1.29x", header=header).replace(" 1,073 (0.95x) |", "")
    summary = bench_summary.main([write(tmp_path, "old.txt", text)])
    assert "step speed-up, median (range): 1.51x" in summary and "median (range): 1.29x" in summary


@pytest.mark.parametrize("text, message", [
    ("not a benchmark\n", "no 'device: ...' line"),
    (output(CAPPED, "fp32", "fast", "60 s, 1.3x"), "speed-up 'fast' is not a ratio like 1.49x"),
    (output(CAPPED, "fp32", "1.4x", "60 s, 1.3x").replace("| model |", "| name |"), "no results table"),
    (output(CAPPED, "fp32", "1.4x", "60 s, 1.3x").replace(" | 3,053 | 3,976 |", " |"), "row has 6 cells, its table 8"),
])
def test_a_file_it_cannot_read_is_one_line(tmp_path, text, message):
    with pytest.raises(SystemExit) as exc:
        bench_summary.main([write(tmp_path, "bad.txt", text)])
    assert str(exc.value).startswith("error: ") and message in str(exc.value) and "\n" not in str(exc.value)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench_summary.main([str(tmp_path / "absent.txt")])
    assert str(exc.value) == f"error: cannot read {tmp_path / 'absent.txt'}: No such file or directory"


def test_a_file_named_twice_counts_once(tmp_path):
    path = write(tmp_path, "a.txt", output(CAPPED, "fp32", "1.47x", "59.6 s = 1,007 img/s, 1.33x"))
    assert "  runs: 1\n" in bench_summary.main([path, path])
