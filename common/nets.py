"""The networks both models share: the convolutional encoder trunk and the mirrored decoder.

Default (the original Keras project): four 3x3 convolutions, 32, 64, 64, 64 filters, strides 1, 2, 2, 1,
"same" padding, each Conv -> ReLU -> BatchNorm, then a dense bottleneck; the decoder mirrors it with
transposed convolutions and ends in one channel of logits (the Bernoulli loss uses them directly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from common.options import IntTuple, NumberRange, check_options, option

# Far above anything useful on 28 x 28 digits: a typo or a doctored checkpoint cannot ask for a network
# that does not fit in memory.
MAX_LATENT_DIM = 1024
MAX_FILTERS = 4096  # channels of one conv layer
MAX_LAYERS = 16
MAX_KERNEL = 31
MAX_STRIDE = 28  # one step across a whole MNIST image
MAX_IMAGE_SIZE = 1024  # (the data decides: MNIST is 28, checked when a checkpoint is loaded)
MAX_IMAGE_CHANNELS = 4
MAX_WEIGHTS = 100_000_000  # 400 MB in float32, Adam keeps two more copies; the defaults have ~0.2 M


@dataclass
class ConvNetConfig:
    """Architecture shared by the AE and the VAE. Every size in the networks derives from this."""

    latent_dim: int = option(2, "size of the code z", parse=NumberRange(int, 1, MAX_LATENT_DIM))
    image_channels: int = 1  # 1 for MNIST (not a flag: it follows from the data)
    image_size: int = 28  # height = width of the input (not a flag: it follows from the data)
    filters: tuple[int, ...] = option((32, 64, 64, 64), "encoder conv channels",
                                      parse=IntTuple(1, MAX_FILTERS, MAX_LAYERS))
    kernel_sizes: tuple[int, ...] = option((3, 3, 3, 3), "encoder conv kernels, odd so that \"same\" padding is "
                                                         "symmetric", parse=IntTuple(1, MAX_KERNEL, MAX_LAYERS))
    strides: tuple[int, ...] = option((1, 2, 2, 1), "encoder conv strides; 2 halves the feature map",
                                      parse=IntTuple(1, MAX_STRIDE, MAX_LAYERS))

    def __post_init__(self) -> None:
        check_options(self)  # types and ranges, as for the flags
        self.filters, self.kernel_sizes, self.strides = map(tuple, (self.filters, self.kernel_sizes, self.strides))
        if not (len(self.filters) == len(self.kernel_sizes) == len(self.strides) >= 1):
            raise ValueError("filters, kernel sizes and strides need the same number (>= 1) of entries, got "
                             f"{len(self.filters)}, {len(self.kernel_sizes)} and {len(self.strides)}")
        for name, value, high in (("image_channels", self.image_channels, MAX_IMAGE_CHANNELS),
                                  ("image_size", self.image_size, MAX_IMAGE_SIZE)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ValueError(f"{name} must be an integer from 1 to {high}, got {value!r}")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel sizes must be odd and positive, got {self.kernel_sizes}")
        if self.weight_bound() > MAX_WEIGHTS:
            raise ValueError(f"the network would have about {self.weight_bound():,} weights, more than "
                             f"{MAX_WEIGHTS:,}; use fewer filters or a smaller latent_dim")

    def weight_bound(self) -> int:
        """An upper bound on the weights of any model on this config: the convolutions, and three
        latent_dim x flat-features layers (the decoder's input and at most two encoder heads)."""
        channels = (self.image_channels, *self.filters)
        convs = sum(2 * (c_in * c_out * k * k + 3 * c_out)  # conv + BatchNorm, encoder and decoder
                    for c_in, c_out, k in zip(channels[:-1], channels[1:], self.kernel_sizes))
        flat = self.filters[-1] * self.feature_sizes()[-1] ** 2
        return convs + 3 * (self.latent_dim + 1) * flat

    def feature_sizes(self) -> list[int]:
        """Spatial size after each encoder conv: "same" padding gives ceil(size / stride)."""
        sizes = [self.image_size]
        for s in self.strides:
            sizes.append(-(-sizes[-1] // s))
        return sizes


def _conv_block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.BatchNorm2d(channels))


class ConvEncoder(nn.Module):
    """x (N, C, H, W) -> flat features (N, filters[-1] * h * w)."""

    def __init__(self, config: ConvNetConfig):
        super().__init__()
        channels = (config.image_channels, *config.filters)
        self.convs = nn.Sequential(*(
            _conv_block(nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2), c_out)
            for c_in, c_out, k, s in zip(channels[:-1], channels[1:], config.kernel_sizes, config.strides)
        ))
        size = config.feature_sizes()[-1]
        self.out_features = config.filters[-1] * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).flatten(1)


class ConvDecoder(nn.Module):
    """z (N, latent_dim + extra_inputs) -> logits (N, C, H, W), mirroring ConvEncoder layer by layer.
    `extra_inputs`: inputs joined to z, e.g. a one-hot label for a conditional model."""

    def __init__(self, config: ConvNetConfig, extra_inputs: int = 0):
        super().__init__()
        sizes = config.feature_sizes()  # encoder sizes, input first
        self.feature_shape = (config.filters[-1], sizes[-1], sizes[-1])
        self.fc = nn.Linear(config.latent_dim + extra_inputs, config.filters[-1] * sizes[-1] ** 2)
        # Walk the encoder backwards, each layer mapping an encoder layer's output channels and size back
        # to its input's; output_padding restores the exact size where ceil(size / stride) lost it.
        channels = (config.image_channels, *config.filters)
        layers: list[nn.Module] = []
        for i in reversed(range(len(config.filters))):
            k, s = config.kernel_sizes[i], config.strides[i]
            size_in, size_out = sizes[i + 1], sizes[i]
            output_padding = size_out - ((size_in - 1) * s + 1)  # in [0, s - 1] by construction
            conv = nn.ConvTranspose2d(channels[i + 1], channels[i], k, stride=s, padding=k // 2,
                                      output_padding=output_padding)
            layers.append(conv if i == 0 else _conv_block(conv, channels[i]))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, *self.feature_shape)  # (N, C_last, h, w)
        return self.deconvs(h)
