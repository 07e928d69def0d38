"""The loss curves of `matting train` runs: training loss and held-out MAE against the teacher, by minute.

    python bench/plot_training.py RUN.train.csv [RUN.train.csv ...] --out curves.png|curves.svg

One line per run (named by its file), two panels: the training loss (each log row's mean) and the
held-out MAE vs the teacher (each checkpoint row), both against elapsed minutes, so runs of
different sizes compare by what a training minute buys. A .png needs matplotlib (the GPU image has
it; our dependencies do not); a .svg is drawn here without it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def read_run(path: Path) -> dict[str, list[tuple[float, float]]]:
    loss, mae = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            minute = float(row["elapsed_s"]) / 60
            if row.get("loss"):  # step 0 of a continued run has a held-out MAE and no loss
                loss.append((minute, float(row["loss"])))
            if row.get("val_mae"):
                mae.append((minute, float(row["val_mae"])))
    return {"loss": loss, "val_mae": mae}


def name_of(path: Path) -> str:
    return path.name.removesuffix(".train.csv")


def plot_png(runs: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (name, series), colour in zip(runs.items(), COLOURS):
        for ax, key in zip(axes, ("loss", "val_mae")):
            if series[key]:
                ax.plot(*zip(*series[key]), label=name, color=colour)
    for ax, title in zip(axes, ("training loss", "held-out MAE vs teacher")):
        ax.set_xlabel("minutes")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_svg(runs: dict[str, dict], out: Path, w: int = 420, h: int = 300, pad: int = 40) -> None:
    panels = []
    for i, (key, title) in enumerate((("loss", "training loss"), ("val_mae", "held-out MAE vs teacher"))):
        points = [p for s in runs.values() for p in s[key]]
        if not points:
            continue
        x0, x1 = 0.0, max(p[0] for p in points) or 1.0
        y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
        y1 = y1 if y1 > y0 else y0 + 1e-6

        def xy(p):
            return pad + (p[0] - x0) / (x1 - x0) * (w - 2 * pad), h - pad - (p[1] - y0) / (y1 - y0) * (h - 2 * pad)

        ox = i * w
        parts = [f'<g transform="translate({ox},0)"><text x="{w / 2}" y="20" text-anchor="middle">{title}</text>',
                 f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="none" stroke="#999"/>',
                 f'<text x="{pad}" y="{h - 10}">0</text><text x="{w - pad}" y="{h - 10}" text-anchor="end">'
                 f'{x1:.1f} min</text><text x="2" y="{pad}">{y1:.3f}</text><text x="2" y="{h - pad}">{y0:.3f}</text>']
        for j, (name, series) in enumerate(runs.items()):
            if series[key]:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in map(xy, series[key]))
                colour = COLOURS[j % len(COLOURS)]
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
                parts.append(f'<text x="{w - pad - 4}" y="{pad + 14 + 14 * j}" text-anchor="end" fill="{colour}">'
                             f'{name}</text>')
        panels.append("".join(parts) + "</g>")
    out.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h}" '
                   f'font-family="sans-serif" font-size="11">{"".join(panels)}</svg>\n')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="a .png (matplotlib) or .svg file")
    args = ap.parse_args()
    runs = {name_of(p): read_run(p) for p in args.csv}
    out = args.out
    if out.suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            out = out.with_suffix(".svg")
            print(f"no matplotlib here: writing {out} instead")
    (plot_png if out.suffix == ".png" else plot_svg)(runs, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
