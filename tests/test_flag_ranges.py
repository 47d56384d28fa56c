"""Every numeric flag of every program works at both ends of its stated range (issue 16, point 1).

The ranges are read from the programs themselves: each program's argument parser is captured as
its main() builds it, and every flag whose type is a common.options.NumberRange or IntTuple is
checked (the config dataclasses' option fields become such flags of train.py; the last test makes
sure of it). So a new numeric flag is covered without touching this file, in two ways:

- parse level, every flag at both ends (`test_each_end_parses_and_one_step_outside_is_refused`):
  the end itself is accepted and the value one step outside it is refused with one argparse line
  (exit status 2). For a float range without an upper bound the "end" is the largest finite float.
- a real run where one is affordable (`RUNS`): each program runs on the tiny fixture data with
  many flags at their low end at once, and again at a cheap high end, and the test checks what
  it produced, or the one line it must stop with (the largest learning rate, 10, diverges: the
  run says so and names --lr, which is the right answer for that value, not a bug).

An end that no real run here can afford (10,000 epochs, a million decoded samples per set, a
benchmark of a million images) is listed in `PARSE_ONLY` with the reason, and what covers it
instead where something does. `test_every_end_is_run_or_says_why_not` fails for a flag end that
is in neither table: a new flag gets a decision, not silence.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import one_line_exit, write_mnist

from common.loop import TrainConfig
from common.options import MAX_SEED, IntTuple, NumberRange
from vanila_autoencoder.model import AEConfig
from variational_autoencoder.model import VAEConfig

PROGRAMS = ["vanila_autoencoder.train", "variational_autoencoder.train", "vanila_autoencoder.plot",
            "variational_autoencoder.plot", "experiments.compare", "experiments.latent_study",
            "experiments.precision_study", "experiments.reproduce", "experiments.ship", "experiments.bench",
            "experiments.seeds", "experiments.likelihood", "experiments.explore.app", "experiments.explore.bench"]
# what a program needs on its command line besides the flag under test, to parse at all
REQUIRED = {"experiments.compare": ["--ae", "a.pt", "--vae", "b.pt"], "experiments.ship": ["run"],
            "experiments.seeds": ["metrics.json"], "experiments.likelihood": ["last.pt"]}


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def program_parser(program: str) -> argparse.ArgumentParser:
    """The parser `program`'s main() builds, taken at the moment main() asks it to parse."""
    def grab(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab):
        try:
            importlib.import_module(program).main([])
        except _Parsed as parsed:
            return parsed.parser
    raise AssertionError(f"{program}.main did not parse a command line")


PARSERS = {program: program_parser(program) for program in PROGRAMS}


def numeric_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.option_strings[-1]: action for action in parser._actions
            if isinstance(action.type, (NumberRange, IntTuple)) and action.option_strings}


def _float(value: float) -> str:
    return repr(float(value))


def ends(kind: NumberRange | IntTuple) -> dict[str, tuple[str, list[str]]]:
    """"low"/"high" -> (the end as a flag value, values one step outside it)."""
    if isinstance(kind, IntTuple):
        return {"low": (str(kind.low), [str(kind.low - 1)]),
                "high": (",".join([str(kind.high)] * kind.max_len),
                         [str(kind.high + 1), ",".join([str(kind.high)] * (kind.max_len + 1))])}
    if kind.kind is int:
        return {"low": (str(int(kind.low)), [str(int(kind.low) - 1)]),
                "high": (str(int(kind.high)), [str(int(kind.high) + 1)])}
    low = math.nextafter(kind.low, math.inf) if kind.low_open else kind.low
    high = sys.float_info.max if kind.high == math.inf else kind.high
    return {"low": (_float(low), [_float(math.nextafter(low, -math.inf))]),
            "high": (_float(high), ["inf" if kind.high == math.inf else _float(math.nextafter(high, math.inf))])}


ENDS = {(program, flag, end): (action, *ends(action.type)[end])
        for program, parser in PARSERS.items() for flag, action in numeric_flags(parser).items()
        for end in ("low", "high")}


@pytest.mark.parametrize("key", sorted(ENDS), ids=lambda key: f"{key[0]}{key[1]}={key[2]}")
def test_each_end_parses_and_one_step_outside_is_refused(key, capsys):
    program, flag, _ = key
    action, inside, outside = ENDS[key]
    parser = PARSERS[program]
    args = parser.parse_args([*REQUIRED.get(program, []), flag, inside])
    parsed = getattr(args, action.dest)
    expected = action.type(inside)
    assert parsed == ([expected] if action.nargs in ("+", "*") else expected)
    for value in outside:
        with pytest.raises(SystemExit) as refused:
            parser.parse_args([*REQUIRED.get(program, []), flag, value])
        assert refused.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"error: argument {flag}" in line and len(line) < 300, line


