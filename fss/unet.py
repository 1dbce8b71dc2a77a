"""A 3D U-Net for tissue segmentation.

Each level: two 3x3x3 convolutions, each followed by instance normalisation and LeakyReLU;
max pooling down, transposed convolutions up, skip connections by concatenation (or by
addition, which halves the input channels of each decoder block), and a 1x1x1 convolution to
the class scores.

Example
-------
>>> import torch
>>> model = UNet(channels=(8, 16, 32))
>>> model(torch.zeros(1, 1, 16, 16, 16)).shape
torch.Size([1, 8, 16, 16, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fss.labels import N_CLASSES

SKIPS = ("concatenate", "add")


class ConvBlock(nn.Sequential):
    """Two (conv 3x3x3, instance norm, LeakyReLU) layers, optional dropout at the end."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            layers += [
                nn.Conv3d(channels_in, out_channels, kernel_size=3, padding=1),
                nn.InstanceNorm3d(out_channels, affine=True),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """3D U-Net.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for T2w).
    n_classes : int
        Output classes (8 for FeTA, background included).
    channels : sequence of int
        Feature channels per level, finest first; ``len(channels) - 1`` poolings, so
        input sides must be multiples of ``2 ** (len(channels) - 1)``.
    dropout : float
        Dropout probability after each decoder block (0: none).
    skip : {"concatenate", "add"}
        How a decoder level joins its upsampled features and the encoder's skip connection:
        concatenated (2 x channels into the decoder block) or added (channels into it: the
        first convolution of each decoder block does half the work).

    Shapes
    ------
    input ``(B, in_channels, D, H, W)`` -> class scores (logits) ``(B, n_classes, D, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = N_CLASSES,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: float = 0.0,
        skip: str = "concatenate",
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least two levels, got channels={tuple(channels)}")
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}")
        self.config = {"in_channels": in_channels, "n_classes": n_classes, "channels": list(channels), "dropout": dropout, "skip": skip}
        self.encoder = nn.ModuleList([ConvBlock(in_channels, channels[0])] + [ConvBlock(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList([nn.ConvTranspose3d(b, a, kernel_size=2, stride=2) for a, b in zip(channels[:-1], channels[1:])])
        self.concatenate = skip == "concatenate"
        self.decoder = nn.ModuleList([ConvBlock((2 if self.concatenate else 1) * a, a, dropout) for a in channels[:-1]])
        self.head = nn.Conv3d(channels[0], n_classes, kernel_size=1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.encoder) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or any(side % self.multiple for side in x.shape[2:]):
            raise ValueError(f"expected input (B, C, D, H, W) with sides multiple of {self.multiple}, got {tuple(x.shape)}")
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(len(self.decoder))):
            upsampled, skip = self.up[level](x), skips.pop()
            x = self.decoder[level](torch.cat([upsampled, skip], dim=1) if self.concatenate else upsampled + skip)
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
