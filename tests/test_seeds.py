"""experiments/seeds.py: mean ± sd over runs and how often each comparison holds, from metrics.json files."""

import json

import pytest

from experiments import seeds

SETS = ["AE, z ~ N(0, I)", "AE, z ~ U(code box)", "AE + GMM", "VAE, z ~ N(0, I)", "VAE + GMM"]


def metrics(seed: int, fd: dict[str, float], confidence: float) -> dict:
    """A metrics.json of experiments.compare with made-up numbers: Fréchet distances per set; the
    same confidence for every set except the VAE prior's, which gets `confidence`."""
    def verdict(name: str) -> dict:
        return {"mean_confidence": confidence if name == "VAE, z ~ N(0, I)" else 0.5, "share_confident": 0.5,
                "class_entropy": 0.9, "frechet_distance": fd[name]}
    return {"settings": {"seed": seed},
            "models": {"ae": {"reconstruction": {"bce": 140.0 + seed}, "latent": {"share_in_prior": 0.1,
                                                                                   "centre_offset": 1.0}},
                       "vae": {"reconstruction": {"bce": 141.0}, "likelihood": {"neg_elbo": 145.0 + 2 * seed}}},
            "samples": {judge: {name: verdict(name) for name in SETS} for judge in ("blur", "sharp")}}


def write(tmp_path, runs):
    paths = []
    for i, run in enumerate(runs):
        path = tmp_path / f"seed{i}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(run))
        paths.append(path)
    return paths


def test_means_sds_and_counts_by_hand(tmp_path):
    base = {"AE, z ~ N(0, I)": 40.0, "AE, z ~ U(code box)": 30.0, "AE + GMM": 10.0, "VAE, z ~ N(0, I)": 20.0,
            "VAE + GMM": 15.0}
    runs = [metrics(0, base, 0.6), metrics(1, {**base, "VAE, z ~ N(0, I)": 35.0}, 0.7),
            metrics(2, {**base, "VAE, z ~ N(0, I)": 50.0}, 0.4)]
    paths = write(tmp_path, runs)
    summary = seeds.main([*map(str, paths), str(paths[0]), "--out-dir", str(tmp_path / "out")])  # one named twice
    assert summary["runs"] == 3 and summary["seeds"] == [0, 1, 2]
    vae_fd = summary["samples"]["blur"]["VAE, z ~ N(0, I)"]["frechet_distance"]
    assert vae_fd["values"] == [20.0, 35.0, 50.0]
    assert vae_fd["mean"] == pytest.approx(35.0) and vae_fd["sd"] == pytest.approx(15.0)  # sqrt((225+0+225)/2)
    assert summary["models"]["vae"]["test −ELBO (nats)"]["mean"] == pytest.approx(147.0)
    assert summary["models"]["vae"]["test −ELBO (nats)"]["sd"] == pytest.approx(2.0)
    claims = {(c["better"], c["than"], c["metric"]): (c["holds"], c["of"]) for c in summary["claims"]}
    # VAE prior (20, 35, 50) beats AE prior (40) on Fréchet in runs 0 and 1, under both judges
    assert claims[("VAE, z ~ N(0, I)", "AE, z ~ N(0, I)", "Fréchet distance")] == (4, 6)
    # ... and its confidence (0.6, 0.7, 0.4) beats 0.5 in runs 0 and 1
    assert claims[("VAE, z ~ N(0, I)", "AE, z ~ N(0, I)", "mean confidence")] == (4, 6)
    # equal values never count as better
    assert claims[("AE + GMM", "VAE + GMM", "class entropy")] == (0, 6)
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "| VAE, z ~ N(0, I) | 0.567 ± 0.153 |" in text  # mean of 0.6, 0.7, 0.4; sd 0.1528
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["runs"] == 3


def test_bad_input_is_one_line(tmp_path):
    paths = write(tmp_path, [metrics(0, dict.fromkeys(SETS, 1.0), 0.5)])
    with pytest.raises(SystemExit) as one:
        seeds.main([str(paths[0])])
    assert "at least 2 runs" in str(one.value.code)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit) as bad:
        seeds.main([str(paths[0]), str(tmp_path / "bad.json")])
    assert str(bad.value.code).startswith("error: cannot read") and "\n" not in str(bad.value.code)
    (tmp_path / "other.json").write_text("[]")
    with pytest.raises(SystemExit) as other:
        seeds.main([str(paths[0]), str(tmp_path / "other.json")])
    assert "not a metrics.json" in str(other.value.code)


def test_an_earlier_summary_is_kept_and_runs_on_other_data_are_not_pooled(tmp_path):
    base = {"AE, z ~ N(0, I)": 40.0, "AE, z ~ U(code box)": 30.0, "AE + GMM": 10.0, "VAE, z ~ N(0, I)": 20.0,
            "VAE + GMM": 15.0}
    paths = write(tmp_path, [metrics(0, base, 0.6), metrics(1, base, 0.7)])
    out = tmp_path / "out"
    seeds.main([*map(str, paths), "--out-dir", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit) as refused:
        seeds.main([*map(str, paths), "--out-dir", str(out)])
    assert refused.value.code == (f"error: {out} holds an earlier summary (summary.json, summary.md): pass "
                                  f"--overwrite to replace it, or use another --out-dir")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    seeds.main([*map(str, paths), "--out-dir", str(out), "--overwrite"])

    fashion = metrics(2, base, 0.5)
    fashion["settings"]["dataset"] = "fashion-mnist"
    (tmp_path / "more").mkdir()
    [other] = write(tmp_path / "more", [fashion])
    with pytest.raises(SystemExit) as mixed:
        seeds.main([*map(str, paths), str(other)])
    assert mixed.value.code == (f"error: {paths[0]} and {other} were compared with different dataset ('mnist' "
                                f"and 'fashion-mnist'); their numbers cannot be pooled")
