"""Shapes, the public API and the architecture's sizes."""

import pytest
import torch

from vanila_autoencoder.model import AEConfig, Autoencoder
from variational_autoencoder.model import VAE, VAEConfig


@pytest.mark.parametrize("latent_dim", [1, 2, 5, 20])
def test_ae_shapes(latent_dim):
    model = Autoencoder(AEConfig(latent_dim=latent_dim)).eval()
    x = torch.rand(3, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (3, latent_dim)
    out = model.decode(z)
    assert out.shape == (3, 1, 28, 28)
    assert out.min() >= 0 and out.max() <= 1
    assert model.latent_dim == latent_dim
    assert model(x).logits.shape == (3, 1, 28, 28)


@pytest.mark.parametrize("latent_dim", [1, 2, 5, 20])
def test_vae_shapes(latent_dim):
    model = VAE(VAEConfig(latent_dim=latent_dim)).eval()
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, latent_dim)
    out = model.decode(mu)
    assert out.shape == (3, 1, 28, 28)
    assert out.min() >= 0 and out.max() <= 1
    assert model.latent_dim == latent_dim
    result = model(x)
    assert result.logits.shape == (3, 1, 28, 28) and result.z.shape == (3, latent_dim)


def test_default_architecture_is_the_original():
    model = Autoencoder(AEConfig())
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64, 64]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 1]
    assert all(c.kernel_size == (3, 3) for c in convs)
    # 28 -> 28 -> 14 -> 7 -> 7, 64 channels: 3136 features into the bottleneck
    assert model.fc_z.in_features == 64 * 7 * 7
    deconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [d.out_channels for d in deconvs] == [64, 64, 32, 1]
    assert [d.stride[0] for d in deconvs] == [1, 2, 2, 1]
    # each hidden block is Conv -> ReLU -> BatchNorm
    first = model.encoder.convs[0]
    assert [type(m).__name__ for m in first] == ["Conv2d", "ReLU", "BatchNorm2d"]


@pytest.mark.parametrize("strides,kernels,filters", [
    ((1, 2, 2, 2), (3, 3, 3, 3), (32, 64, 64, 64)),  # 28 -> 14 -> 7 -> 4: the decoder must undo the ceil
    ((2, 2), (5, 3), (8, 16)),
    ((1,), (7,), (4,)),
])
def test_other_architectures_reconstruct_the_input_size(strides, kernels, filters):
    config = VAEConfig(latent_dim=3, strides=strides, kernel_sizes=kernels, filters=filters)
    model = VAE(config)
    assert model(torch.rand(2, 1, 28, 28)).logits.shape == (2, 1, 28, 28)


def test_vae_config_refuses_bad_loss_settings():
    with pytest.raises(ValueError):
        VAEConfig(beta=-1.0)
    with pytest.raises(ValueError):
        VAEConfig(loss="l1")


def test_models_keep_no_state_between_calls():
    torch.manual_seed(0)
    model = VAE(VAEConfig()).eval()
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model.encode(x)[0], model.encode(x)[0])


def test_code_is_the_ae_z_and_the_vae_posterior_mean():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 28, 28)
    ae = Autoencoder(AEConfig()).eval()
    assert torch.equal(ae.code(x), ae.encode(x))
    vae = VAE(VAEConfig()).eval()
    mu, logvar = vae.encode(x)
    assert torch.equal(vae.code(x), mu) and vae.code(x).shape == (3, 2)


def test_conditional_vae_uses_the_label_and_keeps_the_unconditional_api():
    torch.manual_seed(0)
    cvae = VAE(VAEConfig(conditional=True)).eval()
    z = torch.randn(4, 2)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.inference_mode():
        a, b = cvae.decode(z, zeros), cvae.decode(z, ones)
        assert a.shape == (4, 1, 28, 28) and (a - b).abs().max() > 1e-4  # the output depends on the label
        assert torch.equal(a, cvae.decode(z, zeros))
        x = torch.rand(4, 1, 28, 28)
        assert not torch.allclose(cvae.encode(x, zeros)[0], cvae.encode(x, ones)[0])
    with pytest.raises(ValueError, match="needs the digit labels"):
        cvae.decode(z)
    # the label joins the features and z: 10 more inputs into fc_mu, fc_logvar and the decoder's fc
    plain = VAE(VAEConfig())
    assert cvae.fc_mu.in_features == plain.fc_mu.in_features + 10
    assert cvae.decoder.fc.in_features == plain.decoder.fc.in_features + 10
    with torch.inference_mode():  # an unconditional model ignores labels
        assert torch.equal(plain.eval().decode(z, zeros), plain.decode(z))


@pytest.mark.parametrize("conditional", [False, True])
def test_the_training_step_traces_under_torch_compile_with_any_batch_size(conditional):
    # backend="eager" runs dynamo's tracing (what --compile needs) without compiling kernels: seconds on a CPU
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = VAE(VAEConfig(conditional=conditional))
    compiled = torch.compile(model, backend="eager", dynamic=True, fullgraph=True)
    for n in (5, 7):  # two batch sizes: the second runs the graph traced with a symbolic size
        x, y = torch.rand(n, 1, 28, 28), torch.arange(n) % 10
        out = compiled(x, y)
        assert out.logits.shape == (n, 1, 28, 28) and out.z.shape == (n, 2)
