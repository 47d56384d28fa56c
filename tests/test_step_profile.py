"""experiments/step_profile.py: oneDNN's kernel timings read back per layer and pass."""

import os
import subprocess
import sys

import pytest

from experiments import step_profile
from experiments.bench import MODELS

# enc1 of the default network (1 -> 32 channels, 28 x 28, stride 1) and dec3 (transposed, 64 -> 32,
# 14 x 14 -> 28 x 28, stride 2), as oneDNN 3.x prints them
ENC1 = "mb128_ic1oc32_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1"
DEC3 = "mb128_ic64oc32_ih14oh28kh3sh2dh0ph1_iw14ow28kw3sw2dw0pw1"


def line(kind: str, impl: str, prop: str, problem: str, ms: float) -> str:
    return (f"onednn_verbose,v1,primitive,exec,cpu,{kind},{impl},{prop},src:f32::blocked:acdb::f0 "
            f"dst:f32::blocked:acdb::f0,attr-scratchpad:user,alg:{kind}_direct,{problem},{ms}")


def test_flops_by_hand():
    # a convolution: every output pixel meets ic * oc * 3 * 3 weights, 2 flops each
    assert step_profile.conv_flops("convolution", ENC1) == 2 * 128 * 1 * 32 * 9 * 28 * 28
    # a transposed convolution: every input pixel does (14 x 14 of them, not the 28 x 28 output)
    assert step_profile.conv_flops("deconvolution", DEC3) == 2 * 128 * 64 * 32 * 9 * 14 * 14
    grouped = "g2mb4_ic8oc8_ih5oh5kh3sh1dh0ph1_iw5ow5kw3sw1dw0pw1"
    assert step_profile.conv_flops("convolution", grouped) == 2 * 4 * 8 * 8 * 9 * 25 / 2
    with pytest.raises(step_profile.ProjectError, match="descriptor"):
        step_profile.conv_flops("convolution", "mb1_ic1")


def test_parse_sums_the_timed_kernels_only():
    text = "\n".join([
        line("convolution", "jit:avx2", "forward_training", ENC1, 9.0),  # warm-up: not counted
        step_profile.TIMED,
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src dst,,,32x1x3x3,0.5",  # not a conv
        "tqdm noise, not a verbose line",
        line("convolution", "brg_conv_fwd:avx2", "forward_training", ENC1, 1.0),
        line("deconvolution", "conv:any+jit:avx2", "backward_weights", DEC3, 4.0),
        line("convolution", "brg_conv_fwd:avx2", "forward_training", ENC1, 3.0),
        line("deconvolution", "conv:any+jit:avx2", "backward_weights", DEC3, 6.0),
        line("deconvolution", "conv:any+brg_conv_fwd:avx2", "backward_data", DEC3, 2.5),
    ])
    kernels = step_profile.parse_verbose(text)
    enc1 = ("convolution", 1, 32, 28, 28, 28, 28, 3, 1)
    dec3 = ("deconvolution", 64, 32, 14, 14, 28, 28, 3, 2)
    assert set(kernels) == {(enc1, "forward"), (dec3, "grad weights"), (dec3, "grad input")}
    fwd = kernels[(enc1, "forward")]
    assert (fwd.ms, fwd.calls, fwd.implementations) == (4.0, 2, {"brg_conv_fwd:avx2"})
    assert kernels[(dec3, "grad weights")].ms == 10.0
    table = step_profile.format_table(kernels, {enc1: "enc1", dec3: "dec3"}, steps=2, step_ms=20.0)
    rows = [r for r in table.splitlines() if r.startswith(("| enc1", "| dec3"))]
    assert rows[0].startswith("| enc1") and rows[1].startswith("| dec3")  # the order of `names`
    # enc1 forward: 4 ms over 2 steps = 2.00 ms a step; 2 calls of 57.8 MFLOP in 4 ms = 29 GFLOP/s
    assert "2.00, 29, brg_conv_fwd:avx2" in rows[0]
    # dec3 weights: 10 ms / 2 = 5.00 ms a step; 2 x 0.925 GFLOP in 10 ms = 185 GFLOP/s
    assert "5.00, 185, conv:any+jit:avx2" in rows[1]
    # all kernels: (4 + 10 + 2.5) / 2 = 8.25 ms of 20 ms
    assert "convolution kernels: 8.2 ms of the step's 20.0 ms (41%)" in table
    assert "everything else (batch norm, ReLU, dense layers, loss, Adam, Python): 11.8 ms" in table


def test_every_conv_of_the_default_vae_is_named():
    build, loss_fn = MODELS["vae"]
    model = build()
    names = step_profile.conv_layers(model, loss_fn)
    assert model.training  # looked at in eval mode, handed back in training mode
    assert len(names) == 8
    assert names[("convolution", 1, 32, 28, 28, 28, 28, 3, 1)] == "encoder.convs.0.0"
    assert names[("convolution", 32, 64, 28, 28, 14, 14, 3, 2)] == "encoder.convs.1.0"
    assert names[("deconvolution", 64, 32, 14, 14, 28, 28, 3, 2)] == "decoder.deconvs.2.0"
    assert names[("deconvolution", 32, 1, 28, 28, 28, 28, 3, 1)] == "decoder.deconvs.3"


def test_a_real_profile_reports_each_layer(capsys):
    table = step_profile.main(["--model", "ae", "--steps", "2", "--warmup", "1", "--batch-size", "8",
                               "--precision", "fp32"])
    out = capsys.readouterr().out
    assert "AE training step, fp32, batch 8, 2 steps after 1 untimed" in out
    rows = [r for r in table.splitlines() if r.startswith(("| encoder", "| decoder"))]
    assert len(rows) == 8
    # the first conv's input (the images) needs no gradient: oneDNN runs no backward-data kernel for it
    first = next(r for r in rows if r.startswith("| encoder.convs.0.0"))
    assert first.split(" | ")[2] == "–"
    assert all(r.split(" | ")[1] != "–" and r.split(" | ")[3] != "–" for r in rows)


def test_a_failed_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        step_profile.main(["--data-dir", str(tmp_path), "--steps", "1", "--warmup", "1"])
    assert str(exc.value).startswith("error: the profiled run failed: mnist not found")


def test_only_the_timed_steps_are_counted():
    # oneDNN prints from C and Python prints the marker: every kernel must be counted once a timed
    # step, none of the warm-up's (the two streams reach the pipe in the order they were written)
    cmd = [sys.executable, "-m", "experiments.step_profile", "--child", "--model", "ae", "--steps", "3",
           "--warmup", "2", "--batch-size", "8", "--precision", "fp32"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "ONEDNN_VERBOSE": "1"}).stdout
    kernels = step_profile.parse_verbose(out)
    assert len(kernels) == 8 * 3 - 1  # 8 convolutions x 3 passes, the first without grad input
    assert {k.calls for k in kernels.values()} == {3}
