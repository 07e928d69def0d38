"""The file-system half of issue 16: what SOURCE and DEST may be, what a listing holds, how inputs
are opened, how output keys are named and written. The corpus (tests/fscorpus.py) goes through the
real job on a local Ray: one row per listed entry, no hang, nothing written outside DEST."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import fscorpus
from catalog import real_photos
from pipelines.storage import (InputRefused, LocalLocation, NamingCounter, OutputNaming, check_disjoint, key_hashes,
                               list_inputs, open_location, write_failure_reason)

REPO = Path(__file__).resolve().parent.parent
AS_ROOT = os.geteuid() == 0
# Root lists any folder: the job then runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so a
# folder with mode 000 really cannot be listed (no onerror injection).
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"] if AS_ROOT else []


def _unprivileged_ok() -> bool:
    return not AS_ROOT or shutil.which("setpriv") is not None


@pytest.fixture
def corpus(tmp_path):
    src, expected = fscorpus.build(tmp_path, locked_unreadable=False)
    yield tmp_path, src, expected
    fscorpus.unlock(src)


# --- SOURCE and DEST ----------------------------------------------------------------------------

def test_dest_equal_to_inside_or_containing_source_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "link").symlink_to(src)
    for dest, how in ((src, "is the same location as"), (tmp_path / "link", "is the same location as"),
                      (src / "out", "lies inside"), (tmp_path / "link" / "deeper" / "out", "lies inside"),
                      (tmp_path, "contains")):
        with pytest.raises(ValueError, match=how) as e:
            check_disjoint(str(src), str(dest))
        assert "Choose a DEST outside SOURCE" in str(e.value)
    check_disjoint(str(src), str(tmp_path / "src-cutouts"))  # a sibling sharing a prefix is fine
    check_disjoint(str(src), "s3://bucket/src")


def _bind_mount_works() -> bool:
    if not AS_ROOT or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _bind_mount_works(), reason="needs root and unshare for a private bind mount")
def test_the_same_folder_through_a_bind_mount_is_refused(tmp_path):
    # realpath cannot see through a bind mount; the device-and-inode comparison does. The mount lives
    # in a private mount namespace of the child process only.
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    code = (f"import subprocess, sys; subprocess.run(['mount', '--bind', {str(src)!r}, {str(mnt)!r}], check=True)\n"
            "from pipelines.storage import check_disjoint\n"
            "for dest in sys.argv[1:]:\n"
            "    try:\n"
            "        check_disjoint(" + repr(str(src)) + ", dest); print('allowed')\n"
            "    except ValueError as e:\n"
            "        print(str(e).split(' SOURCE')[0].split(' ', 2)[2])")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", code, str(mnt),
                          str(mnt / "out"), str(tmp_path / "other")], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout.split("\n")
    assert out[:3] == ["is the same location as", "lies inside", "allowed"]


@pytest.mark.parametrize("source, dest, how", [
    ("s3://bucket/photos", "s3://bucket/photos/", "is the same location as"),
    ("s3://bucket/photos", "s3://bucket/photos/cutouts", "lies inside"),
    ("s3://bucket/photos/2024", "s3://bucket/photos", "contains"),
    ("s3://bucket", "s3://bucket/out", "lies inside"),
])
def test_overlapping_s3_prefixes_are_refused(source, dest, how):
    with pytest.raises(ValueError, match=how):
        check_disjoint(source, dest)


@pytest.mark.parametrize("source, dest", [("s3://bucket/photos", "s3://bucket/photos-cutouts"),
                                          ("s3://bucket/photos", "s3://other/photos")])
def test_s3_prefixes_compare_on_segment_boundaries(source, dest):
    check_disjoint(source, dest)


def test_cli_refuses_src_as_dest_with_exit_2_and_touches_nothing(tmp_path, capsys):
    from pipelines.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "rocket.png").write_bytes(real_photos(1)[0][1])
    before = fscorpus.snapshot(tmp_path)
    assert main(["run", str(src), str(src)]) == 2
    assert "Choose a DEST outside SOURCE" in capsys.readouterr().err
    assert main(["run", str(src), str(src / "cutouts")]) == 2
    assert fscorpus.snapshot(tmp_path) == before  # nothing read into place, nothing created


# --- Listing ------------------------------------------------------------------------------------

def test_every_entry_is_listed_once_with_its_reason(corpus):
    _, src, expected = corpus
    listed = list(list_inputs(open_location(str(src))))
    keys = [i.key for i in listed]
    assert len(keys) == len(set(keys))
    got = {i.key: i.reason or "ok" for i in listed}
    # As root the locked folder is readable here; output-name problems are found later, not by the listing.
    want = {k: ("ok" if e.outcome == "output_name_too_long" else e.outcome) for k, e in expected.items()}
    assert got == want
    pa.table({"key": keys})  # every key is valid UTF-8: the planning Parquet can hold it


@pytest.mark.skipif(not _unprivileged_ok(), reason="root without setpriv cannot make a folder unlistable")
def test_a_folder_that_cannot_be_listed_gets_a_row(tmp_path):
    src, expected = fscorpus.build(tmp_path, locked_unreadable=True)
    code = ("import sys; from pipelines.storage import list_inputs, open_location\n"
            "for i in list_inputs(open_location(sys.argv[1])):\n"
            "    print(i.key if i.key.isascii() else '-', i.reason or 'ok', sep='\\t')")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        out = subprocess.run([*DROP_DAC, sys.executable, "-c", code, str(src)], capture_output=True, text=True,
                             env=env, timeout=60, check=True).stdout
    finally:
        fscorpus.unlock(src)
    rows = dict(line.split("\t") for line in out.splitlines())
    assert rows["locked/"] == "unreadable_folder" and "locked/inside.jpg" not in rows
    assert len(rows) == len(expected)


# --- Reading ------------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_reading_never_opens_a_fifo_or_follows_a_bad_link(corpus):
    # As from an input manifest, which names keys without a listing: the read stage decides alone.
    _, src, _ = corpus
    loc = open_location(str(src))
    for key, reason in (("fifo.jpg", "not_a_regular_file"), ("socket.jpg", "not_a_regular_file"),
                        ("loop.jpg", "symlink_loop"), ("dangling.jpg", "dangling_symlink"),
                        ("outside.jpg", "symlink_outside_source"), ("escape.jpg", "symlink_outside_source"),
                        ("linked-folder", "not_a_regular_file")):
        with pytest.raises(InputRefused) as e:
            loc.read_input(key, -1, 10**8)
        assert e.value.reason == reason, key
    assert loc.read_input("inside-link.jpg", -1, 10**8) == (src / "photo.jpg").read_bytes()


@pytest.mark.timeout(30)
def test_a_fifo_swapped_in_after_the_check_is_opened_without_blocking(tmp_path, monkeypatch):
    from pipelines.storage import local

    os.mkfifo(tmp_path / "x.jpg")
    # The check saw a regular file (a race); open() must still return at once and fstat refuse it.
    monkeypatch.setattr(local, "classify_local", lambda path, root: ("", "", os.stat(path)))
    with pytest.raises(InputRefused, match="FIFO") as e:
        open_location(str(tmp_path)).read_input("x.jpg", -1, 100)
    assert e.value.reason == "not_a_regular_file"


# --- Output keys --------------------------------------------------------------------------------

def _naming(keys: list[str], ext: str = ".png", taken: list[str] = ()) -> OutputNaming:
    counter = NamingCounter()
    counter.add(keys)
    return counter.naming(ext, key_hashes(list(taken)))


def test_inputs_sharing_a_stem_keep_their_extension_and_lone_ones_do_not():
    keys = ["shop/item.jpg", "shop/item.jpeg", "shop/item.webp", "shop/other.JPG", "other/item.jpg",
            "x/b.jpg", "x/b", "y/c.x.jpg", "y/c.x", "z/doc.dat", "z/doc.jpg", "README"]
    naming = _naming(keys)
    got = {k: naming.key(k) for k in keys}
    assert got == {"shop/item.jpg": "shop/item.jpg.png", "shop/item.jpeg": "shop/item.jpeg.png",
                   "shop/item.webp": "shop/item.webp.png", "shop/other.JPG": "shop/other.png",
                   "other/item.jpg": "other/item.png",  # another folder: no conflict
                   "x/b.jpg": "x/b.jpg.png", "x/b": "x/b.png",  # a file named like the stem
                   "y/c.x.jpg": "y/c.x.jpg.png", "y/c.x": "y/c.x.png",
                   "z/doc.dat": "z/doc.dat.png", "z/doc.jpg": "z/doc.png",  # .dat is no image extension
                   "README": "README.png"}
    assert len(set(got.values())) == len(got)


def test_output_keys_never_collide_on_adversarial_names():
    rng = np.random.default_rng(16)
    parts = ["a", "a.jpg", "a.png", "a.jpg.png", "a.webp", "a.JPG", "a.jpeg.jpg", "b", "b.x", "b.x.jpg", ".jpg"]
    for _ in range(200):
        keys = sorted({"/".join(rng.choice(["d", "e"], rng.integers(0, 2))) + ("/" if rng.random() < .5 else "")
                       + str(rng.choice(parts)) for _ in range(rng.integers(2, 9))})
        keys = [k.lstrip("/") for k in keys]
        keys = sorted(set(keys))
        naming = _naming(keys, str(rng.choice([".png", ".jpg", ".webp"])))
        outs = [naming.key(k) for k in keys]
        assert len(set(outs)) == len(outs), (keys, outs)


def test_a_key_an_earlier_run_holds_is_a_collision_not_an_overwrite():
    naming = _naming(["item"], taken=["item.png"])
    assert naming.key("item") == "item.png" and naming.is_taken("item.png")
    assert not naming.is_taken("other.png")


def test_write_errors_map_to_reasons(tmp_path):
    dest = LocalLocation(str(tmp_path), None, str(tmp_path))
    (tmp_path / "a.png").mkdir()  # a folder where the output file goes
    (tmp_path / "f.png").write_bytes(b"")  # a file where an output folder goes
    for key, reason in (("a.png", "output_collision"), ("f.png/x.png", "output_collision"),
                        ("n" * 256 + ".png", "output_name_too_long")):
        with pytest.raises(OSError) as e:
            dest.write_atomic(key, b"data")
        assert write_failure_reason(e.value) == reason, (key, e.value)
    assert write_failure_reason(OSError(errno.EIO, "I/O error")) == "write_failed"
    assert dest.key_problem("n" * 256 + ".png") == "output_name_too_long" and dest.key_problem("n.png") == ""


def test_long_names_are_written_and_failed_writes_leave_nothing(tmp_path):
    from model.atomic import write_bytes_atomic

    dest = LocalLocation(str(tmp_path), None, str(tmp_path))
    name = "é" * 122 + "x.png"  # 250 bytes, the temporary name used to be 292
    dest.write_atomic(f"d/{name}", b"png")
    assert (tmp_path / "d" / name).read_bytes() == b"png"
    with pytest.raises(TypeError):
        write_bytes_atomic(tmp_path / "d" / "y.png", "not bytes")  # the write itself fails
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [name]  # no .partial left behind


# --- The whole corpus through the real job ------------------------------------------------------

def _run_twice(src: Path, dst: Path, *args: str) -> subprocess.CompletedProcess:
    """`matting run SRC DEST ARGS` twice in one process (one Ray start, the slow part on a loaded
    box), as root without the capabilities that let root list any folder."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "RAY_ADDRESS": ""}
    argv = ["run", str(src), str(dst), "--batch-size", "4", "--actors", "1", "--stall-timeout", "240", *args]
    code = f"import sys; from pipelines.cli import main; sys.exit(main({argv!r}) or main({argv!r}))"
    return subprocess.run([*DROP_DAC, sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600)


# Two job runs, ~2 min on the shared 2-core box: slow. The default run covers each case without a
# job (listing, reading, naming, writing above) and through the real job on S3 (test_bad_inputs.py).
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not _unprivileged_ok(), reason="root without setpriv cannot make a folder unlistable")
def test_corpus_through_the_job_gives_one_row_per_entry_and_writes_only_under_dest(tmp_path):
    from pipelines.manifest import read_manifest

    src, expected = fscorpus.build(tmp_path, locked_unreadable=True)
    dst = tmp_path / "dst"
    try:
        before = fscorpus.snapshot(tmp_path)
        # The second run is the rerun: the FIFO used to hang every one.
        runs = _run_twice(src, dst, "--incremental")
        assert runs.returncode == 0, runs.stderr[-3000:]
    finally:
        fscorpus.unlock(src)
    loc = open_location(str(dst))
    rows = read_manifest(loc, sorted(os.listdir(dst / "_manifests"))[0]).to_pylist()
    assert sorted(r["source_key"] for r in rows) == sorted(expected)
    for r in rows:
        want = expected[r["source_key"]]
        got = "ok" if r["status"] == "ok" else r["error_reason"]
        assert got == want.outcome, (r["source_key"], r["error"])
        assert r["output_key"] == want.output_key, r["source_key"]
        assert r["status"] == ("skipped" if want.outcome == "hidden" else "error" if want.outcome != "ok" else "ok")
    for r in rows:
        if r["status"] == "ok":
            assert (dst / r["output_key"]).stat().st_size > 0
    # Nothing outside DEST changed or appeared; DEST holds the outputs and our manifests only.
    after = fscorpus.snapshot(tmp_path)
    assert {p: v for p, v in after.items() if not p.startswith(str(dst))} == before
    outputs = sorted(os.path.relpath(p, dst) for p in after if p.startswith(str(dst) + "/")
                     and not os.path.relpath(p, dst).startswith("_manifests") and os.path.isfile(p))
    assert outputs == sorted(e.output_key for e in expected.values() if e.outcome == "ok")
    # The rerun redid only what may change: transient reasons, not permanent ones or finished outputs.
    from postproc.reasons import PERMANENT_REASONS

    rerun = read_manifest(loc).to_pylist()
    assert sorted(r["source_key"] for r in rerun) == sorted(
        k for k, e in expected.items() if e.outcome != "ok" and e.outcome not in PERMANENT_REASONS)


