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
# LANES="hybrid grid" (any of defence, hybrid, metanca, grid) picks the lanes; fewer run faster.
# Measured on an H200 (2026-12-04, 7 lanes at once): a 40k x 64 hybrid run 63-72 it/s shared,
# 228 alone; CA only 87 / 141; local gate 71 / 140; autoencoder 177 / 338; the defence game
# 30-36 it/s; MetaNCA CNN rule 13.5 meta-steps/s.
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

lane_defence() {  # the defence fine-tune at attacked share 0.25, then a fresh adversary (issue 20)
  train l2_noise_defended_ft25 l2_noise_defended --config.init_from=l2_noise \
    --config.defence.adversary_init=adversary_eight --config.learning_rate=1e-4 \
    --config.num_train_steps=10000 --config.lr_boundaries="(8000,)" \
    --config.defence.attacked_share=0.25 || return
  # the adversary's config names its original as the CPU runs do (a changed path is refused)
  mkdir -p workdirs && ln -sfn "$W/l2_noise_defended_ft25" workdirs/l2_noise_defended_ft25
  train adversary_def_ft25 adversary_eight --config.num_train_steps=10000 \
    --config.adversary.original=workdirs/l2_noise_defended_ft25 || return
  python3 -m experiments.attack --workdir="$W/l2_noise_defended_ft25" \
    --adversary="$W/adversary_def_ft25" --fractions=0.1 --num_digits=1000 --video_digits=0 \
    --out="$STAGE/attack_defended_ft25" >"$STAGE/logs/attack_defended_ft25.log" 2>&1
  note "defended_ft25 attack rc $?"
}

P=()
case " ${LANES:=defence hybrid metanca grid} " in *" defence "*) lane_defence & P+=($!);; esac
case " $LANES " in *" hybrid "*)
  for s in 1 2; do
    train "blog_hybrid_s$s" hybrid:blog_budget --config.seed=$s & P+=($!)
    train "blog_ca_only_s$s" hybrid_ca_only:blog_budget --config.seed=$s & P+=($!)
    train "blog_local_s$s" hybrid:blog_budget,gate_local --config.seed=$s & P+=($!)
  done;;
esac
case " $LANES " in *" metanca "*)
  train metanca_mnist_cnn metanca_mnist_cnn:damage --config.num_train_steps=12000 & P+=($!);;
esac
case " $LANES " in *" grid "*)  # the MLP rule fine-tuned on the heatmap's corners (issue 19)
  ( python3 -m experiments.bundle --restore=resume/metanca_mnist_damage.npz \
      --workdir="$W/metanca_mnist_damage" >"$STAGE/logs/restore_damage.log" 2>&1 &&
    train metanca_mnist_grid metanca_mnist_grid:damage \
      --config.init_from="$W/metanca_mnist_damage" --config.curriculum_steps=0 ) & P+=($!);;
esac
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
