#!/bin/bash
# Superseded for training by bench/gpu_train_lease.sh (issue 17, round 2); kept as the record of phase 6.
# One lease of a GPU machine (this workplace's `device` tool, 15 minutes): GPU tests, bench rows of
# the CUDA-graph cache, `matting train --device cuda` (a short check, then two time-limited runs side
# by side). What it ran on an H100 on 2026-11-27 is in bench/RESULTS.md and docs/models.md.
#
# Set-up here, once (the lease sends the repo and the ignored folders named in `carry`, 64 MiB):
#   echo /.gpu/ >> .git/info/exclude
#   python bench/pack_photos.py ../shared/train/clothing_cc0 ../shared/train/caltech101_objects \
#       ../shared/train/ccp_fullbody --out .gpu/train                       # 42 MiB
#   mkdir -p .gpu/weights && cp ~/.cache/unet-matting/weights/*u2netp.onnx .gpu/weights/
# Then: run(command="LIMIT=555 bash bench/gpu_lease.sh", carry=[".gpu"], timeout_s=575).
# Its files come back from $OUT: log.txt, gpu.json, the checkpoints and their .train.csv logs.
# Local dry run (no GPU): DEVICE=cpu MAXIMG=40 LIMIT=200 OUT=/tmp/gout bash bench/gpu_lease.sh
T0=$(date +%s)
LIMIT=${LIMIT:-560}
DEVICE=${DEVICE:-cuda}
MAXIMG=${MAXIMG:+--max-images $MAXIMG}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH} MATTING_WEIGHTS_DIR=$PWD/.gpu/weights MATTING_CACHE_DIR=/tmp/teacher
L=$OUT/log.txt
P=.gpu/train
IMGS="$P/clothing_cc0 $P/caltech101_objects $P/ccp_fullbody/image"
COMMON="--pairs $P/ccp_fullbody --pair-prob 0.2 --pair-weight 0.5 --name unet-small --depth 5 --input-size 192
        --cache-size 320 --composite-prob 0.5 --val-images 64 --device $DEVICE --threads 2 $MAXIMG"
left() { echo $((LIMIT - ($(date +%s) - T0))); }
say() { echo "== $(($(date +%s) - T0)) s: $*" | tee -a "$L"; }

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc; lscpu | grep "Model name"
  python3 -c "import torch, cv2, onnxruntime as o; print('torch', torch.__version__, torch.cuda.is_available(),
'cv2', cv2.__version__, 'ort', o.__version__, o.get_available_providers())"
  ldconfig -p | grep -c nvinfer; python3 -m pip list 2>/dev/null | grep -i -E "tensorrt|onnxruntime"; } >>"$L" 2>&1

say "pytest -m gpu"
timeout 150 python3 -m pytest -q -m gpu tests/test_model.py -p no:cacheprovider >>"$L" 2>&1
say "pytest exit $?"

if [ "$DEVICE" = cuda ]; then
  say "bench/gpu.py"
  timeout 120 python3 bench/gpu.py --models u2netp unet-small --rows "torch FP16 CUDA" graphs \
    --json "$OUT/gpu.json" >>"$L" 2>&1
  say "bench exit $?"
fi

say "smoke: 30 steps of matting train --device $DEVICE from v3 (the teacher mats every photo first)"
timeout 200 python3 -m pipelines.cli train $IMGS $COMMON --base-width 8 --init model/checkpoints/unet-small.safetensors \
  --steps 30 --batch-size 32 --lr 1e-3 --workers 8 --log-every 5 --checkpoint-every 30 --seed 6 \
  --out /tmp/smoke/smoke.safetensors >>"$L" 2>&1
say "smoke exit $?"
cp /tmp/smoke/smoke.train.csv "$OUT/" 2>/dev/null

MIN=$(python3 -c "print(round(max(0.3, ($(left) - 70) / 60), 2))")
say "two runs side by side, $MIN min each: w8 from v3, w16 from scratch"
python3 -m pipelines.cli train $IMGS $COMMON --base-width 8 --init model/checkpoints/unet-small.safetensors \
  --steps 100000 --max-minutes "$MIN" --batch-size 32 --lr 1e-3 --workers 7 --log-every 100 \
  --checkpoint-every 1000 --seed 7 --out "$OUT/w8.safetensors" 2>&1 | sed -u 's/^/[w8] /' >>"$L" &
python3 -m pipelines.cli train $IMGS $COMMON --base-width 16 \
  --steps 100000 --max-minutes "$MIN" --batch-size 32 --lr 2e-3 --workers 7 --log-every 100 \
  --checkpoint-every 1000 --seed 8 --out "$OUT/w16.safetensors" 2>&1 | sed -u 's/^/[w16] /' >>"$L" &
wait
say "done; $(left) s left"
nvidia-smi --query-gpu=memory.used --format=csv >>"$L" 2>&1
