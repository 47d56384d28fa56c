"""The bf16-vs-fp32 study: its statistics by hand, and a tiny end-to-end run on fixture data."""

import json
import math

import pytest

from experiments import precision_study as study


def test_paired_summary_by_hand():
    # diffs 0.5, -0.1, 0.2: mean 0.2; deviations 0.3, -0.3, 0 -> sd sqrt(0.18 / 2) = 0.3;
    # se 0.3 / sqrt(3); 2 degrees of freedom -> t = 4.303
    s = study.paired_summary([0.5, -0.1, 0.2])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.2)
    assert s["sd"] == pytest.approx(0.3)
    assert s["se"] == pytest.approx(0.3 / math.sqrt(3))
    # the printed table's 4.303 is rounded to 3 decimals
    assert s["ci95_low"] == pytest.approx(0.2 - 4.303 * 0.3 / math.sqrt(3), abs=1e-3 * s["se"])
    assert s["ci95_high"] == pytest.approx(0.2 + 4.303 * 0.3 / math.sqrt(3), abs=1e-3 * s["se"])
    assert study.paired_summary([0.7]) == {"n": 1, "mean": 0.7}


def test_t_quantiles_match_the_printed_tables():
    # two-sided 95 % t quantiles from the standard printed tables, and the normal limit
    for df, t in ((1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042)):
        diffs = [0.0, 2.0] + [1.0] * (df - 1)  # n = df + 1 values with mean 1
        s = study.paired_summary(diffs)
        assert (s["ci95_high"] - s["mean"]) / s["se"] == pytest.approx(t, abs=1e-3)
    wide = study.paired_summary([0.0, 2.0] * 500)
    assert (wide["ci95_high"] - wide["mean"]) / wide["se"] == pytest.approx(1.962, abs=1e-3)  # 999 df, near 1.96


def test_study_trains_pairs_reports_differences_and_reuses_runs(tmp_path, tiny_mnist, capsys):
    out = tmp_path / "precision"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--seeds", "0", "3", "--epochs", "1",
            "--device", "cpu", "--no-download"]
    summary = study.main(argv)
    for seed, name in ((0, "vae_{}"), (3, "vae_{}_seed3")):
        row = next(r for r in summary["rows"] if r["seed"] == seed)
        for precision in ("bf16", "fp32"):
            run = out / name.format(precision)
            info = json.loads((run / "run.json").read_text())
            assert (info["precision"], info["train"]["seed"]) == (precision, seed)
            assert row[precision] == json.loads((run / "history.json").read_text())[-1]["test_neg_elbo"]
        assert row["diff"] == pytest.approx(row["bf16"] - row["fp32"])
    # seeds 0 and 3 draw different initial weights, so the runs really differ
    assert summary["rows"][0]["fp32"] != summary["rows"][1]["fp32"]
    assert summary["diff"]["mean"] == pytest.approx(sum(r["diff"] for r in summary["rows"]) / 2)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "| seed | bf16 | fp32 | bf16 - fp32 |" in capsys.readouterr().out

    stamp = (out / "vae_bf16" / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert study.main(argv) == summary  # everything trained: reused, not retrained
    assert (out / "vae_bf16" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    assert capsys.readouterr().out.count("already trained, reused") == 4


def test_study_refuses_a_run_that_is_not_what_its_folder_says(tmp_path, tiny_mnist):
    out = tmp_path / "precision"
    argv = ["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--seeds", "0", "--epochs", "1",
            "--device", "cpu", "--no-download"]
    study.main(argv)
    info_path = out / "vae_fp32" / "run.json"
    info = json.loads(info_path.read_text())
    info["precision"] = "bf16"
    info_path.write_text(json.dumps(info))
    with pytest.raises(SystemExit) as exit_info:
        study.main(argv)
    # exit_on_error exits with the message itself: one line on stderr, status 1
    assert str(exit_info.value.code) == f"error: {out / 'vae_fp32'} is not a finished fp32 run with seed 0 and 1 epochs"


def test_study_refuses_repeated_seeds(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--out-dir", str(tmp_path), "--seeds", "1", "1"])
    assert exit_info.value.code == 2
    assert not any(tmp_path.iterdir())


def test_a_run_trained_with_other_settings_is_refused_before_any_training(tmp_path, tiny_mnist):
    from variational_autoencoder import train as vae_train

    out = tmp_path / "precision"
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(out / "vae_fp32"), "--precision", "fp32",
                    "--epochs", "1", "--device", "cpu", "--no-download", "--lr", "0.01"])
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--data-dir", str(tiny_mnist), "--out-dir", str(out), "--seeds", "0", "--epochs", "1",
                    "--device", "cpu", "--no-download"])
    assert exit_info.value.code == (f"error: {out / 'vae_fp32' / 'checkpoints' / 'last.pt'} was trained with lr "
                                    f"0.01, not 0.002: pass --overwrite to retrain it, or another --out-dir")
    assert sorted(p.name for p in out.iterdir()) == ["vae_fp32"]  # vae_bf16 was not trained first
