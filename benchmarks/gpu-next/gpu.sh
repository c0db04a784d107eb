#!/bin/bash
# The next GPU session's one call (about 9 minutes; run it with timeout_s 600 from the repository root, the CIFAR-10
# JPEG copy carried at .dev/cifar10-jpeg.tar.gz). It measures what issue 14 still lacks, cheapest first, each step
# under its own timeout so that one that hangs costs its share only, and writes $OUT/log.txt and $OUT/results.tgz:
#   1. the smoke check of every method (inductor, one process each): the GPU path on today's code;
#   2. the SimCLR step at batch 512 and 2048, compiled, with both views in two forwards and in one, then at 512 with
#      CUDA graphs (compile mode reduce-overhead) — how far from 100,000 views/s, and what closes the gap;
#   3. one step of every stage of each method at its paper batch on the 10k CIFAR-10 test images (eager):
#      seconds per step and each stage's peak GPU memory, written after each method.
# On a CPU (how it is checked before a session): DEV=cpu BATCHES=16 RO_BATCH=16 STEP_DATA=digits
# METHODS="kmeans scan" STEP_METHODS=kmeans,scan MICRO_S=300 OUT=/tmp/gpu-next bash benchmarks/gpu-next/gpu.sh
set -u
export PYTHONUNBUFFERED=1 DCE_CACHE_DIR=${DCE_CACHE_DIR:-/tmp/dce-cache}
DEV=${DEV:-cuda}; PY=${PY:-python3}; OUT=${OUT:-/tmp/gpu-next}
SMOKE_S=${SMOKE_S:-120}; MICRO_S=${MICRO_S:-100}; STEPS_S=${STEPS_S:-110}
BATCHES=${BATCHES:-512 2048}; RO_BATCH=${RO_BATCH:-512}; STEP_DATA=${STEP_DATA:-cifar10:test}
METHODS=${METHODS:-cc dec digpro jule kmeans pica scan smc socnet spice temi}
STEP_METHODS=${STEP_METHODS:-scan,cc,smc,digpro,pica,spice,socnet,temi,dec,jule}
DATA=${DATA:-$PWD/.dev/cifar10-jpeg.tar.gz}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
B=/tmp/gpu-next-b; rm -rf $B; mkdir -p $B/logs $OUT; LOG=$OUT/log.txt
{
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv 2>&1 | head -3
$PY -c "import sys,torch;print(sys.version.split()[0],'torch',torch.__version__,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda', torch.get_num_threads())"
el "1. smoke of: $METHODS (and $STEP_DATA decoded into the cache alongside)"
( timeout $SMOKE_S $PY -c "
from engine.data import load_dataset; print('decoded', len(load_dataset('$STEP_DATA', data_root='$DATA')))
" > $B/logs/decode.log 2>&1; echo "decode rc $?" >> $B/logs/decode.log ) &
for m in $METHODS; do
  ( TORCHINDUCTOR_COMPILE_THREADS=1 timeout $SMOKE_S $PY -m engine bench --smoke --device $DEV --methods $m \
      --out $B/smoke/$m > $B/logs/smoke-$m.log 2>&1; echo "rc $?" >> $B/logs/smoke-$m.log ) &
done
wait
for m in $METHODS; do echo "== $m: $(tail -1 $B/logs/smoke-$m.log)"
  grep -E "^smoke:|Error" $B/logs/smoke-$m.log | head -3
done
cat $B/logs/decode.log
micro() {  # micro BATCH LABEL [extra bench options]: the SimCLR step, compiled, and K-means' row (cheap)
  local batch=$1 label=$2; shift 2
  el "2. SimCLR step, batch $batch, compiled $*"
  timeout $MICRO_S $PY -m engine bench --micro --compile "$@" --device $DEV --batch-size $batch \
    --dataset $STEP_DATA --data-root $DATA --methods kmeans --out $B/micro-$label > $B/logs/micro-$label.log 2>&1
  echo "rc $?"; grep -E "simclr" $B/micro-$label/RESULTS.md 2>/dev/null | cut -d'|' -f2,7,8,9,10
}
for batch in $BATCHES; do micro $batch $batch; done
micro $RO_BATCH $RO_BATCH-cudagraphs --compile-mode reduce-overhead
el "3. one step of every stage at the paper batch: $STEP_METHODS on $STEP_DATA"
timeout $STEPS_S $PY -m engine bench --micro --device $DEV --batch-size 16 --preset paper --methods $STEP_METHODS \
  --dataset $STEP_DATA --data-root $DATA --out $B/steps > $B/logs/steps.log 2>&1
echo "rc $?"; tail -2 $B/logs/steps.log
$PY - $B/steps/results.json <<'PY'
import json, sys
try:
    rows = [r for r in json.load(open(sys.argv[1])) if r.get("method")]
except (OSError, ValueError) as error:
    rows = []; print("no rows:", error)
for r in rows:
    print(r["method"], r["stage"], r["batch_setting"], "s/step", r["seconds_per_step"], "peak GB", r["peak_gpu_gb"],
          "stage s", r["stage_seconds"], r["fit_outcome"][:80])
PY
el "end"
} 2>&1 | tee $LOG
tar czf $OUT/results.tgz -C $B . 2>/dev/null
ls -la $OUT
