"""Several seeds' comparisons summed up: mean ± sd of every number, and how often each claim holds.

    python -m experiments.reproduce --seed 1 --out-dir runs/seed1   # one run per seed, then:
    python -m experiments.seeds runs/seed*/compare/metrics.json --out-dir results/seeds

Reads the metrics.json that `experiments.compare` writes for each run (each its own training seed,
its own judges) and writes <out-dir>/summary.md (the tables the README shows) and summary.json.
A comparative claim ("the VAE's prior samples beat the AE's on Fréchet distance") is counted over
every run and both judges: the README says it only where it holds in all of them, or says how often.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from common.errors import ProjectError, exit_on_error
from common.files import atomic_write, write_json
from experiments.slots import refuse_to_replace

OUTPUTS = ("summary.json", "summary.md")  # what --out-dir receives
# (label, key, format, higher is better) for each column of the samples table
SAMPLE_METRICS = [
    ("mean confidence", "mean_confidence", ".3f", True),
    ("share ≥ 0.9", "share_confident", ".3f", True),
    ("class entropy", "class_entropy", ".3f", True),
    ("Fréchet distance", "frechet_distance", ".1f", False),
]
MODEL_METRICS = [  # (label, path in metrics["models"][name], format)
    ("test BCE of the point code (nats)", ("reconstruction", "bce"), ".2f"),
    ("share inside the prior's 95 % ball", ("latent", "share_in_prior"), ".3f"),
    ("centre offset ‖mean‖ / mean std", ("latent", "centre_offset"), ".3f"),
    ("test −ELBO (nats)", ("likelihood", "neg_elbo"), ".2f"),
    ("IWAE −log p(x) (nats)", ("likelihood", "iwae", "nll"), ".2f"),
]
# the sample sets the lesson compares: (a, b) asks "is a better than b?"
CLAIMS = [
    ("VAE, z ~ N(0, I)", "AE, z ~ N(0, I)"),
    ("VAE, z ~ N(0, I)", "AE, z ~ U(code box)"),
    ("AE + GMM", "AE, z ~ U(code box)"),
    ("AE + GMM", "VAE, z ~ N(0, I)"),
    ("VAE + GMM", "VAE, z ~ N(0, I)"),
    ("AE + GMM", "VAE + GMM"),
]


# settings the pooled comparisons must share (their value in a file that predates them): numbers
# from other data or other estimators are not draws of one quantity
SHARED_SETTINGS = {"dataset": "mnist", "binarize": "none", "num_samples": None, "iwae_k": None, "iwae_images": None}


def read_runs(paths: list[Path]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    seen: dict[str, tuple[Path, Any]] = {}
    for path in dict.fromkeys(paths):  # a file named twice counts once
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ProjectError(f"cannot read {path}: {err}") from None
        if not isinstance(metrics, dict) or not isinstance(metrics.get("samples"), dict):
            raise ProjectError(f"{path} is not a metrics.json of experiments.compare (no samples)")
        settings = metrics.get("settings") if isinstance(metrics.get("settings"), dict) else {}
        for key, default in SHARED_SETTINGS.items():
            value = settings.get(key, default)
            first_path, first = seen.setdefault(key, (path, value))
            if value != first:
                raise ProjectError(f"{first_path} and {path} were compared with different {key} ({first!r} and "
                                   f"{value!r}); their numbers cannot be pooled")
        runs.append(metrics)
    if len(runs) < 2:
        raise ProjectError(f"need the metrics of at least 2 runs, got {len(runs)}")
    return runs


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1)."""
    return statistics.fmean(values), statistics.stdev(values)


