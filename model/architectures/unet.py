"""The seed's U-Net (Ronneberger et al., 2015) as a matting network.

Encoder: double 3×3 conv → (BN) → ReLU blocks, max-pooled between levels, channels
`base_width · 2^i` (the reference design is base_width=64, depth=4: 64-128-256-512).
Decoder: bilinear upsampling to the skip's size, concatenation, a double conv block.
Head: a 1×1 conv and a sigmoid, so the output is alpha in [0, 1].

Laid out like segmentation_models_pytorch: `__init__` wires encoder → decoder → head and
`forward` is written once. Any H, W works: pooling uses ceil_mode and the decoder upsamples to
each skip's exact size, so odd sizes need no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """(3×3 conv → BN → ReLU) × 2; with norm="none" the convs carry a bias instead of BN."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "bn"):
        layers: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            layers.append(nn.Conv2d(c_in, out_ch, 3, padding=1, bias=norm == "none"))
            if norm == "bn":
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNetEncoder(nn.Module):
    """Returns one feature map per level, full resolution first, the bottleneck last."""

    def __init__(self, in_ch: int, channels: list[int], norm: str):
        super().__init__()
        self.blocks = nn.ModuleList(
            DoubleConv(in_ch if i == 0 else channels[i - 1], c, norm) for i, c in enumerate(channels))
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats


class UNetDecoder(nn.Module):
    """From the bottleneck up: upsample to the skip's size, concatenate, double conv."""

    def __init__(self, channels: list[int], norm: str):
        super().__init__()
        # Block i fuses level i+1 (upsampled) with skip i and outputs channels[i].
        self.blocks = nn.ModuleList(
            DoubleConv(channels[i + 1] + channels[i], channels[i], norm) for i in range(len(channels) - 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for i in reversed(range(len(self.blocks))):
            skip = feats[i]
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = self.blocks[i](torch.cat([x, skip], 1))
        return x


class UNet(nn.Module):
    def __init__(self, in_ch: int = 3, out_ch: int = 1, base_width: int = 64, depth: int = 4, norm: str = "bn"):
        super().__init__()
        if base_width < 1 or depth < 2:
            raise ValueError(f"UNet needs base_width ≥ 1 and depth ≥ 2, got base_width={base_width} depth={depth}")
        if norm not in ("bn", "none"):
            raise ValueError(f"norm must be 'bn' or 'none', got {norm!r}")
        channels = [base_width * 2**i for i in range(depth)]
        self.encoder = UNetEncoder(in_ch, channels, norm)
        self.decoder = UNetDecoder(channels, norm)
        self.head = nn.Conv2d(channels[0], out_ch, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output: training uses it for a numerically stable BCE under autocast."""
        return self.head(self.decoder(self.encoder(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))
