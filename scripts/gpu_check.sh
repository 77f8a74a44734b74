#!/usr/bin/env bash
# The GPU check, as one call on a lent GPU machine (no network there; results in docs/gpu.md).
# Before it, here: python scripts/carry_cifar.py pack ../shared/data/cifar10 /tmp/packed, the parts copied into
# .gpu_p0/ .gpu_p1/ .gpu_p2/ (each carried by its own call), and the wheels of hydra-core, omegaconf and
# antlr4-python3-runtime in .whl/ (the machine's image has torch, lightning, torchmetrics, tensorboard).
# Steps, most important first, each with its own time limit so that one failure costs only itself:
#   1. rebuild the data cache from the carried parts (SHA-256 checked against the published one);
#   2. block forms x precision x layout, model only (which form is fastest on this device);
#   3. experiment=fast94 trainer=gpu, 5 seeds (the sweep command, one override for the GPU);
#   4. the end-to-end benchmark (reference vs project path) for four_blocks at batch 128.
# Usage there: OUT=<folder> EPOCHS=20 bash scripts/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
EPOCHS=${EPOCHS:-20}
mkdir -p "$OUT"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 CIFAR10_ROOT=/tmp/cifar10
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, torchvision, hydra; print('torch', torch.__version__, 'lightning',
lightning.__version__, 'torchvision', torchvision.__version__, 'hydra', hydra.__version__)" | tee -a "$OUT/gpu.txt"
nproc | sed 's/^/cpu cores: /' | tee -a "$OUT/gpu.txt"

echo "== 1. data ($(elapsed) s)"
python3 scripts/carry_cifar.py unpack ${PARTS:-.gpu_p0 .gpu_p1 .gpu_p2} --root /tmp/cifar10 || exit 1

echo "== 2. block forms ($(elapsed) s)"
timeout 60 python3 -m cifar_lit.bench --forms model=fast94 data.batch_size=512 --steps 20 --warmup 5 \
  2>&1 | tee "$OUT/forms.txt"

echo "== 3. fast94, $EPOCHS epochs, seeds 0-4 ($(elapsed) s)"
timeout "${FAST94_LIMIT:-330}" python3 -m cifar_lit.train -m experiment=fast94 trainer=gpu \
  trainer.max_epochs="$EPOCHS" seed=0,1,2,3,4 callbacks.progress_bar=null \
  hydra.sweep.dir=outputs/sweeps/gpu_fast94_e"$EPOCHS" 2>&1 | grep -v Warning | tee "$OUT/fast94.txt" | tail -40

echo "== 4. benchmark ($(elapsed) s)"
timeout "${BENCH_LIMIT:-100}" python3 -m cifar_lit.bench trainer=gpu --steps 50 --warmup 10 --rounds 2 \
  2>&1 | tee "$OUT/bench.txt" | tail -15

echo "== done ($(elapsed) s)"
tar czf "$OUT/outputs.tgz" --exclude='*.ckpt' outputs/sweeps