def _lookup(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per judge and sample set, each metric's values over the runs with mean and sd; per model, the
    same for MODEL_METRICS; per claim and metric, in how many (run, judge) pairs it holds."""
    judges = sorted(set.intersection(*(set(run["samples"]) for run in runs)))
    samples: dict[str, dict[str, dict[str, Any]]] = {}
    for judge in judges:
        names = [name for name in runs[0]["samples"][judge] if all(name in run["samples"][judge] for run in runs)]
        samples[judge] = {}
        for name in names:
            samples[judge][name] = {}
            for _, key, _, _ in SAMPLE_METRICS + [("", "label_accuracy", "", True)]:
                values = [run["samples"][judge][name].get(key) for run in runs]
                if all(isinstance(v, (int, float)) for v in values):
                    mean, sd = mean_sd(values)
                    samples[judge][name][key] = {"values": values, "mean": mean, "sd": sd}
    models: dict[str, dict[str, Any]] = {}
    for name in runs[0]["models"]:
        models[name] = {}
        for label, keys, _ in MODEL_METRICS:
            values = [_lookup(run["models"].get(name), keys) for run in runs]
            if all(isinstance(v, (int, float)) for v in values):
                mean, sd = mean_sd(values)
                models[name][label] = {"values": values, "mean": mean, "sd": sd}
    claims = []
    for a, b in CLAIMS:
        for label, key, _, higher in SAMPLE_METRICS:
            pairs = [(run["samples"][j][a][key], run["samples"][j][b][key]) for run in runs for j in judges
                     if a in run["samples"][j] and b in run["samples"][j]]
            if pairs:
                held = sum((x > y) if higher else (x < y) for x, y in pairs)
                claims.append({"better": a, "than": b, "metric": label, "holds": held, "of": len(pairs)})
    return {"runs": len(runs), "seeds": [_lookup(run, ("settings", "seed")) for run in runs], "judges": judges,
            "samples": samples, "models": models, "claims": claims}


def _cell(stat: dict[str, Any] | None, fmt: str) -> str:
    if stat is None:
        return "–"
    return f"{format(stat['mean'], fmt)} ± {format(stat['sd'], fmt)}"


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown: the models table, one samples table per judge, the claims with their counts."""
    models = summary["models"]
    lines = [f"{summary['runs']} runs (training seeds {', '.join(map(str, summary['seeds']))}), each with its own "
             f"judges; mean ± sd over the runs.", "",
             "| metric | " + " | ".join(name.upper() for name in models) + " |", "|---|" + "---:|" * len(models)]
    for label, _, fmt in MODEL_METRICS:
        lines.append(f"| {label} | " + " | ".join(_cell(models[m].get(label), fmt) for m in models) + " |")
    for judge, sets in summary["samples"].items():
        lines += ["", f"Samples judged by the classifier trained on {judge} digits:", "",
                  "| samples | " + " | ".join(label for label, _, _, _ in SAMPLE_METRICS) + " |",
                  "|---|" + "---:|" * len(SAMPLE_METRICS)]
        for name, stats in sets.items():
            lines.append(f"| {name} | " + " | ".join(_cell(stats.get(key), fmt) for _, key, fmt, _ in SAMPLE_METRICS)
                         + " |")
    lines += ["", "How often each comparison holds (runs × judges):", "",
              "| better | than | " + " | ".join(label for label, _, _, _ in SAMPLE_METRICS) + " |",
              "|---|---|" + "---:|" * len(SAMPLE_METRICS)]
    for a, b in CLAIMS:
        counts = {c["metric"]: f"{c['holds']}/{c['of']}" for c in summary["claims"] if (c["better"], c["than"]) == (a, b)}
        lines.append(f"| {a} | {b} | " + " | ".join(counts.get(label, "–") for label, _, _, _ in SAMPLE_METRICS) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Sum up several runs' comparisons: mean ± sd, and how often each "
                                            "claim holds.")
    p.add_argument("metrics", type=Path, nargs="+", help="metrics.json files written by experiments.compare")
    p.add_argument("--out-dir", type=Path, help="also write summary.md and summary.json there (default: print only)")
    p.add_argument("--overwrite", action="store_true", help="replace summary.md and summary.json in --out-dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error():
        if args.out_dir is not None:  # else nothing is written
            refuse_to_replace(args.out_dir, OUTPUTS, args.overwrite, "summary")
        text = format_summary(summary := summarise(read_runs(args.metrics)))
        if args.out_dir is not None:
            write_json(args.out_dir / "summary.json", summary)
            atomic_write(args.out_dir / "summary.md", lambda f: f.write((text + "\n").encode("utf-8")))
    print(text)
    return summary


if __name__ == "__main__":
    main()
