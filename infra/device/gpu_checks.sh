#!/usr/bin/env bash
# Every GPU check of the project in one call, on a bare CUDA machine with PyTorch (the device tool's
# image) or on any CUDA machine with the project installed (make venv):
#
#   bash infra/device/gpu_checks.sh [STEP ...]     # steps: env gpu_tests dedup embed memorization perturbations
#
# Input: this checkout; optionally .gpucarry/site.tar.xz (infra/device/pack_site.py) with the
# packages the image lacks, unpacked to /tmp/site and put on PYTHONPATH, and .gpucarry/src.tar.xz
# (`git archive` of the commit to measure), unpacked over the checkout first so that a working
# tree in flux cannot change what runs.
# Output: one log per step in $OUT (default ./gpu-checks-out), the tables at each log's end, and
# summary.txt with each step's exit status and seconds. A step that fails or passes its time limit
# (STEP_LIMIT_<name> seconds) is recorded and the next one runs; exit status 1 when any failed.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-checks-out}
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && [ ! -f .gpucarry/site.tar.xz ] && PY=.venv/bin/python
if [ -f .gpucarry/src.tar.xz ]; then tar -xJf .gpucarry/src.tar.xz -C . || exit 1; fi
if [ -f .gpucarry/site.tar.xz ]; then
  mkdir -p /tmp/site && tar -xJf .gpucarry/site.tar.xz -C /tmp/site || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
STEPS=${*:-env gpu_tests dedup embed memorization perturbations}
FAILED=0

run_step() {  # name limit command...
  local name=$1 limit=${2}; shift 2
  local var="STEP_LIMIT_$name"; limit=${!var:-$limit}
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
  [ $rc -ne 0 ] && FAILED=1
  tail -n 25 "$OUT/$name.log"
}

for step in $STEPS; do
  case $step in
    env) run_step env 60 bash -c "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.cuda.get_device_name(), torch.version.cuda); import apache_beam, duckdb, faiss, open_clip, diffusers; print(\"beam\", apache_beam.__version__, \"duckdb\", duckdb.__version__, \"faiss\", faiss.__version__, \"open_clip\", open_clip.__version__, \"diffusers\", diffusers.__version__)'" ;;
    gpu_tests) run_step gpu_tests 120 $PY -m pytest -m gpu -q -p no:cacheprovider tests/audit/embeddings/test_gpu_paths.py ;;
    dedup) run_step dedup 170 $PY benchmarks/dedup_scale.py --device cuda --sizes 100000,1000000 --paths exact-torch,scaleout
           run_step dedup_ivf 60 $PY benchmarks/dedup_scale.py --device cuda --sizes 100000 --paths ivf-flat ;;
    embed) run_step embed 200 $PY benchmarks/embed.py --device cuda --shards "${EMBED_SHARDS:-40}" ;;
    memorization) run_step memorization 150 $PY benchmarks/memorization.py --device cuda --sd15 --no-quality ;;  # quality needs the MiniLM package (88 MB): measured on CPU
    perturbations) run_step perturbations 100 $PY benchmarks/perturbations.py --device cuda --datasets mnist \
                     --families error_minimizing_noise --seeds 2 --clean-seeds 3 ;;
    *) echo "unknown step $step"; FAILED=1 ;;
  esac
done
exit $FAILED
