"""Numeric flags have stated ranges, checked at parse time; a config read back from a file is held
to the same rules (common/options.py)."""

import argparse
import math

import pytest
import torch

from common.data import epoch_generator
from common.loop import TrainConfig
from common.options import MAX_EPOCHS, MAX_SEED, NumberRange, int_tuple, positive_int, seed_int
from common.run import build_parser
from variational_autoencoder.model import VAEConfig


def parse(*argv: str) -> argparse.Namespace:
    return build_parser("test", VAEConfig, default_out_dir=".").parse_args(list(argv))


@pytest.mark.parametrize("flag,value", [
    ("--seed", "1e30"), ("--seed", str(10**30)), ("--seed", "-1"), ("--seed", str(MAX_SEED + 1)),
    ("--epochs", str(10**12)), ("--epochs", str(MAX_EPOCHS + 1)), ("--batch-size", "0"),
    ("--batch-size", "9" * 5000), ("--latent-dim", "1025"), ("--filters", "8,99999"), ("--filters", "8," * 17 + "8"),
    ("--kernel-sizes", "3,3,3,99"), ("--lr", "nan"), ("--lr", "1e400"), ("--beta", "-inf"),
])
def test_out_of_range_flags_are_one_argparse_line(flag, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse(flag, value)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f": error: argument {flag}" in err[-1] and len(err[-1]) < 200


def test_the_largest_seed_and_epoch_still_seed_torch():
    """MAX_SEED is what epoch_generator can turn into a torch seed for every epoch up to MAX_EPOCHS."""
    args = parse("--seed", str(MAX_SEED), "--epochs", str(MAX_EPOCHS))
    assert (args.seed, args.epochs) == (MAX_SEED, MAX_EPOCHS)
    epoch_generator(MAX_SEED, MAX_EPOCHS)
    torch.Generator().manual_seed(MAX_SEED)
    with pytest.raises(ValueError):  # the bound is not arbitrary: one more epoch's worth and torch refuses
        torch.Generator().manual_seed((2**64 // 1_000_003 + 1) * 1_000_003)


def test_ranges_accept_their_ends_and_say_them():
    assert positive_int("1") == 1 and positive_int("1_000_000") == 1_000_000
    assert seed_int("0") == 0 and int_tuple("32, 64") == (32, 64)
    positive_float = NumberRange(float, 0.0, math.inf, low_open=True)
    assert positive_float("1e-8") == 1e-8
    assert NumberRange(int, 1, 1024).span() == "from 1 to 1024" and positive_float.span() == "> 0"
    assert "from 1 to 1024; default: 2" in build_parser("t", VAEConfig, ".").format_help().replace("\n", " ").replace(
        "  ", " ")


@pytest.mark.parametrize("field,value,expect", [
    ("batch_size", 0, "batch_size must be an integer from 1 to 1000000, got 0"),
    ("batch_size", -5, "batch_size must be an integer from 1 to 1000000, got -5"),
    ("batch_size", 12.0, "batch_size must be an integer from 1 to 1000000, got 12.0"),
    ("epochs", True, "epochs must be an integer from 1 to 10000, got True"),
    ("lr", float("nan"), "lr must be a finite number > 0 and <= 10, got nan"),
    ("seed", 2**70, f"seed must be an integer from 0 to {MAX_SEED}, got {2**70}"),
    ("lr_schedule", "warp", "lr_schedule must be one of constant, cosine, got 'warp'"),
    ("device", "tpu", "device must be one of auto, cpu, cuda, mps, got 'tpu'"),
    ("data_dir", 3, "data_dir must be a str, got 3"),
    ("download", "yes", "download must be a bool, got 'yes'"),
    ("eval_batch_size", "x" * 500, "eval_batch_size must be an integer from 1 to 1000000, got 'xxxxx"),
])
def test_train_config_checks_what_the_flags_check(field, value, expect):
    with pytest.raises(ValueError) as err:
        TrainConfig(**{field: value})
    assert str(err.value).startswith(expect) and len(str(err.value)) < 200


@pytest.mark.parametrize("fields,expect", [
    ({"latent_dim": 10**9}, "latent_dim must be an integer from 1 to 1024"),
    ({"filters": (8, 8, 8, 5000)}, "filters must be integers from 1 to 4096"),
    ({"filters": [8] * 10**6, "kernel_sizes": [3] * 10**6, "strides": [1] * 10**6}, "filters must be 1 to 16 integers"),
    ({"image_size": 10**6}, "image_size must be an integer from 1 to 1024"),
    ({"filters": (4096, 4096), "kernel_sizes": (3, 3), "strides": (1, 1)}, "the network would have about"),
    ({"beta": -1.0}, r"beta must be a finite number from 0 to 1e\+06, got -1.0"),
])
def test_model_config_refuses_absurd_sizes_before_any_allocation(fields, expect):
    with pytest.raises(ValueError, match=expect):
        VAEConfig(**fields)
