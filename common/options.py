"""Config fields that are also command-line flags, each declared once.

A config dataclass declares a flag with `option(default, help, ...)`; `add_options` turns every
such field into an argparse flag (`latent_dim` -> `--latent-dim`, its help text followed by
"(default: ...)"), and `merge_options` builds the config from the flags given, the checkpoint
being resumed and the defaults. Fields declared with plain `dataclasses.field` are not flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import TrainingError, short_repr

# Upper bounds of the numeric flags, far above any sensible value and far below where a number
# overflows a tensor size or torch's seed, so an absurd value is one argparse line, not a traceback.
MAX_COUNT = 1_000_000  # a count of images, samples, steps or a batch size (MNIST has 70,000 images)
MAX_EPOCHS = 10_000  # the defaults train 8
# epoch_generator (common/data.py) seeds each epoch's shuffle with seed * 1_000_003 + epoch, which
# must stay below 2**64, the most torch.Generator.manual_seed accepts: 2**44 * 1_000_003 < 2**64.
MAX_SEED = 2**44 - 1


@dataclass(frozen=True)
class NumberRange:
    """Parses a numeric flag and checks that it lies in [low, high] (or (low, high] with `low_open`).
    The same object checks a value read back from a checkpoint (`problem`), so a file is held to
    exactly the flags' rules."""

    kind: type  # int or float
    low: float
    high: float
    low_open: bool = False

    def span(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"from {self.low} to {self.high}"

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
        problem = self.problem(value)
        if problem:
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
        problem = self.problem(values)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return values


positive_int = NumberRange(int, 1, MAX_COUNT)
epochs_int = NumberRange(int, 1, MAX_EPOCHS)
seed_int = NumberRange(int, 0, MAX_SEED)
positive_float = NumberRange(float, 0.0, math.inf, low_open=True)
non_negative_float = NumberRange(float, 0.0, math.inf)
int_tuple = IntTuple(1, MAX_COUNT, 64)


def option(default: Any, help: str, *, parse: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, runtime: bool = False) -> Any:
    """A dataclass field that is also a flag. `parse` converts and checks the flag's text (default:
    the type of `default`); `runtime` marks settings that change how a run goes, not what it
    computes, so `--resume` may change them."""
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
    """One flag per `option` field of `config_cls`, in a group called `title`. Every flag's
    argparse default is None, so that `merge_options` can tell a flag given from one left out.
    `shown_defaults` replaces the default printed in the help (e.g. a folder known only at run time)."""
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
    """Field values for `config_cls`: explicit flag > checkpoint being resumed (`saved`) > default.

    An explicit flag that contradicts the checkpoint is an error, except for runtime fields.
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        given = getattr(args, f.name, None)
        if saved is not None and f.name in saved:
            old = tuple(saved[f.name]) if isinstance(saved[f.name], list) else saved[f.name]
            if given is not None and not f.metadata.get("runtime") and given != old:
                raise TrainingError(f"{flag_name(f.name)} {given} contradicts the checkpoint being resumed ({old}); "
                                    f"drop the flag or start a new run with --overwrite")
            values[f.name] = given if given is not None else old
        else:
            values[f.name] = given if given is not None else f.default
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
    """Raise ValueError naming the first flag field of the dataclass instance `config` whose value
    no flag could have given (wrong type, out of range, not one of the choices). Configs call it
    in __post_init__, so one rebuilt from a checkpoint is held to the flags' rules."""
    for f in dataclasses.fields(config):
        if "help" in f.metadata:
            problem = _problem(f, getattr(config, f.name))
            if problem:
                raise ValueError(f"{f.name} {problem}")
