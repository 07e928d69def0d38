"""`matting report DEST --html FILE`: a contact sheet of a run's cut-outs, for a person to eyeball.

Thumbnails over a checkerboard, each linking to its full output, least confident first; then the
errors, every one with its reason. A large run (more than LARGE_RUN cut-outs) shows the
LEAST_CONFIDENT least confident cut-outs and a fixed random sample of the rest, and says so.

Confidence is the manifest's `uncertain_fraction`: the share of the model's probabilities (at its
input size, before post-processing) strictly between 0.05 and 0.95 (pipelines/batch/stages.py). A sure
model answers 0 or 1 everywhere but along the edge; large unsure areas are where cut-outs most
often go wrong. Manifests written before the column existed have no figure: their rows count as
unknown and are shown after the measured ones (in a large run, only through the sample).

Thumbnails go into FILE's sibling folder `<stem>_files/`; the page has no script and nothing remote.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from pipelines import html_pages as hp
from pipelines.manifest import conform
from pipelines.storage import Location
from postproc import DecodeError, decode_image

LARGE_RUN = 200  # more cut-outs than this: the least confident plus a sample
LEAST_CONFIDENT = 50
SAMPLE = LARGE_RUN - LEAST_CONFIDENT
MAX_ERRORS_LISTED = 1000


def _unsure(row: dict) -> float:
    v = row.get("uncertain_fraction")
    return -1.0 if v is None else float(v)  # unknown (older manifests) after every measured value


def choose(ok_rows: list[dict], seed: int = 0) -> tuple[list[tuple[dict, str]], str]:
    """The cut-outs to show, each with why it is shown, and a sentence saying how they were chosen."""
    ranked = sorted(ok_rows, key=lambda r: (-_unsure(r), r["source_key"]))
    if len(ranked) <= LARGE_RUN:
        return [(r, "") for r in ranked], f"All {len(ranked)} cut-outs, least confident first."
    least = [r for r in ranked[:LEAST_CONFIDENT] if r.get("uncertain_fraction") is not None]
    rest = ranked[len(least):]
    sample = sorted(random.Random(seed).sample(rest, min(SAMPLE, len(rest))), key=lambda r: r["source_key"])
    note = (f"{len(ok_rows)} cut-outs: the {len(least)} least confident first, then a random sample of "
            f"{len(sample)} of the other {len(rest)} (seed {seed}, in key order).")
    return [(r, "least confident") for r in least] + [(r, "sample") for r in sample], note


def _href(dest: Location, key: str, page_dir: Path) -> str:
    local = dest.local_path(key)
    if local is None:
        return dest.uri_of(key)  # not a browser link, but the address to fetch it from
    return Path(os.path.relpath(local, page_dir)).as_posix()


def write_contact_sheet(dest: Location, table: pa.Table, html_file: str | os.PathLike, title: str) -> Path:
    html_file = Path(html_file)
    if html_file.is_dir():
        raise ValueError(f"--html {html_file} is a folder: name the .html file to write")
    files = html_file.with_name(f"{html_file.stem}_files")
    files.mkdir(parents=True, exist_ok=True)
    rows = conform(table).to_pylist()
    ok = [r for r in rows if r["status"] == "ok" and r["output_key"]]
    errors = [r for r in rows if r["status"] == "error"]
    shown, note = choose(ok)
    figures, unreadable = [], []
    for i, (row, why) in enumerate(shown):
        key = row["output_key"]
        try:
            img = decode_image(dest.read(key))
        except (OSError, DecodeError) as e:  # gone or damaged since the run: listed, not fatal
            unreadable.append((key, str(e)))
            continue
        name = f"{i:05d}.png" if img.alpha is not None else f"{i:05d}.jpg"
        if img.alpha is not None:
            hp.write_cutout(files / name, img.rgb, img.alpha)
        else:
            hp.write_photo(files / name, img.rgb)
        unsure = row.get("uncertain_fraction")
        caption = (f"{row['source_key']} · unsure {unsure:.1%}" if unsure is not None
                   else f"{row['source_key']} · unsure n/a") + (f" · {why}" if why else "")
        figures.append(f'<figure><a href="{hp.esc(_href(dest, key, html_file.parent))}">'
                       f'<img src="{hp.esc(files.name)}/{name}" class="checker" alt="{hp.esc(key)}"></a>'
                       f"<figcaption>{hp.esc(caption)}</figcaption></figure>")
    status = {s: sum(1 for r in rows if r["status"] == s) for s in ("ok", "error", "pruned")}
    parts = [f'<p class="note">Destination <code>{hp.esc(dest.uri)}</code>: {len(rows) - status["pruned"]} inputs, '
             f'{status["ok"]} ok, {status["error"]} errors'
             + (f', {status["pruned"]} pruned' if status["pruned"] else "")
             + f"; page written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
             "<code>matting report --html</code>.</p>",
             f'<p class="note">{hp.esc(note)} <b>Unsure</b> is the share of the model\'s probabilities (at its '
             "input size, before post-processing) strictly between 0.05 and 0.95: a confident model is near 0 or 1 "
             "everywhere but along the edge. n/a: a manifest written before this figure existed. Click a cut-out "
             "for the full output.</p>",
             f"<h2>Cut-outs ({len(figures)} shown)</h2>", "".join(figures) or "<p>No cut-outs.</p>"]
    if unreadable:
        parts.append('<h2>Outputs that could not be read now</h2><ul class="errors">'
                     + "".join(f"<li>{hp.esc(k)}: {hp.esc(e)}</li>" for k, e in unreadable) + "</ul>")
    parts.append(f"<h2>Errors ({len(errors)})</h2>")
    if errors:
        parts.append('<table class="metrics"><tr><th class="l">input</th><th class="l">reason</th>'
                     '<th class="l">error</th></tr>'
                     + "".join(f'<tr><td class="l">{hp.esc(r["source_key"])}</td><td class="l">'
                               f'{hp.esc(r["error_reason"])}</td><td class="l">{hp.esc(r["error"])}</td></tr>'
                               for r in errors[:MAX_ERRORS_LISTED]) + "</table>")
        if len(errors) > MAX_ERRORS_LISTED:
            parts.append(f"<p>… and {len(errors) - MAX_ERRORS_LISTED} more (the manifest has them all).</p>")
    html_file.parent.mkdir(parents=True, exist_ok=True)
    html_file.write_text(hp.page(title, "\n".join(parts)), encoding="utf-8")
    return html_file