def test_bundle_leaves_out_keys_with_a_backslash_and_says_so(tmp_path):
    import zipfile

    from pipelines.batch.bundle import write_bundle
    from pipelines.manifest import ManifestWriter, conform

    dest = open_location(str(tmp_path / "dst"), create=True)
    keys = ["ok/one.png", "a\\..\\..\\evil.png"]  # legal names on Linux and S3; a path on Windows
    for key in keys:
        dest.write_atomic(key, b"png")
    writer = ManifestWriter(dest, "run1")
    from pipelines.manifest import STAGE_COLUMNS

    rows = [{"source_key": k, "output_key": k, "status": "ok", "error": "", "error_reason": "", "reused": False,
             "model_version": "v", "device": "cpu", **dict.fromkeys(STAGE_COLUMNS, 0.0)} for k in keys]
    writer.add(conform(pa.Table.from_pylist(rows)))
    writer.flush()
    result = write_bundle(dest.uri, str(tmp_path / "run.zip"))
    assert result.outputs == 1 and result.refused == [keys[1]] and "backslash" in result.summary()
    with zipfile.ZipFile(tmp_path / "run.zip") as zf:
        assert {n for n in zf.namelist() if not n.startswith("_log/")} == {"ok/one.png"}
        assert keys[1] in zf.read("_log/report.txt").decode()


