"""Training samples made on the training device, a whole batch per call: DistillDataset.sample's
augmentations as batched torch ops.

On the H100 lease the CPU data loaders were the limit (9–17 ms of one core per sample, 400–800
images/s while the GPU could take several times that). Here the packed photos (RGB + teacher alpha,
uint8; pack_cache, pack_pairs) are uploaded to the device once, and each batch is drawn, cropped,
flipped, jittered and composited there.

A crop with its flip, a background's crop and a composite's scaled and placed foreground are each
one separable resampling: per sample and axis an (out × S) weight matrix, area averaging where it
shrinks (cv2.INTER_AREA's weights) and linear interpolation where it enlarges (cv2.INTER_LINEAR's,
its border replicated), applied by two batched matrix products. The rows of a pasted foreground's
matrices outside its place are zero, so its alpha is zero there and α·fg + (1−α)·bg shows the
background exactly. Each stage rounds to whole levels where the CPU path makes uint8 images.

The same distributions as DistillDataset.sample (the same probabilities and synth's ranges), not the
same draws: the random numbers come from a torch generator seeded by (seed, step), so a run is
reproducible on one device and can resume at any step. Two small differences: the colour jitter of a
composite's foreground is applied after its resize (the CPU path jitters the whole photo first; the
map is affine, so only pixels it clips at 0 or 255 differ), and area or linear is chosen per axis
(the CPU path chooses by the crop's height for both).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from model.preprocess import normalize_batch_torch
from pipelines.training import synth


# The uniforms each sample draws, by name and count, whatever its kind: every batch takes one
# (n, _WIDTH) table, so the stream depends only on (seed, step) and n.
_COLUMNS = {"pair": 1, "pair_index": 1, "composite": 1, "crop": 4, "flip": 1, "jitter": 4,
            "fg_jitter": 4, "fg_flip": 1, "fg_scale": 1, "fg_place": 2, "comp_jitter": 4,
            "bg_photo": 1, "bg_index": 1, "bg_crop": 4, "bg_jitter": 4,
            "plain_flat": 1, "colour_a": 5, "colour_b": 5, "gradient_angle": 1}
_OFFSETS = dict(zip(_COLUMNS, np.cumsum([0, *_COLUMNS.values()])[:-1].tolist()))
_WIDTH = sum(_COLUMNS.values())


def _cols(table: torch.Tensor, name: str) -> torch.Tensor:
    """The uniforms named `name`: (k,) for one column, (k, c) for several."""
    start, count = _OFFSETS[name], _COLUMNS[name]
    return table[:, start] if count == 1 else table[:, start:start + count]


def _index(u: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """Integers in [0, n) from uniforms in [0, 1), as rng.integers(n)."""
    return torch.minimum((u * n).long(), torch.as_tensor(n, device=u.device) - 1)


def axis_weights(src_start: torch.Tensor, src_len: torch.Tensor, dst_start: torch.Tensor, dst_len: torch.Tensor,
                 flip: torch.Tensor, out: int, size: int) -> torch.Tensor:
    """(k, out, size) weights: source pixels [src_start, +src_len) resized onto output pixels [dst_start, +dst_len).

    Rows outside the destination are zero; `flip` mirrors the source within the destination.
    Shrinking averages by area (each output pixel the mean of the source span it covers); enlarging
    interpolates linearly between the two nearest source pixels, clamped to the window.
    """
    dev = src_start.device
    i = torch.arange(out, device=dev, dtype=torch.float32)[None, :, None]
    j = torch.arange(size, device=dev, dtype=torch.float32)[None, None, :]
    s0, n, d0, m = (v.to(torch.float32)[:, None, None] for v in (src_start, src_len, dst_start, dst_len))
    local = i - d0
    inside = (local >= 0) & (local < m)
    local = torch.where(flip[:, None, None], m - 1 - local, local)
    scale = n / m
    lo = s0 + local * scale
    area = (torch.minimum(lo + scale, j + 1) - torch.maximum(lo, j)).clamp_min(0) / scale
    centre = torch.clamp(s0 + (local + 0.5) * scale - 0.5, s0, s0 + n - 1)
    tent = (1 - (centre - j).abs()).clamp_min(0)
    return torch.where(scale >= 1, area, tent) * inside


def resample(src: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """(k, S, S, C) uint8 photos through (k, out, S) row and column weights → (k, C, out, out) float, rounded."""
    k, size, _, c = src.shape
    out = wy.shape[1]
    rows = torch.bmm(wy, src.to(torch.float32).reshape(k, size, size * c))  # (k, out, S·C)
    rows = rows.reshape(k, out, size, c).permute(0, 3, 1, 2)  # (k, C, out, S)
    return (rows @ wx.transpose(1, 2)[:, None]).round_()


def crop_windows(u: torch.Tensor, size: int, scale: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """(y, height, x, width) of random windows of a size² photo, as synth.random_resized_crop draws them."""
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * size * size
    lo, hi = (math.log(a) for a in synth.CROP_ASPECT)
    aspect = torch.exp(lo + (hi - lo) * u[:, 1])
    ch = torch.sqrt(area / aspect).round().long().clamp(1, size)
    cw = torch.sqrt(area * aspect).round().long().clamp(1, size)
    return _index(u[:, 2], size - ch + 1), ch, _index(u[:, 3], size - cw + 1), cw


def foreground_boxes(alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(y0, y1, x0, x1, ok) around alpha ≥ synth.FOREGROUND_LEVEL of (k, S, S) uint8 alphas, as synth.foreground_box;
    ok is False where that subject covers under 1 % of the photo."""
    size = alpha.shape[-1]
    mask = alpha >= synth.FOREGROUND_LEVEL
    ok = mask.sum((1, 2)) >= 0.01 * mask[0].numel()
    idx = torch.arange(size, device=alpha.device)
    rows, cols = mask.any(2), mask.any(1)
    y0 = torch.where(rows, idx, size).amin(1)
    y1 = torch.where(rows, idx + 1, 0).amax(1)
    x0 = torch.where(cols, idx, size).amin(1)
    x1 = torch.where(cols, idx + 1, 0).amax(1)
    return y0, y1, x0, x1, ok


