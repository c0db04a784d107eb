#!/bin/bash
# GPU checks, call 2 (right after call 1, on the warm machine): scan end to end on CIFAR-10, paper preset
# scaled to the budget, then one step of every stage of every method at its paper batch on the 10k test images. Everything lands in $OUT/results.tgz and $OUT/log.txt.
set -u
export PYTHONUNBUFFERED=1 DCE_CACHE_DIR=/tmp/dce-cache
DEV=${DEV:-cuda}; PY=${PY:-python3}; SMOKE_S=${SMOKE_S:-140}; MICRO_S=${MICRO_S:-90}; PRE_S=${PRE_S:-60}
SCAN_S=${SCAN_S:-230}; SCAN_MIN=${SCAN_MIN:-1.5}; SCAN_DATA=${SCAN_DATA:-cifar10}; SUBSET=${SUBSET:-}; BATCH=${BATCH:-512}; N_PRE=${N_PRE:-2000}
STEP_METHODS=${STEP_METHODS:-scan cc smc digpro}; STEP_S=${STEP_S:-20}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
B=/tmp/b2; rm -rf $B; mkdir -p $B/logs; LOG=$OUT/log.txt
DATA=$PWD/.dev/cifar10-jpeg.tar.gz
{
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site
if [ ! -d .whl ] || [ -d /tmp/site ]; then :; else
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site; fi
nvidia-smi --query-gpu=name,memory.used,clocks.sm,temperature.gpu --format=csv 2>&1 | head -3
ls /tmp/dce-cache/folders 2>/dev/null | head
el "scan, paper preset scaled to $SCAN_MIN min, on $SCAN_DATA (JPEG copy)"
timeout $SCAN_S $PY -m engine bench --methods scan --dataset $SCAN_DATA --data-root $DATA --preset ${SCAN_PRESET:-paper} \
  --device $DEV --budget-minutes $SCAN_MIN --scale-to-budget ${SUBSET:+--subset $SUBSET} --runs-dir /tmp/bench-runs \
  --out $B/scan > $B/logs/scan.log 2>&1
echo "scan rc $?"; tail -4 $B/logs/scan.log; cat $B/scan/RESULTS.md 2>/dev/null
el "one step of every stage of each method, paper preset, cifar10:test, bf16+channels-last+fused, eager"
for m in $STEP_METHODS; do
  timeout $STEP_S $PY -m engine bench --micro --device $DEV --batch-size $BATCH --dataset cifar10:test --data-root $DATA \
    --preset paper --methods $m --out $B/steps/$m > $B/logs/steps-$m.log 2>&1
  echo "$m rc $?"; grep -E "^\| $m " $B/steps/$m/RESULTS.md 2>/dev/null | cut -c1-300
done
nvidia-smi --query-gpu=memory.used --format=csv
el "end"
} 2>&1 | tee $LOG
tar czf $OUT/results.tgz -C $B . 2>/dev/null
ls -la $OUT
