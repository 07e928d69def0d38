#!/bin/bash
# Issue 17's GPU lease: train our own U-Net for about ten minutes in ONE call (15 lent minutes in all).
#
#   bash bench/gpu_train_lease.sh prepare        # here, once: pack photos and weights into .gpu/, check the size
#   run(command="bash bench/gpu_train_lease.sh run", carry=[".gpu"], timeout_s=590)   # the lease
#   DEVICE=cpu MAXIMG=60 MIN=0.4 BATCH=4 SAMPLES_ON=device OUT=/tmp/gout bash bench/gpu_train_lease.sh run
#                                                 # the rehearsal on CPU (tests/test_bench_scripts.py runs one, slow)
# GPU_DIR (default .gpu) and WORK (default /tmp) move what it reads and where it works.
#
# What `run` does there:
#  1. the machine: GPU, driver, cores, torch;
#  2. the teacher (U²-Netp with flip TTA, FP32: chosen on the eval sets by bench/teacher.py) mats
#     all 5,343 packed photos, and the photos to train on are packed once into one memory-mapped
#     array (`matting train --precompute-only`);
#  3. four students side by side on the one GPU, each for $MIN minutes, every sample made on the
#     GPU (`--samples-on auto`: the pack is uploaded once, crops, flips, jitter and composites are
#     torch ops there): the shipped unet-base continued at 256² (the line we ship: short leases add
#     up), and widths 16/24/32 from scratch at 256²/288²/320² (held-out error per training minute
#     for the size choice; bench/student_sizes.py has their CPU speed);
#  4. the samples' cost, made by one loader core and on the GPU (bench/train_samples.py), so the
#     log says whether data loading kept up with the runs' images/s;
#  5. brings back (8 files at most, 16 MiB each): the log, every run's CSV (loss, held-out MAE in
#     all and per source, every 250 steps) and their curves (bench/plot_training.py, matplotlib
#     there), the checkpoints as FP16 safetensors (they load as FP32).
# Evaluate what comes back here, on CPU: `matting eval --data ../shared/eval/<set> --model FILE`.
#
# The photos travel packed (bench/pack_photos.py): squashed to 288² with U²-Netp's Lanczos filter,
# WebP quality 50 (about 7 KB each; lower if our tree has grown): 5,343 photos and 1,003 CCP masks fit
# beside our tree in one call.
set -u
MODE=${1:-run}
S=${SHARED:-../shared/train}
FOLDERS="clothing_cc0 clothing_cc0_more caltech101_objects ccp_fullbody ccp_people"

