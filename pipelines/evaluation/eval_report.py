"""`matting eval --report DIR`: the scores as a page a person can look at.

DIR/index.html holds the metric table, then one section per image, worst first: the photo, the
ground truth, and for each (model, tta, setting) its cut-out over a checkerboard and its error heat
map (|matte − ground truth|), each captioned with that image's SAD (and MAE on binary masks).
Pictures are thumbnails in DIR/img/, written while eval scores (nothing is held in memory);
the page itself has no script and loads nothing from elsewhere.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipelines import html_pages as hp


def row_label(row) -> str:
    return f"{row.model}" + (f" · tta {row.tta}" if row.tta != "none" else "") + f" · {row.setting}"


class EvalReport:
    def __init__(self, out_dir: str | Path, thumb_side: int = hp.THUMB_SIDE):
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"--report {self.dir} is a file: name a folder to write the page into")
        self.img = self.dir / "img"
        self.img.mkdir(parents=True, exist_ok=True)
        self.side = thumb_side
        self._images: dict[str, int] = {}  # stem → its number in file names
        self._rows: dict[tuple[str, str, str], int] = {}  # (model, tta, setting) → its number

    def _row_id(self, row) -> int:
        return self._rows.setdefault((row.model, row.tta, row.setting), len(self._rows))

    def add(self, stem: str, image, gt: np.ndarray, row, matte: np.ndarray) -> None:
        """One scored matte (called by evaluate as it goes): its pictures are written now."""
        if stem not in self._images:
            i = self._images[stem] = len(self._images)
            hp.write_photo(self.img / f"{i:04d}-photo.jpg", image.rgb, self.side)
            hp.write_gray(self.img / f"{i:04d}-gt.png", gt, self.side)
        i, r = self._images[stem], self._row_id(row)
        hp.write_cutout(self.img / f"{i:04d}-r{r:02d}-cut.png", image.rgb, matte, self.side)
        hp.write_error_map(self.img / f"{i:04d}-r{r:02d}-err.png", matte, gt, self.side)

    def write(self, rows: list, eval_set) -> Path:
        """The page, once every row is scored; returns its path."""
        from pipelines.evaluation.evaluate import table_cells

        head, body, left = table_cells(rows, eval_set.trimap_dir)
        parts = [f'<p class="note">Eval set <code>{hp.esc(eval_set.root)}</code>: {len(eval_set.samples)} images; '
                 f"written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by <code>matting eval --report</code>. "
                 "SAD, Grad, Conn: sums / 1000 per image; MSE, MAD, MAE: per-pixel means; alpha in [0, 1].</p>",
                 '<table class="metrics"><tr>'
                 + "".join(f'<th class="{"l" if i < left else ""}">{hp.esc(h)}</th>' for i, h in enumerate(head))
                 + "</tr>"]
        for line in body:
            parts.append("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{hp.esc(x)}</td>'
                                          for i, x in enumerate(line)) + "</tr>")
        parts.append("</table>")
        by_image: dict[str, list[tuple[object, dict]]] = {}
        errors = []
        for row in rows:
            for rec in row.per_image:
                if rec["status"] == "ok":
                    by_image.setdefault(rec["image"], []).append((row, rec))
                else:
                    errors.append(f"{rec['image']} ({row_label(row)}): {rec['error']}")
        if errors:
            parts.append('<h2>Not scored</h2><ul class="errors">'
                         + "".join(f"<li>{hp.esc(e)}</li>" for e in errors) + "</ul>")
        # Worst first: by the image's SAD averaged over every model and setting on the page.
        order = sorted(by_image, key=lambda stem: -float(np.mean([rec["sad"] for _, rec in by_image[stem]])))
        parts.append(f'<h2>Images, worst first</h2><p class="note">Ordered by each image\'s SAD averaged over the '
                     f"{len(rows)} rows of the table. Cut-outs are shown over a checkerboard (transparency); "
                     "error maps show |matte − ground truth|: black is right, red half wrong, pale yellow a "
                     "full miss.</p>")
        for stem in order:
            if stem not in self._images:
                continue
            i = self._images[stem]
            mean_sad = np.mean([rec["sad"] for _, rec in by_image[stem]])
            figs = [self._figure(f"img/{i:04d}-photo.jpg", "photo", stem),
                    self._figure(f"img/{i:04d}-gt.png", "ground truth", stem)]
            for row, rec in by_image[stem]:
                r = self._row_id(row)
                score = f"SAD {rec['sad']:.2f}" + (f", MAE {rec['mae']:.4f}" if rec.get("mae") is not None else "")
                figs.append(self._figure(f"img/{i:04d}-r{r:02d}-cut.png", f"{row_label(row)}: {score}", stem,
                                         checker=True))
                figs.append(self._figure(f"img/{i:04d}-r{r:02d}-err.png", f"error, {row_label(row)}", stem))
            parts.append(f'<section class="image" id="{hp.esc(stem)}"><h3>{hp.esc(stem)} '
                         f"(mean SAD {mean_sad:.2f})</h3>{''.join(figs)}</section>")
        out = self.dir / "index.html"
        out.write_text(hp.page(f"matting eval: {Path(eval_set.root).name}", "\n".join(parts)), encoding="utf-8")
        return out

    @staticmethod
    def _figure(src: str, caption: str, stem: str, checker: bool = False) -> str:
        cls = ' class="checker"' if checker else ""
        return (f'<figure><img src="{hp.esc(src)}" alt="{hp.esc(stem)}: {hp.esc(caption)}"{cls}>'
                f"<figcaption>{hp.esc(caption)}</figcaption></figure>")
