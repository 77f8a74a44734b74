#!/usr/bin/env bash
# The GPU check of issue 34, in two calls on a lent GPU machine (no network there; results in docs/gpu.md).
# Before them, here: python scripts/carry_cifar.py pack <CIFAR10_ROOT> /tmp/packed --parts 2, part0.xz copied into
# .gpu_p0/, part1.xz and labels.npz into .gpu_p1/, and the wheels of hydra-core, omegaconf and antlr4-python3-runtime
# in .whl/ (the machine's image has torch, lightning, torchmetrics, tensorboard). Then, there:
#   call 1, carrying .whl and .gpu_p0:  STAGE=synthetic bash scripts/gpu_check.sh   (random images: times only)
#   call 2, carrying .whl and .gpu_p1:  STAGE=real bash scripts/gpu_check.sh        (CIFAR-10: times and accuracy)
# A carried folder lasts only its call: each part is copied to /tmp/parts, which lasts while the machine is held.
# Every step has its own time limit, so that one failure or slow step costs only itself.
#   synthetic: 1. the end-to-end path against the model alone, eager and compiled (bench --overhead);
#              2. the 40-epoch four_blocks reference run, compiled (eager if that fails), timed; 3. its profile.
#   real:      4. fast94, seeds 0-4 (compiled while it is the faster); 5. a 12-cell lr x batch grid of four_blocks,
#              one job at a time, then packed side by side on the GPU (hydra/launcher=packed).
set -u
OUT=${OUT:-/tmp/gpu_out}
STAGE=${STAGE:-synthetic}
mkdir -p "$OUT" /tmp/parts
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)" | tee -a "$OUT/steps.txt"; }
save() { tar czf "$OUT/outputs_$STAGE.tgz" --exclude='*.ckpt' outputs/gpu 2>/dev/null; }  # after each step
quiet() { grep -v -E "Warning|warnings.warn|^\s*$" | tee -a "$1" | tail -"${2:-25}"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
for part in .gpu_p*/; do [ -d "$part" ] && cp -r "$part". /tmp/parts/; done
GPU="trainer=gpu callbacks.progress_bar=null data.eval_batch_size=1000"
COMPILED="compile=true data.drop_last=true"

grid() {  # 5. the 12-cell grid, one job at a time, then packed (GRID_EPOCHS epochs of 10,000 images a cell)
  GRID="model=four_blocks optimizer.lr=0.003,0.001,0.0003,0.0001 data.batch_size=64,128,256"
  GRID="$GRID trainer.max_epochs=${GRID_EPOCHS:-2} data.subset=10000 data.val_size=1000 test=false"
  step "5. 12-cell grid, one job at a time"
  timeout "${GRID_LIMIT:-120}" python3 -m cifar_lit.train -m $GPU $DATA $GRID hydra.sweep.dir=outputs/gpu/grid_sequential \
    2>&1 | quiet "$OUT/grid.txt" 18
  save
  step "5b. the same grid packed, 6 jobs at once"
  timeout "${PACKED_LIMIT:-80}" python3 -m cifar_lit.train -m $GPU $DATA $GRID hydra/launcher=packed \
    hydra.launcher.jobs_per_device=6 hydra.sweep.dir=outputs/gpu/grid_packed 2>&1 | quiet "$OUT/grid.txt" 18
  save
}

if [ "$STAGE" = synthetic ]; then
  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
  python3 -c "import torch, lightning, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__,
'hydra', hydra.__version__, 'bf16', torch.cuda.is_bf16_supported())" | tee -a "$OUT/gpu.txt"
  echo "cpu cores: $(nproc); gcc: $(command -v gcc || echo none)" | tee -a "$OUT/gpu.txt"
  python3 scripts/carry_cifar.py fake --root /tmp/fake --cache-dir /tmp/cache || exit 1
  export CIFAR10_ROOT=/tmp/fake
  DATA="data.cache_dir=/tmp/cache"

  step "1. end to end vs model alone, four_blocks batch 128"
  timeout "${OVERHEAD_LIMIT:-130}" python3 -m cifar_lit.bench trainer=gpu $DATA data.drop_last=true --overhead false,reduce-overhead \
    --steps 100 --warmup 20 --rounds 1 2>&1 | quiet "$OUT/overhead.txt"

  step "2. four_blocks, 40 epochs, compiled"
  timeout "${E40_LIMIT:-170}" python3 -m cifar_lit.train $GPU $COMPILED $DATA hydra.run.dir=outputs/gpu/four_blocks_e40_compiled \
    2>&1 | quiet "$OUT/four_blocks_e40.txt" 8
  if ! grep -q '"status": "finished"' outputs/gpu/four_blocks_e40_compiled/run.json 2>/dev/null; then
    step "2b. four_blocks, 10 epochs, eager (the compiled run did not finish)"
    [ "${FALLBACK:-1}" = 1 ] && timeout 70 python3 -m cifar_lit.train $GPU $DATA trainer.max_epochs=10 hydra.run.dir=outputs/gpu/four_blocks_e10_eager \
      2>&1 | quiet "$OUT/four_blocks_e40.txt" 8
  fi
  save

  [ "${GRID_ON_SYNTHETIC:-0}" = 1 ] && grid  # when there is no second call for the real data
  [ "${PROFILE:-1}" = 1 ] || { step "done"; save; exit 0; }
  step "3. profile of 3 compiled epochs (Lightning's SimpleProfiler)"
  timeout 45 python3 -m cifar_lit.train $GPU $COMPILED $DATA trainer.max_epochs=3 trainer.profiler=simple test=false \
    hydra.run.dir=outputs/gpu/four_blocks_profile 2>&1 | quiet "$OUT/profile.txt" 40
  save
else
  step "data"
  python3 scripts/carry_cifar.py unpack /tmp/parts --root /tmp/cifar10 --cache-dir /tmp/cache || exit 1
  export CIFAR10_ROOT=/tmp/cifar10
  DATA="data.cache_dir=/tmp/cache"

  step "4. fast94, seed 0, compiled"
  timeout 100 python3 -m cifar_lit.train experiment=fast94 $GPU $COMPILED $DATA seed=0 \
    hydra.run.dir=outputs/gpu/fast94_compiled_seed0 2>&1 | quiet "$OUT/fast94.txt" 6
  seconds=$(python3 -c "import json; r = json.load(open('outputs/gpu/fast94_compiled_seed0/run.json'));
print(int(r['wall_time_s']) if r['status'] == 'finished' else 999)" 2>/dev/null || echo 999)
  mode=$([ "$seconds" -lt 54 ] && echo "$COMPILED" || echo "compile=false")  # 54 s: eager, docs/gpu.md (H100)
  step "4b. fast94, seeds 1-4, $mode"
  timeout 240 python3 -m cifar_lit.train -m experiment=fast94 $GPU $mode $DATA seed=1,2,3,4 \
    hydra.sweep.dir=outputs/gpu/fast94_seeds 2>&1 | quiet "$OUT/fast94.txt" 12
  save

  grid
fi
step "done"
save
