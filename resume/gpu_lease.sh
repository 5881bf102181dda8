#!/usr/bin/env bash
# Continue every unfinished run of resume/README.md on one GPU in one call: all lanes train side
# by side (MPS when the machine has it) until BUDGET seconds, then each workdir becomes a resume
# bundle under $OUT (tar parts of 15 MB; unpack with `cat part_* | tar xf -`).
#
# Prepare here (no internet there: the machine has jax, flax, optax, orbax but not these):
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/whl .gpu/mnist
#   cp ../shared/data/mnist/*.gz .gpu/mnist/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .gpu/whl \
#       ml_collections==1.1.0 tensorboardX pooch platformdirs
# then, with the device tool: command `bash resume/gpu_lease.sh`, carry [".gpu"], timeout 600;
# Measured on an H200 (2026-12-04, 7 lanes at once): a 40k x 64 hybrid run 63-72 it/s shared,
# 228 alone; CA only 87 / 141; local gate 71 / 140; autoencoder 177 / 338; the defence game
# 30-36 it/s; MetaNCA CNN rule 13.5 meta-steps/s (that rule converged at 50,000 on the CPU).
set -u
T0=$(date +%s); DEADLINE=$((T0 + ${BUDGET:-450}))
OUT=${OUT:-/tmp/lease_out}; STAGE=/tmp/stage; W=/tmp/w
rm -rf "$STAGE" "$W"; mkdir -p "$STAGE/logs" "$W" "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 XLA_PYTHON_CLIENT_PREALLOCATE=false
export NCA_MNIST_DIR=$PWD/.gpu/mnist
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
note() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }
nvidia-cuda-mps-control -d 2>/dev/null && note "MPS on"

train() {  # train NAME CONFIG [overrides]: until done (0) or DEADLINE (1)
  local name=$1 cfg=$2; shift 2
  local left=$((DEADLINE - $(date +%s)))
  [ $left -gt 30 ] || return 1
  if [ -f "resume/$name.npz" ] && [ ! -d "$W/$name" ]; then
    python3 -m experiments.bundle --restore="resume/$name.npz" --workdir="$W/$name" \
      >"$STAGE/logs/restore_$name.log" 2>&1 || { note "$name: restore failed"; return 1; }
  fi
  note "$name: start"
  timeout -s TERM -k 45 $left python3 -m experiments.train --config="$cfg" --workdir="$W/$name" \
    "$@" >>"$STAGE/logs/$name.log" 2>&1
  local rc=$?; note "$name: rc $rc"; [ $rc = 0 ]
}

P=()  # the runs still to train (the CA only's and the local gate's seeds 1 and 2 finished on the CPU)
for s in 1 2; do
  train "blog_hybrid_s$s" hybrid:blog_budget --config.seed=$s & P+=($!)
done
wait "${P[@]}"

note "bundling"
for d in "$W"/*/; do
  n=$(basename "$d")
  timeout 60 python3 -m experiments.bundle --workdir="$d" --out="$STAGE/$n.npz" \
    >"$STAGE/logs/bundle_$n.log" 2>&1 &
done
wait
for d in "$W"/*/; do cp "$d/metrics.jsonl" "$STAGE/logs/metrics_$(basename "$d").jsonl"; done
tar cf - -C /tmp stage | split -b 15M - "$OUT/part_"
note "done"