def test_the_skipped_status_is_counted_reported_and_not_redone():
    from pipelines.manifest import STAGE_COLUMNS, conform, summarize
    from pipelines.batch.state import is_done
    from pipelines.storage import ListedInput

    rows = [{"source_key": "a.jpg", "status": "ok", "error": "", "error_reason": "", "output_key": "a.png"},
            {"source_key": "b.jpg", "status": "error", "error": "corrupt", "error_reason": "corrupt"},
            {"source_key": ".DS_Store", "status": "skipped", "error": "a hidden file", "error_reason": "hidden"}]
    table = conform(pa.Table.from_pylist([{**r, "reused": False, "model_version": "v", "device": "cpu",
                                           **dict.fromkeys(STAGE_COLUMNS, 0.0)} for r in rows]))
    report = summarize(table, "r")
    assert "3 inputs, 1 ok, 1 errors, 1 skipped" in report and "skipped by reason: hidden 1" in report
    assert "errors by reason: corrupt 1" in report
    row = {"status": "skipped", "error_reason": "hidden", "input_etag": "mtime:1", "model_version": "v",
           "params_hash": "h", "size_bytes": 8}
    assert is_done(row, ListedInput(".DS_Store", 8, "mtime:1"), "v", "h")
    assert not is_done(row, ListedInput(".DS_Store", 8, "mtime:2"), "v", "h")  # changed: looked at again
