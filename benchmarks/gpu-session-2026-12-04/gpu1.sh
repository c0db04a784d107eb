#!/bin/bash
# GPU checks, call 1: smoke of every method (inductor), the SimCLR micro-benchmark compiled, the pretrained path
# end to end, backbone extraction. Everything lands in $OUT/results.tgz and $OUT/log.txt.
set -u
export PYTHONUNBUFFERED=1 DCE_CACHE_DIR=/tmp/dce-cache
DEV=${DEV:-cuda}; PY=${PY:-python3}; SMOKE_S=${SMOKE_S:-140}; MICRO_S=${MICRO_S:-90}; PRE_S=${PRE_S:-60}
SCAN_S=${SCAN_S:-200}; SCAN_MIN=${SCAN_MIN:-2.5}; SCAN_DATA=${SCAN_DATA:-cifar10}; SUBSET=${SUBSET:-}; BATCH=${BATCH:-512}; N_PRE=${N_PRE:-2000}
METHODS=${METHODS:-cc dec digpro jule kmeans pica scan smc socnet spice temi}
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
B=/tmp/b; rm -rf $B; mkdir -p $B/logs; LOG=$OUT/log.txt
DATA=$PWD/.dev/cifar10-jpeg.tar.gz
{
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv 2>&1 | head -3
$PY -c "import sys,torch,timm;print(sys.version.split()[0],'torch',torch.__version__,'timm',timm.__version__,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda', torch.get_num_threads())"
el "decode CIFAR-10 test (background) + smoke of: $METHODS"
( timeout 150 $PY -c "
import time; t=time.time()
from engine.data import load_dataset
d = load_dataset('cifar10:test', data_root='$DATA'); print('decoded', len(d), round(time.time()-t, 1), 's')
d = load_dataset('$SCAN_DATA', data_root='$DATA'); print('decoded', len(d), round(time.time()-t, 1), 's')
" > $B/logs/decode.log 2>&1; echo "decode rc $?" >> $B/logs/decode.log ) &
for m in $METHODS; do
  ( TORCHINDUCTOR_COMPILE_THREADS=1 timeout $SMOKE_S $PY -m engine bench --smoke --device $DEV --methods $m \
      --out $B/smoke/$m > $B/logs/smoke-$m.log 2>&1; echo "rc $?" >> $B/logs/smoke-$m.log ) &
done
wait
el "smoke done"
for m in $METHODS; do echo "== $m: $(tail -1 $B/logs/smoke-$m.log)"; grep -E "^smoke:|Error|error" $B/logs/smoke-$m.log | head -4; done
cat $B/logs/decode.log
el "micro, compiled SimCLR step, batch $BATCH"
timeout $MICRO_S $PY -m engine bench --micro --compile --device $DEV --batch-size $BATCH --dataset cifar10:test \
  --data-root $DATA --preset paper --methods kmeans --out $B/micro-compile > $B/logs/micro.log 2>&1
echo "micro rc $?"; tail -5 $B/logs/micro.log; cat $B/micro-compile/RESULTS.md 2>/dev/null | cut -c1-400
el "pretrained end to end, $N_PRE CIFAR-10 test images, DINOv2 ViT-S/14 (random weights)"
timeout $PRE_S $PY -m engine bench --pretrained $N_PRE --dataset cifar10:test --data-root $DATA --device $DEV \
  --out $B/pretrained > $B/logs/pretrained.log 2>&1
echo "pretrained rc $?"; tail -3 $B/logs/pretrained.log; cat $B/pretrained/RESULTS.md 2>/dev/null
el "end"
} 2>&1 | tee $LOG
tar czf $OUT/results.tgz -C $B . 2>/dev/null
ls -la $OUT
