"""experiments/likelihood.py: a VAE checkpoint's -ELBO and IWAE bound on the split it was trained for."""

import json

import pytest
import torch

from common.checkpoint import load_for_inference
from common.data import evaluation_split, load_split
from experiments import likelihood
from experiments.metrics import iwae_nll, neg_elbo
from variational_autoencoder import train as vae_train

TINY = ["--epochs", "1", "--batch-size", "32", "--filters", "4,4,4,4", "--device", "cpu", "--no-download"]


def test_a_binarized_model_is_scored_on_the_fixed_binary_test_set(tmp_path, tiny_mnist):
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "run"), "--binarize", "dynamic",
                    "--latent-dim", "3", *TINY])
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    result = likelihood.main([str(ckpt), "--data-dir", str(tiny_mnist), "--iwae-k", "8", "--no-download",
                              "--device", "cpu", "--out", str(tmp_path / "l.json")])
    assert result["binarize"] == "dynamic" and result["latent_dim"] == 3 and result["iwae"]["images"] == 40
    # the same numbers as the metrics on the binary test set, computed here independently of the program
    model, _ = load_for_inference(ckpt, "cpu", kind="vae")
    test = evaluation_split(load_split(tiny_mnist, "mnist", "test", download=False), "dynamic")
    assert set(torch.unique(test.images).tolist()) == {0.0, 1.0}
    assert result["neg_elbo"] == pytest.approx(neg_elbo(model, test.images)["neg_elbo"], rel=1e-6)
    assert result["iwae"]["nll"] == pytest.approx(iwae_nll(model, test.images, 8)["nll"], rel=1e-6)
    assert result["iwae"]["nll"] <= result["iwae"]["neg_elbo_same_draws"]  # the bound is the tighter one
    assert json.loads((tmp_path / "l.json").read_text())["iwae"]["k"] == 8


def test_an_ae_or_a_conditional_vae_is_refused_in_one_line(tmp_path, tiny_mnist):
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "c"), "--conditional", *TINY])
    with pytest.raises(SystemExit) as refused:
        likelihood.main([str(tmp_path / "c" / "checkpoints" / "last.pt"), "--data-dir", str(tiny_mnist),
                         "--no-download", "--device", "cpu"])
    assert "is a conditional VAE" in str(refused.value.code) and "\n" not in str(refused.value.code)
    with pytest.raises(SystemExit) as missing:
        likelihood.main([str(tmp_path / "nothing.pt"), "--device", "cpu"])
    assert str(missing.value.code).startswith("error: ")


def test_an_existing_out_file_is_replaced_only_with_overwrite(tmp_path, tiny_mnist):
    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "run"), *TINY])
    out = tmp_path / "l.json"
    out.write_text("an earlier result\n")
    argv = [str(tmp_path / "run" / "checkpoints" / "last.pt"), "--data-dir", str(tiny_mnist), "--iwae-k", "2",
            "--no-download", "--device", "cpu", "--out", str(out)]
    with pytest.raises(SystemExit) as refused:
        likelihood.main(argv)
    assert refused.value.code == (f"error: {out.parent} holds an earlier estimate ({out.name}): pass --overwrite to "
                                  f"replace it, or use another --out")
    assert out.read_text() == "an earlier result\n"
    likelihood.main([*argv, "--overwrite"])
    assert json.loads(out.read_text())["iwae"]["k"] == 2


def test_a_test_split_of_one_image_is_refused_not_reported_with_a_nan_error(tmp_path, tiny_mnist):
    from conftest import write_mnist

    vae_train.main(["--data-dir", str(tiny_mnist), "--out-dir", str(tmp_path / "run"), *TINY])
    one = write_mnist(tmp_path / "one", n_train=4, n_test=1)
    with pytest.raises(SystemExit) as refused:
        likelihood.main([str(tmp_path / "run" / "checkpoints" / "last.pt"), "--data-dir", str(one), "--no-download",
                         "--device", "cpu", "--iwae-k", "2"])
    assert refused.value.code == ("error: the mnist test split holds 1 image; the estimates' standard error needs 2 "
                                  "at least")
