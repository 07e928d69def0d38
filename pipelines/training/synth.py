"""Training samples from photos and alphas: crops, flips, colour jitter, and composites.

A composite puts a matted foreground over another background: out = α·fg + (1−α)·bg, so its
alpha is known exactly (it is the foreground's). Backgrounds are other training photos or
plain/gradient fills, the product-shot case. Pure numpy/OpenCV on uint8 (H, W, 3) and (H, W).
"""

from __future__ import annotations

import cv2
import numpy as np

# The augmentation ranges, shared with the batched twin of these functions that runs on the training
# device (pipelines/training/device_samples.py).
CROP_SCALE = (0.55, 1.0)  # share of the photo's area a random crop keeps
CROP_ASPECT = (3 / 4, 4 / 3)
PASTE_SCALE = (0.45, 0.95)  # a composite's foreground box, as a share of the frame's side
JITTER = 0.25  # brightness, contrast and saturation: 1 ± JITTER × strength
HUE_DEGREES = 8.0
FOREGROUND_LEVEL = 128  # alpha ≥ this is the subject a composite cuts out
# A composite's background: another training photo (cropped to 30–100 % of its area, jittered)
# with this probability, else a plain or gradient fill (plain_background).
BACKGROUND_PHOTO_PROB = 0.6
BACKGROUND_CROP_SCALE = (0.3, 1.0)


def flip(rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return (rgb[:, ::-1], alpha[:, ::-1]) if rng.random() < 0.5 else (rgb, alpha)


def random_resized_crop(rgb: np.ndarray, alpha: np.ndarray, out: int, rng: np.random.Generator,
                        scale: tuple[float, float] = CROP_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """A random window of `scale` of the area (aspect 3/4…4/3), resized to out × out."""
    h, w = alpha.shape
    area = rng.uniform(*scale) * h * w
    aspect = np.exp(rng.uniform(*np.log(CROP_ASPECT)))
    ch, cw = min(h, int(round(np.sqrt(area / aspect)))), min(w, int(round(np.sqrt(area * aspect))))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    rgb, alpha = rgb[y:y + ch, x:x + cw], alpha[y:y + ch, x:x + cw]
    interp = cv2.INTER_AREA if ch >= out else cv2.INTER_LINEAR
    return (cv2.resize(np.ascontiguousarray(rgb), (out, out), interpolation=interp),
            cv2.resize(np.ascontiguousarray(alpha), (out, out), interpolation=interp))


# RGB → YIQ (NTSC): a hue shift is a rotation of the (I, Q) chroma plane around the luma axis.
RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ2RGB = np.linalg.inv(RGB2YIQ)
LUMA = RGB2YIQ[0]


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness, contrast, saturation (±25 %) and hue (±8°), scaled by `strength`.

    All four are linear in RGB, so they fold into one 3×4 matrix applied by cv2.transform
    (rounded, saturated to uint8): 0.1 ms on a 320² photo where per-step float arrays and an
    HSV round trip took 8.7 ms, the largest cost of a training sample.
    """
    brightness = 1 + strength * rng.uniform(-JITTER, JITTER)
    contrast = 1 + strength * rng.uniform(-JITTER, JITTER)
    saturation = 1 + strength * rng.uniform(-JITTER, JITTER)
    angle = np.deg2rad(strength * rng.uniform(-HUE_DEGREES, HUE_DEGREES))
    # Saturation blends each pixel with its grey; hue rotates chroma. Both keep grey pixels grey,
    # so the contrast offset (towards the image mean) passes through them unchanged.
    sat = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), LUMA)
    cos, sin = np.cos(angle), np.sin(angle)
    hue = YIQ2RGB @ np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]]) @ RGB2YIQ
    rgb = np.ascontiguousarray(rgb)  # a packed photo is a strided view of RGB + alpha
    mean = float(np.mean(cv2.mean(rgb)[:3]))
    matrix = np.hstack([hue @ sat * (contrast * brightness),
                        np.full((3, 1), (1 - contrast) * brightness * mean)])
    return cv2.transform(rgb, matrix)


def plain_background(out: int, rng: np.random.Generator) -> np.ndarray:
    """A flat colour (often near white or grey, as in catalogue shots) or a linear gradient."""
    def colour():
        if rng.random() < 0.4:
            return np.full(3, rng.uniform(200, 255), np.float32)  # studio white / light grey
        return rng.uniform(0, 255, 3).astype(np.float32)

    if rng.random() < 0.5:
        return np.broadcast_to(colour().astype(np.uint8), (out, out, 3)).copy()
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:out, 0:out].astype(np.float32) / max(out - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    bg = colour() * (1 - t) + colour() * t
    bg += rng.normal(0, 2.0, bg.shape).astype(np.float32)  # a little sensor noise: no banding shortcut
    return np.clip(bg, 0, 255).astype(np.uint8)


def foreground_box(alpha: np.ndarray, level: int = FOREGROUND_LEVEL) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) around alpha ≥ level, or None when the foreground is empty or tiny."""
    ys, xs = np.nonzero(alpha >= level)
    if len(ys) < 0.01 * alpha.size:
        return None
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def composite(fg: np.ndarray, fg_alpha: np.ndarray, bg: np.ndarray, rng: np.random.Generator,
              scale: tuple[float, float] = PASTE_SCALE) -> tuple[np.ndarray, np.ndarray] | None:
    """Paste the foreground, cut to its box, at a random scale and place on `bg` (out × out).

    Returns (image, alpha), or None when the foreground alpha is empty.
    """
    box = foreground_box(fg_alpha)
    if box is None:
        return None
    out = bg.shape[0]
    y0, y1, x0, x1 = box
    # Keep a soft margin around the box: the faint alpha just outside it belongs to the subject.
    pad = max(2, (y1 - y0 + x1 - x0) // 40)
    y0, x0 = max(0, y0 - pad), max(0, x0 - pad)
    y1, x1 = min(fg_alpha.shape[0], y1 + pad), min(fg_alpha.shape[1], x1 + pad)
    fg, fg_alpha = flip(fg[y0:y1, x0:x1], fg_alpha[y0:y1, x0:x1], rng)
    s = rng.uniform(*scale) * out / max(y1 - y0, x1 - x0)
    h, w = max(1, min(out, int(round((y1 - y0) * s)))), max(1, min(out, int(round((x1 - x0) * s))))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    fg = cv2.resize(np.ascontiguousarray(fg), (w, h), interpolation=interp)
    a = cv2.resize(np.ascontiguousarray(fg_alpha), (w, h), interpolation=interp)
    y, x = rng.integers(0, out - h + 1), rng.integers(0, out - w + 1)
    alpha = np.zeros((out, out), np.uint8)
    alpha[y:y + h, x:x + w] = a
    af = (a.astype(np.float32) / 255.0)[..., None]
    image = bg.copy()
    region = image[y:y + h, x:x + w].astype(np.float32)
    image[y:y + h, x:x + w] = np.clip(af * fg + (1 - af) * region + 0.5, 0, 255).astype(np.uint8)
    return image, alpha
