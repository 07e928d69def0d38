"""U²-Net family (Qin et al., 2020): nested residual U-blocks (RSU) in an outer U.

The layout follows the reference implementation so weights exported from it map one to one.
`norm="bn"` gives the trainable form (conv → BN → ReLU); `norm="none"` is the deploy form whose
convolutions carry BatchNorm folded into their bias, as in the ONNX files rembg ships.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvNormAct(nn.Module):
    """3×3 dilated conv → (BN) → ReLU: the building block of every RSU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1, norm: str = "bn"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=norm == "none")
        self.norm = nn.BatchNorm2d(out_ch) if norm == "bn" else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def upsample_like(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(src, size=like.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of `depth` levels.

    With `dilated=False` (RSU-7…RSU-4) the inner levels downsample by max-pooling and the
    bottom level uses dilation 2. With `dilated=True` (RSU-4F) resolution is kept and the
    levels use dilations 1, 2, 4, 8 instead.
    """

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool = False, norm: str = "bn"):
        super().__init__()
        self.dilated = dilated
        enc_dil = [2**i for i in range(depth)] if dilated else [1] * (depth - 1) + [2]
        self.conv_in = ConvNormAct(in_ch, out_ch, 1, norm)
        self.encoder = nn.ModuleList(
            ConvNormAct(out_ch if i == 0 else mid_ch, mid_ch, enc_dil[i], norm) for i in range(depth)
        )
        # Decoder level i fuses level i+1 (upsampled) with the skip from encoder level i.
        self.decoder = nn.ModuleList(
            ConvNormAct(mid_ch * 2, out_ch if i == 0 else mid_ch, enc_dil[i] if dilated else 1, norm)
            for i in range(depth - 1)
        )
        self.pool = nn.Identity() if dilated else nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self.conv_in(x)
        skips = []
        h = x_in
        last = len(self.encoder) - 1
        for i, conv in enumerate(self.encoder):
            # The bottom two levels share a resolution: no pooling before the last one.
            if 0 < i < last:
                h = self.pool(h)
            h = conv(h)
            skips.append(h)
        h = skips.pop()
        for conv in reversed(self.decoder):
            skip = skips.pop()
            if h.shape[2:] != skip.shape[2:]:
                h = upsample_like(h, skip)
            h = conv(torch.cat([h, skip], 1))
        return h + x_in


# (depth, dilated) per stage, encoder top to bottom; the decoder mirrors all but the bottom one.
U2NET_STAGES = [(7, False), (6, False), (5, False), (4, False), (4, True), (4, True)]


def stage_channels(mid_ch: int, width: int, encoder_channels, decoder_channels):
    """(mid, out) channels of every encoder stage (6) and decoder stage (5), top to bottom.

    U²-Netp uses one width everywhere (`mid_ch`, `width`); the full U²-Net widens with depth
    (encoder 64…512 out, 32…256 mid), so its spec lists them. Explicit lists win over the scalars.
    """
    n = len(U2NET_STAGES)
    enc = [tuple(c) for c in encoder_channels] if encoder_channels else [(mid_ch, width)] * n
    dec = [tuple(c) for c in decoder_channels] if decoder_channels else [(mid_ch, width)] * (n - 1)
    if len(enc) != n or len(dec) != n - 1 or any(len(c) != 2 or min(c) < 1 for c in enc + dec):
        raise ValueError(f"encoder_channels needs {n} and decoder_channels {n - 1} (mid, out) pairs of positive "
                         f"ints, got {encoder_channels} and {decoder_channels}")
    return enc, dec


class U2Net(nn.Module):
    """Outer U of RSU stages, six side outputs fused by a 1×1 conv; returns probabilities.

    `forward` returns the fused map (B, 1, H, W) in [0, 1]; `forward_all` also returns the side
    outputs, which deep supervision needs in training. Channel widths: see `stage_channels`.
    """

    def __init__(self, in_ch: int = 3, mid_ch: int = 16, width: int = 64, out_ch: int = 1, norm: str = "bn",
                 encoder_channels: list | None = None, decoder_channels: list | None = None):
        super().__init__()
        n = len(U2NET_STAGES)
        enc, dec = stage_channels(mid_ch, width, encoder_channels, decoder_channels)
        enc_in = [in_ch] + [out for _, out in enc[:-1]]
        self.encoder = nn.ModuleList(
            RSU(d, enc_in[i], enc[i][0], enc[i][1], dilated, norm) for i, (d, dilated) in enumerate(U2NET_STAGES)
        )
        # Decoder stage i fuses the stage below it (decoder i+1, or the bottom encoder stage) with encoder stage i.
        below = [out for _, out in dec[1:]] + [enc[-1][1]]
        self.decoder = nn.ModuleList(
            RSU(d, below[i] + enc[i][1], dec[i][0], dec[i][1], dilated, norm)
            for i, (d, dilated) in enumerate(U2NET_STAGES[:-1])
        )
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        side_in = [out for _, out in dec] + [enc[-1][1]]
        self.side = nn.ModuleList(nn.Conv2d(c, out_ch, 3, padding=1) for c in side_in)
        self.fuse = nn.Conv2d(n * out_ch, out_ch, 1)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        h = x
        for i, stage in enumerate(self.encoder):
            if i > 0:
                h = self.pool(h)
            h = stage(h)
            feats.append(h)
        dec = [feats.pop()]
        h = dec[0]
        for stage in reversed(self.decoder):
            skip = feats.pop()
            h = stage(torch.cat([upsample_like(h, skip), skip], 1))
            dec.append(h)
        dec.reverse()  # dec[0] is the full-resolution decoder output, dec[-1] the bottom stage
        sides = [self.side[0](dec[0])]
        sides += [upsample_like(self.side[i](dec[i]), sides[0]) for i in range(1, len(dec))]
        fused = self.fuse(torch.cat(sides, 1))
        return [torch.sigmoid(t) for t in [fused, *sides]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]
