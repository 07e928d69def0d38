"""The pure-torch half of training: the loss, the learning-rate schedule and one optimisation step.

Loss, per sample, averaged with per-sample weights:
  - BCE on the logits: the segmentation signal, stable under autocast (it runs in float32);
  - L1 on alpha: what the SAD/MAD metrics measure, and gentle on the teacher's soft edges;
  - gradient L1 (finite differences of predicted vs target alpha): edges where the target's are,
    neither blurred nor doubled. Skipped for coarse binary masks, whose edges are not trusted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gradient_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean |∇pred − ∇target| over horizontal and vertical differences, (B,)."""
    dx = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().flatten(1).mean(1) + dy.abs().flatten(1).mean(1)


def matting_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                 coarse: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted BCE + L1 + gradient loss; returns the total and its parts (weighted means) for logging."""
    logits, target = logits.float(), target.float()
    b = len(logits)
    weight = torch.ones(b, device=logits.device) if weight is None else weight.float()
    fine = torch.ones(b, device=logits.device) if coarse is None else 1.0 - coarse.float()
    pred = torch.sigmoid(logits)
    parts = {
        "bce": F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1),
        "l1": (pred - target).abs().flatten(1).mean(1),
        "grad": gradient_l1(pred, target) * fine,
    }
    norm = weight.sum().clamp_min(1e-6)
    per_sample = sum(parts.values())
    total = (per_sample * weight).sum() / norm
    return total, {k: float((v.detach() * weight).sum() / norm) for k, v in parts.items()}


def warmup_cosine(step: int, total: int, warmup: int = 100, floor: float = 0.05,
                  time_progress: float = 0.0) -> float:
    """LR multiplier: linear warm-up, then cosine decay to `floor` at `total` steps.

    `time_progress` (elapsed / time budget) decays it too: the schedule follows whichever budget
    runs out first, so a run stopped by --max-minutes still ends at the floor, not at a high rate
    (a step count guessed for an unmeasured machine is usually wrong by 2× or more).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """One model, its optimizer and (on CUDA) mixed precision: autocast FP16 + a GradScaler."""

    def __init__(self, net: nn.Module, *, lr: float, weight_decay: float, total_steps: int, device: str,
                 amp: bool):
        if amp and device != "cuda":
            raise ValueError("mixed precision (amp) needs --device cuda; CPU training runs in float32")
        self.device, self.amp, self.total_steps, self.base_lr = device, amp, total_steps, lr
        self.warmup, self.steps_done = min(100, max(1, total_steps // 10)), 0
        if device == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed training shapes: pick the fastest kernels once
        self.net = net.to(device, memory_format=torch.channels_last) if device == "cuda" else net.to(device)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step(self, x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor,
             coarse: torch.Tensor, time_progress: float = 0.0) -> dict[str, float]:
        """One optimisation step; `time_progress` (elapsed / time budget, 0 without one) decays the LR too."""
        lr = self.base_lr * warmup_cosine(self.steps_done, self.total_steps, self.warmup,
                                          time_progress=time_progress)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.net.train()
        x = x.to(self.device, non_blocking=True)
        if self.device == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        alpha, weight, coarse = (t.to(self.device, non_blocking=True) for t in (alpha, weight, coarse))
        with torch.autocast(self.device, dtype=torch.float16, enabled=self.amp):
            logits = self.net.forward_logits(x)
        loss, parts = matting_loss(logits, alpha, weight, coarse)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.steps_done += 1
        return {"loss": float(loss.detach()), **parts, "lr": lr}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        with torch.autocast(self.device, dtype=torch.float16, enabled=self.amp):
            return torch.sigmoid(self.net.forward_logits(x.to(self.device)).float())