if [ "$MODE" = prepare ]; then
  set -e
  mkdir -p .git/info && { grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude; }
  mkdir -p .gpu/weights
  cp ~/.cache/unet-matting/weights/*u2netp.onnx .gpu/weights/
  # The call carries our tree too, which grows with every bench log: the photos' WebP quality steps
  # down until everything fits under 64 MiB with 1 MiB to spare.
  for quality in ${QUALITIES:-50 45 40 35}; do
    rm -rf .gpu/train
    python bench/pack_photos.py $(for f in $FOLDERS; do echo "$S/$f"; done) --out .gpu/train --size 288 --quality "$quality"
    tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
    extra=$(du -sb .gpu | cut -f1)
    untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb | tail -1 | cut -f1)
    total=$((tree + extra + ${untracked:-0}))
    echo "quality $quality: tree $((tree / 1048576)) MiB + .gpu $((extra / 1048576)) MiB + untracked" \
         "$((${untracked:-0} / 1048576)) MiB = $((total / 1048576)) MiB of 64"
    [ "$total" -lt $((63 * 1048576)) ] && exit 0
  done
  echo "too large for one call even at quality $quality: pack smaller (--size) or carry fewer files"
  exit 1
fi

T0=$(date +%s)
LIMIT=${LIMIT:-570}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?OUT must name the folder whose files come back}
mkdir -p "$OUT"
MAXIMG=${MAXIMG:+--max-images $MAXIMG}
G=${GPU_DIR:-$PWD/.gpu}  # what `prepare` packed (photos, masks, weights)
W=${WORK:-/tmp}  # scratch there: the teacher cache and the runs
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MATTING_WEIGHTS_DIR=$G/weights MATTING_CACHE_DIR=$W/teacher
L=$OUT/log.txt
P=$G/train
IMGS="$P/clothing_cc0 $P/clothing_cc0_more $P/caltech101_objects $P/ccp_fullbody/image $P/ccp_people"
# People (ccp_*) serve two presets (id-photo, avatar), products (clothing*, caltech) one (ecommerce):
# weighted so that each half is drawn about equally (2,087 people photos against 3,256 others).
COMMON="--pairs $P/ccp_fullbody --pair-prob 0.15 --pair-weight 0.5 --teacher u2netp --teacher-tta flip
        --cache-size 288 --composite-prob 0.5 --val-images 120 --device $DEVICE --depth 5 $MAXIMG
        --source-weights ccp_people=1.56,ccp_fullbody/image=1.56"
left() { echo $((LIMIT - ($(date +%s) - T0))); }
say() { echo "== $(($(date +%s) - T0)) s: $*" | tee -a "$L"; }

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc; lscpu | grep "Model name"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
  git log --oneline -1; ls $P | head; du -sh $P; } >>"$L" 2>&1

say "teacher: u2netp + flip, FP32, on $DEVICE; then the pack"
timeout 200 python3 -m pipelines.cli train $IMGS $COMMON --out $W/unused.safetensors --precompute-only \
  --threads 4 >>"$L" 2>&1
say "teacher exit $?"

MIN=${MIN:-$(python3 -c "print(round(max(0.3, ($(left) - 110) / 60), 2))")}
say "four students side by side, $MIN min each"
run() {  # name, then flags
  local name=$1; shift
  python3 -m pipelines.cli train $IMGS $COMMON --steps 1000000 --max-minutes "$MIN" --batch-size ${BATCH:-64} --threads 2 \
    --log-every 50 --checkpoint-every 250 ${SAMPLES_ON:+--samples-on $SAMPLES_ON} --out "$W/runs/$name.safetensors" "$@" 2>&1 | sed -u "s/^/[$name] /" >>"$L"
}
mkdir -p $W/runs
run base256 --name unet-base --base-width 16 --input-size 256 --init model/checkpoints/unet-base.safetensors \
  --lr 8e-4 --seed 21 &
run w16-256 --name unet-w16 --base-width 16 --input-size 256 --lr 2e-3 --seed 22 &
run w24-288 --name unet-w24 --base-width 24 --input-size 288 --lr 2e-3 --seed 23 &
run w32-320 --name unet-w32 --base-width 32 --input-size 320 --lr 2e-3 --seed 24 &
wait
say "trained; $(left) s left"
say "samples: packed loader (one core) against DeviceSampler on $DEVICE, 288² → 256²"
# After the runs: its pack of 2,000 photos replaces the training pack in the cache folder.
timeout 60 python3 bench/train_samples.py "$(ls -d $W/teacher/u2netp-*-288 | head -1)" --photos 2000 --size 288 \
  --out 256 --samples 200 --rounds 2 --device "$DEVICE" --batch "${BATCH:-64}" --device-samples 1024 --no-png >>"$L" 2>&1
say "samples exit $?"
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv >>"$L" 2>&1

# Back: FP16 copies of the checkpoints (under 16 MiB each; they load as FP32), the CSVs in one archive.
WORK=$W python3 - >>"$L" 2>&1 <<'EOF'
import glob, os, sys
sys.path.insert(0, os.getcwd())
from model.specs import spec_from_file
from safetensors.torch import load_file
from model.weights import save_safetensors
for path in sorted(glob.glob(os.path.join(os.environ["WORK"], "runs", "*.safetensors"))):
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(path).items()}
    dest = os.path.join(os.environ["OUT"], os.path.basename(path))
    save_safetensors(state, spec_from_file(path), dest)
    print("back:", dest, os.path.getsize(dest) // 1024, "KiB")
EOF
tar -czf "$OUT/curves.tar.gz" -C $W/runs $(cd $W/runs && ls *.train.csv) 2>>"$L"
python3 bench/plot_training.py $W/runs/*.train.csv --out "$OUT/curves.png" >>"$L" 2>&1
say "done; $(left) s left"
