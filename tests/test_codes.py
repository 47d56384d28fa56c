"""common/codes.py: batched encoding and decoding, and the fast inference layout."""

import torch

from common.checkpoint import for_inference
from common.latents import decode_codes
from variational_autoencoder.model import VAE, VAEConfig


def test_channels_last_inference_matches_the_plain_layout():
    torch.manual_seed(0)
    model = VAE(VAEConfig()).eval()
    z = torch.randn(8, 2)
    expected = decode_codes(model, z)
    fast = for_inference(model)
    assert fast.decoder.fc.weight.is_contiguous()  # dense layers are unaffected
    assert next(m for m in fast.modules() if isinstance(m, torch.nn.ConvTranspose2d)).weight.is_contiguous(
        memory_format=torch.channels_last)
    assert torch.allclose(decode_codes(fast, z), expected, atol=1e-5)
