"""Many runs of the benchmark summed up: per machine kind and default path, the spread of the speed-ups.

    python -m experiments.bench_summary results/bench_cpu*.txt
    python -m experiments.bench_summary results/bench_cpu*.txt --step-at-least 2.2 --whole-at-least 1.3

Reads the text that `python -m experiments.bench` prints (as committed under results/) and groups
the runs by the machine (the device; on a CPU its ISA and any AVX2 cap) and by what the default
path ran (precision, memory formats, batch). For each group and model it prints how many runs it
holds, the median and the range of the step speed-up and of the whole `train.py` epoch against the
reference, and each run's own figures, file by file. Each ratio is the one measured within its run
(reference and default path alternating on the same machine); no ratio is formed across runs. With
--step-at-least / --whole-at-least it also counts the runs (and, where a file lists them, the
rounds) at or above those speed-ups. On a shared machine whose speed drifts, one run is one draw:
this is the table to read before quoting any single one.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ProjectError, exit_on_error
from common.options import NumberRange

ratio = NumberRange(float, 0.0, math.inf, low_open=True)
DEVICE = re.compile(r"^device: (?P<device>\w+) \((?P<inside>.*)\)$", re.MULTILINE)
CPU_KIND = re.compile(r"ISA (?P<isa>[^,]+)(?:, capped by [^,]+)?, torch kernels (?P<kernels>[\w-]+)")
DEFAULT_PATH = re.compile(r"default path: (?P<path>.*?)(?:; each path|$)", re.MULTILINE)  # older files: to the end
ROUNDS = re.compile(r"^(?P<model>\w+), each round's reference / default train img/s \(speed-up\): (?P<rounds>.*)$",
                    re.MULTILINE)
TIMES = re.compile(r"([\d.]+)x")  # "1.49x" -> 1.49


@dataclass
class Run:
    """One model's figures from one benchmark file."""

    file: str
    step: float  # the default path's step rate over the reference's, within the run
    whole: float | None  # a whole train.py epoch (start to exit) over the reference's step rate; None if not timed
    rounds: list[float] = field(default_factory=list)  # each round's step speed-up, where the file lists them


def machine_kind(text: str, name: str) -> str:
    """The device line as a group name: 'cpu, AVX-512 BF16', 'cpu, AVX-512 BF16 capped to AVX2', 'cuda, NVIDIA H200'."""
    device = DEVICE.search(text)
    if device is None:
        raise ProjectError(f"{name}: no 'device: ...' line; is it the output of python -m experiments.bench?")
    inside = device["inside"]
    cpu = CPU_KIND.search(inside)
    if device["device"] == "cpu" and cpu is not None:
        capped = "capped by" in inside
        return f"cpu, {cpu['isa']}" + (f" capped to {cpu['kernels']}" if capped else "")
    return f"{device['device']}, {re.split(r'[;,]', inside)[0].strip()}"


def read_runs(text: str, name: str) -> dict[tuple[str, str, str], Run]:
    """(machine kind, default path, model) -> that model's figures in one benchmark output."""
    kind = machine_kind(text, name)
    path = DEFAULT_PATH.search(text)
    if path is None:
        raise ProjectError(f"{name}: no 'default path: ...' description in its header")
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| model |")), None)
    if header is None:
        raise ProjectError(f"{name}: no results table (a line starting '| model |')")
    columns = [cell.strip() for cell in lines[header].strip("|").split("|")]
    if "speed-up" not in columns:
        raise ProjectError(f"{name}: the results table has no 'speed-up' column")
    speed_column = columns.index("speed-up")
    whole_column = next((i for i, c in enumerate(columns) if c.startswith("whole train.py epoch")), None)
    rounds = {m["model"]: [float(r) for r in TIMES.findall(m["rounds"])] for m in ROUNDS.finditer(text)}
    runs = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        model = cells[0]
        if len(cells) != len(columns):
            raise ProjectError(f"{name}: {model}'s row has {len(cells)} cells, its table {len(columns)} columns")
        step = TIMES.fullmatch(cells[speed_column])
        if step is None:
            raise ProjectError(f"{name}: {model}'s speed-up {cells[speed_column]!r} is not a ratio like 1.49x")
        whole = TIMES.findall(cells[whole_column]) if whole_column is not None else []
        runs[(kind, path["path"], model)] = Run(name, float(step[1]), float(whole[-1]) if whole else None,
                                                rounds.get(model, []))
    if not runs:
        raise ProjectError(f"{name}: the results table has no rows")
    return runs


def spread(values: list[float]) -> str:
    """'1.28x (1.09-1.33x)': median and range; one value alone."""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f}x)"


def count_at_least(values: list[float], bar: float | None) -> str:
    return "" if bar is None or not values else f", {sum(v >= bar for v in values)} of {len(values)} at or above {bar:g}x"


def summarise(groups: dict[tuple[str, str, str], list[Run]], step_bar: float | None, whole_bar: float | None) -> str:
    out = []
    for (kind, path, model), runs in groups.items():  # in the order the files came
        steps = [r.step for r in runs]
        wholes = [r.whole for r in runs if r.whole is not None]
        rounds = [x for r in runs for x in r.rounds]
        out.append(f"{model} on {kind}; default path: {path}")
        out.append(f"  runs: {len(runs)}")
        out.append(f"  step speed-up, median (range): {spread(steps)}{count_at_least(steps, step_bar)}")
        if rounds:
            listed = sum(bool(r.rounds) for r in runs)
            out.append(f"  step speed-up of the single rounds ({len(rounds)} in {listed} run{'s' * (listed != 1)}): "
                       f"{spread(rounds)}{count_at_least(rounds, step_bar)}")
        if wholes:
            out.append(f"  whole train.py epoch vs reference, median (range): {spread(wholes)}"
                       f"{count_at_least(wholes, whole_bar)}")
        for r in runs:
            whole = f", whole epoch {r.whole:.2f}x" if r.whole is not None else ""
            out.append(f"    {r.file}: step {r.step:.2f}x{whole}")
        out.append("")
    return "\n".join(out).rstrip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="outputs of python -m experiments.bench, e.g. results/bench_cpu*.txt")
    p.add_argument("--step-at-least", type=ratio, default=None, metavar="R",
                   help="also count the runs and rounds whose step speed-up is R or more (default: no count)")
    p.add_argument("--whole-at-least", type=ratio, default=None, metavar="R",
                   help="also count the runs whose whole epoch is R times the reference or more (default: no count)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    with exit_on_error():
        groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
        for name in dict.fromkeys(args.files):  # a file named twice (overlapping globs) counts once
            try:
                text = Path(name).read_text()
            except OSError as err:
                raise ProjectError(f"cannot read {name}: {err.strerror}") from None
            for key, run in read_runs(text, name).items():
                groups[key].append(run)
        summary = summarise(groups, args.step_at_least, args.whole_at_least)
        print(summary)
        return summary


if __name__ == "__main__":
    main()
