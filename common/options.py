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
from typing import Any

from common.errors import TrainingError


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


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
        help_text = f"{f.metadata['help']} (default: {shown})"
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
