"""Config fields that are also command-line flags, each declared once with `option(default, help, ...)`.

`add_options` makes the flags (`latent_dim` -> `--latent-dim`), `merge_options` builds a config from
flags, the checkpoint resumed and defaults, `check_options` holds any config to the flags' rules.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import TrainingError, short_repr

# Bounds far above any sensible value and below where a tensor size or torch's seed overflows, so an
# absurd value is one argparse line, not a traceback.
MAX_COUNT = 1_000_000  # images, samples, steps or a batch size (MNIST has 70,000 images)
MAX_EPOCHS = 10_000  # the defaults train 8
MAX_SEED = 2**44 - 1  # data.epoch_generator seeds with seed * 1_000_003 + epoch, which must stay < 2**64
# Adam steps each weight by about lr: every run above 1 diverged; lr / (1 - 0.9) overflows float32 near 1e308
MAX_LR = 10.0


@dataclass(frozen=True)
class NumberRange:
    """Parses a numeric flag in [low, high] (or (low, high] with `low_open`); `problem` holds a value
    read from a checkpoint to the same rule."""

    kind: type  # int or float
    low: float
    high: float
    low_open: bool = False

    def span(self) -> str:
        low, high = (f"{self.low:g}", f"{self.high:g}") if self.kind is float else (str(self.low), str(self.high))
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"> {low} and <= {high}" if self.low_open else f"from {low} to {high}"

    def describe(self) -> str:
        return f"{'an integer' if self.kind is int else 'a finite number'} {self.span()}"

    def problem(self, value: object) -> str | None:
        """Why `value` is not acceptable, or None."""
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"must be {self.describe()}, got {short_repr(value)}"
        try:
            finite = self.kind is int or math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite or not self.low <= value <= self.high or (self.low_open and value == self.low):
            return f"must be {self.describe()}, got {short_repr(value)}"
        return None

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {short_repr(text)}") from None
        if problem := self.problem(value):
            raise argparse.ArgumentTypeError(problem)
        return value


@dataclass(frozen=True)
class IntTuple:
    """Parses comma-separated integers, each in [low, high], 1 to `max_len` of them."""

    low: int
    high: int
    max_len: int

    def problem(self, value: object) -> str | None:
        if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= self.max_len:
            return f"must be 1 to {self.max_len} integers, got {short_repr(value)}"
        if any(isinstance(v, bool) or not isinstance(v, int) or not self.low <= v <= self.high for v in value):
            return f"must be integers from {self.low} to {self.high}, got {short_repr(value)}"
        return None

    def __call__(self, text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.replace(",", " ").split())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {short_repr(text)}") from None
        if problem := self.problem(values):
            raise argparse.ArgumentTypeError(problem)
        return values


positive_int = NumberRange(int, 1, MAX_COUNT)
epochs_int = NumberRange(int, 1, MAX_EPOCHS)
seed_int = NumberRange(int, 0, MAX_SEED)
learning_rate = NumberRange(float, 0.0, MAX_LR, low_open=True)
int_tuple = IntTuple(1, MAX_COUNT, 64)


def option(default: Any, help: str, *, parse: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, runtime: bool = False) -> Any:
    """A dataclass field that is also a flag. `parse` converts and checks its text (default: the type
    of `default`); `runtime` marks how a run goes, not what it computes, so --resume may change it."""
    return dataclasses.field(default=default, metadata={
        "help": help, "parse": parse, "choices": tuple(choices) if choices else None, "runtime": runtime})


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def add_options(parser: argparse.ArgumentParser, config_cls: type, title: str,
                shown_defaults: dict[str, str] | None = None) -> None:
    """One flag per `option` field of `config_cls`, in a group `title`; argparse defaults are None, so
    `merge_options` tells a flag given from one left out. `shown_defaults` overrides the help's default."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(config_cls):
        if "help" not in f.metadata:
            continue
        shown = (shown_defaults or {}).get(f.name, _show(f.default))
        span = getattr(f.metadata["parse"], "span", None)
        help_text = f"{f.metadata['help']} ({span() + '; ' if span else ''}default: {shown})"
        if isinstance(f.default, bool):
            group.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, help=help_text)
            continue
        parse = f.metadata["parse"] or (int_tuple if isinstance(f.default, tuple) else type(f.default))
        group.add_argument(flag_name(f.name), type=parse, choices=f.metadata["choices"], help=help_text)


def merge_options(config_cls: type, args: argparse.Namespace, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Field values for `config_cls`: explicit flag > checkpoint being resumed (`saved`) > default;
    a flag contradicting the checkpoint is an error, except for runtime fields."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        given, old = getattr(args, f.name, None), f.default
        if saved is not None and f.name in saved:
            old = tuple(saved[f.name]) if isinstance(saved[f.name], list) else saved[f.name]
            if given is not None and not f.metadata.get("runtime") and given != old:
                raise TrainingError(f"{flag_name(f.name)} {given} contradicts the checkpoint being resumed ({old}); "
                                    f"drop the flag or start a new run with --overwrite")
        values[f.name] = given if given is not None else old
    return values


def _problem(f: dataclasses.Field, value: Any) -> str | None:
    parse, choices = f.metadata["parse"], f.metadata["choices"]
    if choices is not None:
        return None if isinstance(value, str) and value in choices else \
            f"must be one of {', '.join(choices)}, got {short_repr(value)}"
    if hasattr(parse, "problem"):
        return parse.problem(value)
    if isinstance(f.default, tuple):
        return int_tuple.problem(value)
    expected = type(f.default)
    ok = isinstance(value, bool) if expected is bool else (isinstance(value, expected) and not isinstance(value, bool))
    return None if ok else f"must be a {expected.__name__}, got {short_repr(value)}"


def check_options(config: Any) -> None:
    """ValueError naming the first flag field of `config` whose value no flag could have given (type,
    range, choices); configs call it in __post_init__."""
    for f in dataclasses.fields(config):
        if "help" in f.metadata:
            if problem := _problem(f, getattr(config, f.name)):
                raise ValueError(f"{f.name} {problem}")
