"""One ZIP file of a run: its outputs at their keys, plus its log (report, manifest as CSV and Parquet).

Outputs are streamed into the archive one at a time, so a large run never sits in memory;
images are stored (they are compressed already), text is deflated. The archive is written
beside its target and renamed into place (model.atomic), so a reader never sees half a ZIP.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import zipfile
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from model.atomic import atomic_path

from pipelines.manifest import MANIFEST_DIR, list_runs, read_manifest, summarize
from pipelines.batch.state import consolidated
from pipelines.storage import open_location

# Inside the archive: report.txt, manifest.csv, manifest.parquet. No output key can collide with
# them: an output key always ends with the output format's image extension (storage.OutputNaming).
LOG_DIR = "_log"


@dataclass
class BundleResult:
    path: str
    run_id: str
    outputs: int
    missing: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # keys with a backslash: not safe as ZIP member names
    bytes: int = 0

    def summary(self) -> str:
        line = f"bundle {self.path}: run {self.run_id}, {self.outputs} outputs, {self.bytes / 1e6:.1f} MB"
        if self.missing:
            line += f"; {len(self.missing)} listed outputs were missing (named in {LOG_DIR}/report.txt)"
        if self.refused:
            line += (f"; {len(self.refused)} outputs left out, their keys hold a backslash (named in "
                     f"{LOG_DIR}/report.txt)")
        return line


def write_bundle(dest_uri: str, zip_path: str, run_id: str | None = None, s3_endpoint: str | None = None,
                 current: bool = False) -> BundleResult:
    """Bundle one run (the latest when `run_id` is None) of the destination `dest_uri` into `zip_path`;
    `current`: every input's current output across all runs instead (incremental catalogs)."""
    if "://" in zip_path:
        raise ValueError(f"the bundle is written to a local file; got {zip_path!r}")
    dest = open_location(dest_uri, s3_endpoint)
    if current:
        if not list_runs(dest):
            raise FileNotFoundError(f"no manifests under {dest.uri_of(MANIFEST_DIR)}")
        table, run_id = consolidated(dest), "(current view over all runs)"
    else:
        run_id = run_id or (list_runs(dest) or [None])[-1]
        table = read_manifest(dest, run_id)  # raises FileNotFoundError naming the runs there are
    rows = table.to_pylist()
    zip_path = os.path.abspath(os.path.expanduser(zip_path))
    os.makedirs(os.path.dirname(zip_path), exist_ok=True)
    result = BundleResult(zip_path, run_id, 0)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                        allowZip64=True) as zf:
        for r in rows:
            if r["status"] != "ok" or not r["output_key"]:
                continue
            # Unzip tools on Windows split member names at backslashes too: a\..\..\x would escape.
            if "\\" in r["output_key"]:
                result.refused.append(r["output_key"])
                continue
            try:
                data = dest.read(r["output_key"])
            except OSError:  # deleted or overwritten since the run: say so, bundle the rest
                result.missing.append(r["output_key"])
                continue
            zf.writestr(r["output_key"], data)
            result.outputs += 1
        report = summarize(table, run_id)
        if result.missing:
            report += "\nmissing outputs (listed in the manifest, not found at bundling time):\n" + \
                      "\n".join(f"  {k}" for k in result.missing)
        if result.refused:
            report += ("\noutputs left out: their keys hold a backslash, which unzip tools on Windows take "
                       "for a folder separator:\n" + "\n".join(f"  {k}" for k in result.refused))
        zf.writestr(posixpath.join(LOG_DIR, "report.txt"), report + "\n", zipfile.ZIP_DEFLATED)
        zf.writestr(posixpath.join(LOG_DIR, "manifest.csv"), _csv(table), zipfile.ZIP_DEFLATED)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        zf.writestr(posixpath.join(LOG_DIR, "manifest.parquet"), buf.getvalue())
    result.bytes = os.path.getsize(zip_path)
    return result


def _csv(table) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=table.schema.names)
    w.writeheader()
    w.writerows(table.to_pylist())
    return out.getvalue()