def test_the_config_dataclasses_option_ranges_are_train_pys_flags():
    """TrainConfig's, AEConfig's and VAEConfig's numeric options are the train.py flags checked
    here, with the very range object of the field."""
    for program, configs in (("vanila_autoencoder.train", (TrainConfig, AEConfig)),
                             ("variational_autoencoder.train", (TrainConfig, VAEConfig))):
        flags = numeric_flags(PARSERS[program])
        for config in configs:
            for f in dataclasses.fields(config):
                parse = f.metadata.get("parse")
                if isinstance(parse, (NumberRange, IntTuple)):
                    flag = "--" + f.name.replace("_", "-")
                    assert flags[flag].type is parse, (program, flag)


# ----------------------------------------------------------------------------------------------
# real runs at the ends

TINY = "5e-324"  # the smallest positive float: the low end of every range open at 0
SEED_HIGH = str(MAX_SEED)
COUNT_HIGH = "1000000"
# the architecture flags at their high ends at once, and still cheap: one layer of 4,096 filters of
# 31 x 31 with stride 28 (a 1 x 1 map), then 15 more layers (16 in all, the most there may be)
WIDE = ["--filters", ",".join(["4096"] + ["1"] * 15), "--kernel-sizes", ",".join(["31"] * 16),
        "--strides", ",".join(["28"] + ["1"] * 15)]
SMALL = ["--filters", "4,4,4,4"]


@dataclass
class Ctx:
    data: Path  # 96 training and 40 test images
    ae: Path  # one epoch of a small AE and of a small VAE
    vae: Path
    out: Path  # an empty folder for this run


@dataclass(frozen=True)
class RealRun:
    program: str
    name: str
    covers: tuple[tuple[str, str], ...]  # (flag, "low" or "high") at that end in this run
    run: Callable[[Ctx], None]


def main(program: str) -> Callable:
    return importlib.import_module(program).main


def refusal(program: str, argv: list[str]) -> str:
    return one_line_exit(main(program), argv)


def train_low(program: str, extra: list[str]) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        result = main(program)(["--data-dir", str(ctx.data), "--out-dir", str(ctx.out), "--device", "cpu",
                                "--no-download", "--epochs", "1", "--batch-size", "1", "--eval-batch-size", "1",
                                "--log-every", "1", "--latent-dim", "1", "--lr", TINY, "--seed", "0",
                                "--filters", "1", "--kernel-sizes", "1", "--strides", "1", *extra])
        assert len(result["history"]) == 1 and math.isfinite(result["history"][0]["test_loss"])
        assert result["config"].latent_dim == 1 and result["train"].batch_size == 1
    return run


def train_high(program: str, extra: list[str]) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        result = main(program)(["--data-dir", str(ctx.data), "--out-dir", str(ctx.out), "--device", "cpu",
                                "--no-download", "--epochs", "1", "--batch-size", COUNT_HIGH, "--eval-batch-size",
                                COUNT_HIGH, "--log-every", COUNT_HIGH, "--latent-dim", "1024", "--seed", SEED_HIGH,
                                *WIDE, *extra])
        assert len(result["history"]) == 1 and math.isfinite(result["history"][0]["test_loss"])
        assert result["config"].latent_dim == 1024 and result["train"].seed == MAX_SEED
    return run


def train_lr_high(program: str) -> Callable[[Ctx], None]:
    """--lr 10, the most there may be: an Adam step of 10 per weight. The run either ends with a
    finite (useless) loss, or its loss blows up and it stops with the one line that names --lr,
    leaving nothing behind; which one depends on the model and the data, both are right."""
    def run(ctx: Ctx) -> None:
        out = ctx.out / "run"
        try:
            result = main(program)(["--data-dir", str(ctx.data), "--out-dir", str(out), "--device", "cpu",
                                    "--no-download", "--epochs", "2", "--batch-size", "8", *SMALL, "--lr", "10"])
        except SystemExit as stopped:
            message = stopped.code
            assert isinstance(message, str) and "\n" not in message and message.endswith("(try a lower --lr)"), message
            assert message.startswith("error: the ") and " became " in message
            if "holds epoch 1" not in message:
                assert not out.exists()  # nothing was saved, and no folder is left
        else:
            assert all(math.isfinite(h["test_loss"]) for h in result["history"])
    return run


