"""Where training photos come from: each folder given to `matting train` is a source.

Sources are what the presets need in different amounts (people for `id-photo` and `avatar`,
products for `ecommerce`), so a source can be drawn more or less often (`--source-weights`), and
the held-out error is reported per source, so the data's gaps show.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def source_labels(dirs: Sequence[str | os.PathLike]) -> dict[Path, str]:
    """Each folder's label: its path below the folders' common parent (`ccp_fullbody/image`, `clothing_cc0`)."""
    resolved = [Path(d).resolve() for d in dirs]
    if len(resolved) == 1:
        return {resolved[0]: resolved[0].name}
    common = Path(os.path.commonpath(resolved))
    return {d: (d.relative_to(common).as_posix() if d != common else d.name) for d in resolved}


def parse_source_weights(text: str | Sequence[str]) -> dict[str, float]:
    """'ccp_people=1.5,ccp_fullbody/image=1.5' → {label: weight}; a weight is ≥ 0 (0 leaves a source out)."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in parts)):
        name, eq, value = (x.strip() for x in part.rpartition("="))
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not eq or not name or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"--source-weights: {part!r} is not SOURCE=WEIGHT with a weight ≥ 0")
        if name in out:
            raise ValueError(f"--source-weights names {name!r} twice")
        out[name] = weight
    return out


def check_weights(weights: dict[str, float], labels: Sequence[str]) -> None:
    unknown = sorted(set(weights) - set(labels))
    if unknown:
        raise ValueError(f"--source-weights names {', '.join(unknown)}, which is no source of this run; "
                         f"sources: {', '.join(sorted(set(labels)))}")


def sampling_probs(labels: Sequence[str], weights: dict[str, float]) -> np.ndarray:
    """Per photo, the probability of being drawn: its source's weight (default 1), normalised."""
    check_weights(weights, labels)
    w = np.array([weights.get(label, 1.0) for label in labels], np.float64)
    if not w.sum() > 0:
        raise ValueError("--source-weights leaves no photo to draw: give some source a weight > 0")
    return w / w.sum()


def shares(labels: Sequence[str], probs: np.ndarray) -> dict[str, float]:
    """Each source's share of the draws."""
    out: dict[str, float] = {}
    for label, p in zip(labels, probs):
        out[label] = out.get(label, 0.0) + float(p)
    return out


def held_out(labels: Sequence[str], val_images: int, every: int = 10) -> list[int]:
    """Indices of the held-out photos: every `every`-th photo of each source (in its folder's order),
    at most ceil(val_images / sources) per source, so that every source is measured and none is
    measured on more than its share. Which photos a source holds out does not depend on the other
    folders of the run."""
    counts = Counter(labels)
    if val_images <= 0 or not counts:
        return []
    cap = math.ceil(val_images / len(counts))
    seen: Counter = Counter()
    taken: Counter = Counter()
    out = []
    for i, label in enumerate(labels):
        k = seen[label]
        seen[label] += 1
        # A source with fewer than `every` photos keeps them all for training.
        if k % every == 0 and counts[label] >= every and taken[label] < cap:
            out.append(i)
            taken[label] += 1
    return out