_RGB2YIQ = torch.tensor(synth.RGB2YIQ, dtype=torch.float32)
_YIQ2RGB = torch.tensor(synth.YIQ2RGB, dtype=torch.float32)
_TO_GREY = torch.outer(torch.ones(3, dtype=torch.float64), torch.tensor(synth.LUMA)).to(torch.float32)


def color_jitter(rgb: torch.Tensor, u: torch.Tensor, strength: float, mean: torch.Tensor | None = None) -> torch.Tensor:
    """synth.color_jitter for (k, 3, H, W) float images of whole levels: per image one 3×4 matrix from
    four uniforms (k, 4); the contrast pivots on `mean` (default: the image's own mean level)."""
    dev = rgb.device
    d = strength * (2 * u - 1)
    brightness, contrast, saturation = (1 + synth.JITTER * d[:, i] for i in range(3))
    angle = torch.deg2rad(synth.HUE_DEGREES * d[:, 3])
    eye = torch.eye(3, device=dev)
    sat = saturation[:, None, None] * eye + (1 - saturation)[:, None, None] * _TO_GREY.to(dev)
    rot = eye.repeat(len(u), 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    hue = _YIQ2RGB.to(dev) @ rot @ _RGB2YIQ.to(dev)
    matrix = hue @ sat * (contrast * brightness)[:, None, None]
    if mean is None:
        mean = rgb.mean((1, 2, 3))
    offset = (1 - contrast) * brightness * mean
    out = torch.einsum("kij,kjhw->kihw", matrix, rgb) + offset[:, None, None, None]
    return out.round_().clamp_(0, 255)


def plain_backgrounds(u: torch.Tensor, out: int, generator: torch.Generator) -> torch.Tensor:
    """synth.plain_background for k images (k, 3, out, out): half flat colours, half linear gradients
    with a little noise; each colour near-white grey (40 %) or any colour."""
    dev = u.device

    def colour(c: torch.Tensor) -> torch.Tensor:
        grey = (200 + 55 * c[:, 1:2]).expand(-1, 3)
        return torch.where(c[:, :1] < 0.4, grey, 255 * c[:, 2:5])[:, :, None, None]

    a, b = colour(_cols(u, "colour_a")), colour(_cols(u, "colour_b"))
    angle = 2 * math.pi * _cols(u, "gradient_angle")[:, None, None, None]
    ramp = torch.arange(out, device=dev, dtype=torch.float32) / max(out - 1, 1)
    t = (0.5 + (ramp[None, :] - 0.5) * torch.cos(angle) + (ramp[:, None] - 0.5) * torch.sin(angle)).clamp(0, 1)
    noise = torch.randn((len(u), 3, out, out), generator=generator, device=dev)
    gradient = a * (1 - t) + b * t + 2.0 * noise
    flat = _cols(u, "plain_flat")[:, None, None, None] < 0.5
    return torch.where(flat, a.floor(), gradient.clamp(0, 255).floor())  # astype(uint8) truncates


def _upload(array: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    if array is None or len(array) == 0:
        return None
    if array.ndim != 4 or array.shape[1] != array.shape[2] or array.shape[3] != 4 or array.dtype != np.uint8:
        raise ValueError(f"expected packed photos (N, S, S, 4) uint8, got {array.shape} {array.dtype}")
    if device.type == "cpu":
        with warnings.catch_warnings():  # the memory-mapped pack is read-only, and only ever read here
            warnings.filterwarnings("ignore", message=".*not writable.*")
            return torch.from_numpy(array)
    on_device = torch.empty(array.shape, dtype=torch.uint8, device=device)
    for i in range(0, len(array), 256):  # 100 MB at a time at 320²: host memory stays small
        on_device[i:i + 256].copy_(torch.from_numpy(np.array(array[i:i + 256])))
    return on_device


class DeviceSampler:
    """Whole training batches made on `device` from packed photos (+ packed pairs) held there.

    photos: (N, S, S, RGB + teacher alpha) uint8 (PackedPhotos.array()), or None with pairs only;
    pairs: (M, S, S, RGB + alpha) uint8 (pack_pairs) with pair_coarse (M,) bool;
    photo_probs: (N,) the chance of each photo as a sample's photo (None: uniform); backgrounds are
    drawn uniformly, as DistillDataset draws them. `jitter` scales every colour jitter (0: none) and
    `background_photo_prob` is the share of photo backgrounds, both for tests.
    """

    def __init__(self, photos: np.ndarray | None, *, out: int, preprocess, device: str = "cpu", seed: int = 0,
                 composite_prob: float = 0.5, pairs: np.ndarray | None = None, pair_coarse: np.ndarray | None = None,
                 pair_weight: float = 1.0, pair_prob: float | None = None, photo_probs: np.ndarray | None = None,
                 jitter: float = 1.0, background_photo_prob: float = synth.BACKGROUND_PHOTO_PROB):
        self.device = torch.device(device)
        self.out, self.preprocess, self.seed = out, preprocess, seed
        self.composite_prob, self.pair_weight, self.jitter = composite_prob, pair_weight, jitter
        self.photos, self.pairs = _upload(photos, self.device), _upload(pairs, self.device)
        self.n_photos = 0 if self.photos is None else len(self.photos)
        self.n_pairs = 0 if self.pairs is None else len(self.pairs)
        if not self.n_photos and not self.n_pairs:
            raise ValueError("no training images: no packed photos and no packed pairs")
        sizes = {t.shape[1] for t in (self.photos, self.pairs) if t is not None}
        if len(sizes) != 1:
            raise ValueError(f"packed photos and pairs must have one size, got {sorted(sizes)}")
        self.size = sizes.pop()
        if self.n_pairs:
            coarse = np.zeros(self.n_pairs, bool) if pair_coarse is None else np.asarray(pair_coarse, bool)
            if coarse.shape != (self.n_pairs,):
                raise ValueError(f"pair_coarse must have one flag per pair ({self.n_pairs}), got {coarse.shape}")
            self.pair_coarse = torch.as_tensor(coarse, device=self.device).float()
        # As DistillDataset: pairs by their share of all photos unless pair_prob says otherwise.
        self.pair_share = self.n_pairs / (self.n_pairs + self.n_photos) if pair_prob is None else pair_prob
        if not self.n_photos or not self.n_pairs:
            self.pair_share = 0.0 if self.n_photos else 1.0
        self.background_photo_prob = background_photo_prob if self.n_photos else 0.0
        self.photo_probs = None
        if self.n_photos:
            probs = np.ones(self.n_photos) if photo_probs is None else np.asarray(photo_probs, np.float64)
            if probs.shape != (self.n_photos,) or not np.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
                raise ValueError(f"photo_probs must be {self.n_photos} finite weights ≥ 0 with a positive sum")
            self.photo_probs = torch.as_tensor(probs / probs.sum(), dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.next_step = 0

    def _seed(self, step: int) -> None:
        # One stream per (seed, step): batch `step` is the same whether or not the steps before it ran.
        self.generator.manual_seed(int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0]))

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """(k, S, S, 4) uint8 of indices into photos then pairs (N + i is pair i)."""
        if not self.n_pairs:
            return self.photos[idx]
        if not self.n_photos:
            return self.pairs[idx - self.n_photos]
        is_pair = idx >= self.n_photos
        out = torch.empty((len(idx), self.size, self.size, 4), dtype=torch.uint8, device=self.device)
        out[~is_pair] = self.photos[idx[~is_pair]]
        out[is_pair] = self.pairs[idx[is_pair] - self.n_photos]
        return out

    def batch(self, n: int, step: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `step` (default: the one after the last drawn) of n samples: x (n, 3, out, out) normalised as the
        spec says (channels-last on CUDA), alpha (n, 1, out, out) in [0, 1], weight (n,), coarse (n,); all
        float32 on the device."""
        step = self.next_step if step is None else step
        self.next_step = step + 1
        self._seed(step)
        g, dev, out = self.generator, self.device, self.out
        u = torch.rand((n, _WIDTH), generator=g, device=dev)
        is_pair = _cols(u, "pair") < self.pair_share
        pair_idx = _index(_cols(u, "pair_index"), max(self.n_pairs, 1))
        photo_idx = (torch.multinomial(self.photo_probs, n, replacement=True, generator=g) if self.n_photos
                     else torch.zeros(n, dtype=torch.long, device=dev))
        image = torch.empty((n, 3, out, out), device=dev)
        alpha = torch.empty((n, 1, out, out), device=dev)

        composite = ~is_pair & (_cols(u, "composite") < self.composite_prob)
        rows = composite.nonzero()[:, 0]
        if len(rows):
            made, ok = self._composites(u[rows], photo_idx[rows])
            composite[rows[~ok]] = False  # no subject to cut out: a plain crop instead, as on the CPU
            image[rows[ok]], alpha[rows[ok]] = made[0][ok], made[1][ok]
        rows = (~composite).nonzero()[:, 0]
        if len(rows):
            src = torch.where(is_pair[rows], self.n_photos + pair_idx[rows], photo_idx[rows])
            image[rows], alpha[rows] = self._crops(u[rows], src)

        weight = torch.where(is_pair, torch.tensor(float(self.pair_weight), device=dev), torch.ones((), device=dev))
        coarse = self.pair_coarse[pair_idx] * is_pair if self.n_pairs else torch.zeros(n, device=dev)
        x = normalize_batch_torch(image.to(torch.uint8).permute(0, 2, 3, 1), self.preprocess)
        if dev.type != "cuda":
            x = x.contiguous()  # the CPU student runs NCHW
        return x, alpha / 255, weight, coarse

    def batches(self, n: int, start: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches start, start + 1, …, without end."""
        self.next_step = start
        while True:
            yield self.batch(n)

    def _crops(self, u: torch.Tensor, src_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A photo's (or pair's) random crop, flip and full-strength jitter: image (k, 3, ·), alpha (k, 1, ·)."""
        src = self._gather(src_idx)
        y, ch, x, cw = crop_windows(_cols(u, "crop"), self.size, synth.CROP_SCALE)
        zero, full = torch.zeros_like(y), torch.full_like(y, self.out)
        flip = _cols(u, "flip") < 0.5
        made = resample(src, axis_weights(y, ch, zero, full, torch.zeros_like(flip), self.out, self.size),
                        axis_weights(x, cw, zero, full, flip, self.out, self.size))
        return color_jitter(made[:, :3], _cols(u, "jitter"), self.jitter), made[:, 3:]

    def _backgrounds(self, u: torch.Tensor) -> torch.Tensor:
        """(k, 3, out, out): another photo's crop, jittered (synth.BACKGROUND_PHOTO_PROB), else a plain or gradient fill."""
        bg = torch.empty((len(u), 3, self.out, self.out), device=self.device)
        photo = _cols(u, "bg_photo") < self.background_photo_prob
        rows = photo.nonzero()[:, 0]
        if len(rows):
            v = u[rows]
            src = self.photos[_index(_cols(v, "bg_index"), self.n_photos)]
            y, ch, x, cw = crop_windows(_cols(v, "bg_crop"), self.size, synth.BACKGROUND_CROP_SCALE)
            zero, full, no = torch.zeros_like(y), torch.full_like(y, self.out), torch.zeros_like(rows, dtype=torch.bool)
            made = resample(src, axis_weights(y, ch, zero, full, no, self.out, self.size),
                            axis_weights(x, cw, zero, full, no, self.out, self.size))
            bg[rows] = color_jitter(made[:, :3], _cols(v, "bg_jitter"), self.jitter)
        rows = (~photo).nonzero()[:, 0]
        if len(rows):
            bg[rows] = plain_backgrounds(u[rows], self.out, self.generator)
        return bg

    def _composites(self, u: torch.Tensor, photo_idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Teacher-matted foregrounds over new backgrounds, as synth.composite: ((image, alpha), ok) where ok
        is False for photos whose subject is under 1 % of the frame (their rows hold nothing useful)."""
        out, size = self.out, self.size
        src = self.photos[photo_idx]
        y0, y1, x0, x1, ok = foreground_boxes(src[..., 3])
        # A soft margin around the box: the faint alpha just outside it belongs to the subject.
        pad = torch.clamp((y1 - y0 + x1 - x0) // 40, min=2)
        y0, x0 = (y0 - pad).clamp_min(0), (x0 - pad).clamp_min(0)
        y1, x1 = (y1 + pad).clamp_max(size), (x1 + pad).clamp_max(size)
        bh, bw = (y1 - y0).clamp_min(1), (x1 - x0).clamp_min(1)  # ≥ 1 keeps the rows that are not ok finite
        lo, hi = synth.PASTE_SCALE
        s = (lo + (hi - lo) * _cols(u, "fg_scale")) * out / torch.maximum(bh, bw)
        h = (bh * s).round().long().clamp(1, out)
        w = (bw * s).round().long().clamp(1, out)
        place = _cols(u, "fg_place")
        py, px = _index(place[:, 0], out - h + 1), _index(place[:, 1], out - w + 1)
        flip = _cols(u, "fg_flip") < 0.5
        fg = resample(src, axis_weights(y0, bh, py, h, torch.zeros_like(flip), out, size),
                      axis_weights(x0, bw, px, w, flip, out, size))
        # The CPU path jitters the whole photo before cutting it out: its contrast pivots on the photo's mean.
        photo_mean = src[..., :3].to(torch.float32).mean((1, 2, 3))
        fg_rgb = color_jitter(fg[:, :3], _cols(u, "fg_jitter"), 0.5 * self.jitter, photo_mean)
        a = fg[:, 3:] / 255
        image = (a * fg_rgb + (1 - a) * self._backgrounds(u)).round_()
        return (color_jitter(image, _cols(u, "comp_jitter"), 0.5 * self.jitter), fg[:, 3:]), ok
