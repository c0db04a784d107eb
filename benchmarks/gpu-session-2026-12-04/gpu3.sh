#!/bin/bash
# GPU checks, call 3: spice's smoke again with the compile fallback; then every other method's paper preset on
# CIFAR-10 (60k, JPEG copy) for 15 s each: peak GPU memory of the first stage and its speed.
set -u
export PYTHONUNBUFFERED=1 DCE_CACHE_DIR=/tmp/dce-cache
DEV=${DEV:-cuda}; PY=${PY:-python3}; RUN_MIN=${RUN_MIN:-0.25}; RUNS_S=${RUNS_S:-190}; DATASET=${DATASET:-cifar10}
RUN_METHODS=${RUN_METHODS:-cc,pica,smc,digpro,spice,socnet,dec,jule,temi}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
B=/tmp/b3; rm -rf $B; mkdir -p $B/logs; LOG=$OUT/log.txt
DATA=$PWD/.dev/cifar10-jpeg.tar.gz
{
( timeout 100 $PY -c "
from engine.data import load_dataset; print('decoded', len(load_dataset('$DATASET', data_root='$DATA')))
" > $B/logs/decode.log 2>&1 ) &
el "spice smoke"
timeout 100 $PY -m engine bench --smoke --device $DEV --methods spice --out $B/smoke-spice > $B/logs/smoke-spice.log 2>&1
echo "spice smoke rc $?"; grep -E "^smoke:|CompileFallback" $B/logs/smoke-spice.log | cut -c1-400 | head -5
cat $B/smoke-spice/smoke-*/RESULTS.md 2>/dev/null | cut -c1-500
wait; cat $B/logs/decode.log
el "paper presets on $DATASET, $RUN_MIN min each"
timeout $RUNS_S $PY -m engine bench --methods $RUN_METHODS --dataset $DATASET --data-root $DATA --preset paper \
  --device $DEV --budget-minutes $RUN_MIN --runs-dir /tmp/bench-runs3 --out $B/runs > $B/logs/runs.log 2>&1
echo "runs rc $?"; tail -3 $B/logs/runs.log
$PY - <<'PY'
import json
try:
    rows = json.load(open("/tmp/b3/runs/results.json"))
except Exception as e:
    print("no rows", e); rows = []
for r in rows:
    print(r.get("method"), r.get("status"), "peak_gb", r.get("peak_mem_gb"), "views/s", r.get("views_per_s"),
          "s", r.get("seconds"), str(r.get("error"))[:150])
PY
el "end"
} 2>&1 | tee $LOG
tar czf $OUT/results.tgz -C $B . 2>/dev/null