TRAIN_LOW = ("--epochs", "--batch-size", "--eval-batch-size", "--log-every", "--latent-dim", "--lr", "--seed",
             "--filters", "--kernel-sizes", "--strides")
TRAIN_HIGH = ("--batch-size", "--eval-batch-size", "--log-every", "--latent-dim", "--seed", "--filters",
              "--kernel-sizes", "--strides")


def plot(program: str, num_images: str, seed: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        ckpt = ctx.ae if program.startswith("vanila") else ctx.vae
        written = main(program)(["--checkpoint", str(ckpt), "--out-dir", str(ctx.out), "--data-dir", str(ctx.data),
                                 "--no-download", "--num-images", num_images, "--seed", seed])
        assert ctx.out / "figures" / "reconstructions.png" in written  # 1 digit, or all 40 the split has
    return run


def compare_run(extra: list[str], check: Callable[[dict], None]) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        metrics = main("experiments.compare")(["--ae", str(ctx.ae), "--vae", str(ctx.vae), "--out-dir", str(ctx.out),
                                               "--data-dir", str(ctx.data), "--no-download", "--device", "cpu",
                                               "--classifier-epochs", "1", *extra])
        check(metrics)
    return run


def compare_low(metrics: dict) -> None:
    settings = metrics["settings"]
    assert (settings["num_samples"], settings["iwae_k"], settings["iwae_images"], settings["seed"]) == (2, 1, 2, 0)
    assert all(math.isfinite(r["frechet_distance"]) for r in metrics["samples"]["blur"].values())
    assert math.isfinite(metrics["models"]["vae"]["likelihood"]["iwae"]["se"])  # two images: a standard error


def compare_high(metrics: dict) -> None:
    assert metrics["settings"]["iwae_images"] == 40 and metrics["settings"]["seed"] == MAX_SEED  # all there are


def latent_study_run(extra: list[str], check: Callable[[dict], None]) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        study = main("experiments.latent_study")(["--data-dir", str(ctx.data), "--out-dir", str(ctx.out),
                                                   "--device", "cpu", "--no-download", "--epochs", "1", *extra])
        check(study)
    return run


def latent_low(study: dict) -> None:
    [row] = study["rows"]
    assert row["latent_dim"] == 1 and row["iwae"]["images"] == 2 and row["k_sweep"][0]["k"] == 1
    assert row["iwae_final"]["k"] == 1 and study["settings"]["batch_size"] == 1


def latent_high(study: dict) -> None:
    [row] = study["rows"]
    assert row["latent_dim"] == 1024 and row["iwae"]["images"] == 40 and row["k_sweep"][0]["images"] == 40
    assert study["settings"]["seed"] == MAX_SEED and study["settings"]["batch_size"] == 1_000_000


def precision_run(seed: str, jobs: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        summary = main("experiments.precision_study")(["--data-dir", str(ctx.data), "--out-dir", str(ctx.out),
                                                       "--seeds", seed, "--epochs", "1", "--jobs", jobs,
                                                       "--device", "cpu", "--no-download"])
        assert [r["seed"] for r in summary["rows"]] == [int(seed)] and math.isfinite(summary["rows"][0]["diff"])
    return run


def likelihood_run(extra: list[str], images: int) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        result = main("experiments.likelihood")([str(ctx.vae), "--data-dir", str(ctx.data), "--no-download",
                                                 "--device", "cpu", *extra])
        assert result["iwae"]["images"] == images and math.isfinite(result["iwae"]["se"])
    return run


def ship_run(max_bytes: str) -> Callable[[Ctx], None]:
    """One byte: no model fits, the one line says so and nothing is written; a billion: it ships."""
    def run(ctx: Ctx) -> None:
        argv = [str(ctx.vae.parent.parent), "--out-dir", str(ctx.out), "--max-bytes", max_bytes]
        if max_bytes == "1":
            assert refusal("experiments.ship", argv).endswith("more than 1: not shipped (--max-bytes)")
            assert not any(ctx.out.glob("*.pt"))
        else:
            assert main("experiments.ship")(argv) == [ctx.out / "vae.pt"]
    return run


def bench_run(ctx: Ctx) -> None:
    results = main("experiments.bench")(["--device", "cpu", "--models", "ae", "--batch-size", "1", "--steps", "1",
                                         "--warmup", "1", "--rounds", "1", "--eval-images", "0", "--whole-epochs",
                                         "1", "--seed", SEED_HIGH])
    assert results and json.dumps(results)


def explore_port(port: int) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        from experiments.explore.models import ProjectError
        from experiments.explore.server import bind

        try:
            server = bind("127.0.0.1", port)
        except ProjectError as taken:  # 65535 may be in use on this machine: then it is this one line
            assert str(taken).startswith(f"port {port} on 127.0.0.1 is already in use"), taken
            return
        try:
            assert server.server_address[1] == port or (port == 0 and server.server_address[1] > 0)
        finally:
            server.server_close()
    return run


def _low(*flags: str) -> tuple[tuple[str, str], ...]:
    return tuple((flag, "low") for flag in flags)


def _high(*flags: str) -> tuple[tuple[str, str], ...]:
    return tuple((flag, "high") for flag in flags)


RUNS = [
    RealRun("vanila_autoencoder.train", "low", _low(*TRAIN_LOW), train_low("vanila_autoencoder.train", [])),
    RealRun("vanila_autoencoder.train", "high", _high(*TRAIN_HIGH), train_high("vanila_autoencoder.train", [])),
    RealRun("vanila_autoencoder.train", "lr-high", _high("--lr"), train_lr_high("vanila_autoencoder.train")),
    RealRun("variational_autoencoder.train", "low", _low(*TRAIN_LOW, "--beta", "--recon-weight"),
            train_low("variational_autoencoder.train", ["--beta", "0", "--recon-weight", TINY])),
    RealRun("variational_autoencoder.train", "high", _high(*TRAIN_HIGH, "--beta", "--recon-weight"),
            train_high("variational_autoencoder.train", ["--beta", "1e6", "--recon-weight", "1e6"])),
    RealRun("variational_autoencoder.train", "lr-high", _high("--lr"), train_lr_high("variational_autoencoder.train")),
    *(RealRun(program, end, (("--num-images", end), ("--seed", end)), plot(program, images, seed))
      for program in ("vanila_autoencoder.plot", "variational_autoencoder.plot")
      for end, images, seed in (("low", "1", "0"), ("high", "100", SEED_HIGH))),
    RealRun("experiments.compare", "low",
            _low("--num-samples", "--iwae-k", "--iwae-images", "--classifier-epochs", "--batch-size", "--seed"),
            compare_run(["--num-samples", "2", "--iwae-k", "1", "--iwae-images", "2", "--batch-size", "1", "--seed",
                         "0"], compare_low)),
    RealRun("experiments.compare", "high", _high("--iwae-images", "--batch-size", "--seed"),
            compare_run(["--num-samples", "30", "--iwae-k", "2", "--iwae-images", COUNT_HIGH, "--batch-size",
                         COUNT_HIGH, "--seed", SEED_HIGH], compare_high)),
    RealRun("experiments.latent_study", "low",
            _low("--latent-dims", "--epochs", "--batch-size", "--lr", "--jobs", "--seed", "--iwae-k", "--iwae-images",
                 "--k-sweep", "--k-sweep-images", "--final-k"),
            latent_study_run(["--latent-dims", "1", "--batch-size", "1", "--lr", TINY, "--jobs", "1", "--seed", "0",
                              "--iwae-k", "1", "--iwae-images", "2", "--k-sweep", "1", "--k-sweep-images", "2",
                              "--final-k", "1"], latent_low)),
    RealRun("experiments.latent_study", "high",
            _high("--latent-dims", "--batch-size", "--jobs", "--seed", "--iwae-images", "--k-sweep-images"),
            latent_study_run(["--latent-dims", "1024", "--batch-size", COUNT_HIGH, "--jobs", "64", "--seed",
                              SEED_HIGH, "--iwae-k", "2", "--iwae-images", COUNT_HIGH, "--k-sweep", "2",
                              "--k-sweep-images", COUNT_HIGH], latent_high)),
    RealRun("experiments.precision_study", "low", _low("--seeds", "--epochs", "--jobs"), precision_run("0", "1")),
    RealRun("experiments.precision_study", "high", _high("--seeds", "--jobs"), precision_run(SEED_HIGH, "64")),
    RealRun("experiments.likelihood", "low", _low("--iwae-k", "--iwae-images", "--seed"),
            likelihood_run(["--iwae-k", "1", "--iwae-images", "2", "--seed", "0"], images=2)),
    RealRun("experiments.likelihood", "high", _high("--iwae-images", "--seed"),
            likelihood_run(["--iwae-k", "2", "--iwae-images", COUNT_HIGH, "--seed", SEED_HIGH], images=40)),
    RealRun("experiments.ship", "low", _low("--max-bytes"), ship_run("1")),
    RealRun("experiments.ship", "high", _high("--max-bytes"), ship_run("1000000000")),
    RealRun("experiments.bench", "low",
            _low("--batch-size", "--steps", "--warmup", "--rounds", "--eval-images", "--whole-epochs") +
            _high("--seed"), bench_run),
    RealRun("experiments.explore.app", "low", _low("--port"), explore_port(0)),
    RealRun("experiments.explore.app", "high", _high("--port"), explore_port(65535)),
]

SLOW = "slower than a test may be on a CPU"
PARSE_ONLY = {  # (program, flag, end) -> why no real run here, and what covers it instead where something does
    **{(program, "--epochs", "high"): f"10,000 epochs: {SLOW}; test_options checks that the seed of epoch 10,000 "
                                      f"still seeds torch (MAX_SEED and MAX_EPOCHS together)"
       for program in ("vanila_autoencoder.train", "variational_autoencoder.train", "experiments.latent_study",
                       "experiments.precision_study", "experiments.reproduce")},
    ("experiments.compare", "--num-samples", "high"): f"a million decoded samples in each of 6 sets: {SLOW}",
    ("experiments.compare", "--iwae-k", "high"): f"a million importance samples per image: {SLOW}",
    ("experiments.compare", "--classifier-epochs", "high"): f"a million epochs of the judges: {SLOW}",
    ("experiments.latent_study", "--lr", "high"): "passed to train.py unchanged, whose run at this end diverges "
                                                  "with the one line naming --lr (train.py's lr-high runs)",
    ("experiments.latent_study", "--iwae-k", "high"): f"a million importance samples per image: {SLOW}",
    ("experiments.latent_study", "--k-sweep", "high"): f"a million importance samples per image: {SLOW}",
    ("experiments.latent_study", "--final-k", "high"): f"a million importance samples per image: {SLOW}",
    ("experiments.likelihood", "--iwae-k", "high"): f"a million importance samples per image: {SLOW}",
    **{("experiments.reproduce", flag, end): "passed unchanged to train.py and experiments.compare, whose runs here "
                                             "take this end; tests/test_reproduce.py runs the whole program with "
                                             "--epochs 1 and seed 0"
       for flag, end in (("--epochs", "low"), ("--seed", "low"), ("--seed", "high"), ("--iwae-k", "low"),
                         ("--iwae-images", "low"), ("--iwae-images", "high"))},
    ("experiments.reproduce", "--iwae-k", "high"): f"a million importance samples per image: {SLOW}",
    ("experiments.bench", "--seed", "low"): "tests/test_bench.py runs the benchmark with its default seed, 0",
    ("experiments.bench", "--batch-size", "high"): "a million random images to train on (3 GB): more memory than a "
                                                   "test may take",
    ("experiments.bench", "--eval-images", "high"): "a million random images to evaluate (3 GB): more memory than a "
                                                    "test may take",
    **{("experiments.bench", flag, "high"): f"1,000 timed steps or rounds of both paths: {SLOW}"
       for flag in ("--steps", "--warmup", "--rounds", "--whole-epochs")},
    **{("experiments.explore.bench", flag, end): "times a drag in headless Chromium (Selenium), which a test may not "
                                                 "have; the values only set how many pointer moves there are and how "
                                                 "long each takes"
       for flag in ("--moves", "--move-ms") for end in ("low", "high")},
}


def test_every_end_is_run_or_says_why_not():
    covered = {(run.program, flag, end) for run in RUNS for flag, end in run.covers}
    assert not covered & set(PARSE_ONLY), "an end is both run and listed as parse-only"
    missing = sorted(set(ENDS) - covered - set(PARSE_ONLY))
    assert not missing, f"flag ends with neither a real run nor a reason in PARSE_ONLY: {missing}"
    stale = sorted((covered | set(PARSE_ONLY)) - set(ENDS))
    assert not stale, f"entries for flag ends that no program has: {stale}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from vanila_autoencoder import train as ae_train
    from variational_autoencoder import train as vae_train

    root = tmp_path_factory.mktemp("ranges")
    data = write_mnist(root / "data")
    fast = ["--data-dir", str(data), "--device", "cpu", "--no-download", "--epochs", "1", "--batch-size", "32", *SMALL]
    ae = ae_train.main([*fast, "--out-dir", str(root / "ae")])["checkpoint"]
    vae = vae_train.main([*fast, "--out-dir", str(root / "vae")])["checkpoint"]
    return data, ae, vae


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("real", RUNS, ids=lambda run: f"{run.program}-{run.name}")
def test_a_real_run_at_the_ends(real, trained, tmp_path):
    data, ae, vae = trained
    torch.manual_seed(0)
    real.run(Ctx(data, ae, vae, tmp_path / "out"))
