#!/usr/bin/env bash
# The Fashion-MNIST job's sampling settings chosen on the validation split (issue #19), never on
# the test split: for each setting, 10 images per class from the pretrained DiT (the plain-DiT
# arm: the first IPC candidates of each class, as `ims3 select --groups 1` keeps them), then
# ConvNet-3 width 128 trained as the job's evaluation (100 epochs, batch 32, lr 0.01, seed 0)
# and tested on the held-out validation folder (given as --val and --test). Writes
# <work>/summary.md; finished settings are skipped on a rerun. For a latent DiT (`pretrain
# --vae`), set VAE=<train-vae folder>: samples are decoded through it.
#
# usage: scripts/fmnist-sampling-choices.sh <ims3> <dit.safetensors> <encoder.safetensors> \
#          <data dir with fit/ and validation/ from the job's data stage> <work dir> [setting ...]
# setting: <cfg>:<steps>:<sampler>[:<sampling seed>] (seed 0 when left out), default 1.0:50:ddpm 1.5:50:ddpm 2.0:50:ddpm 4.0:50:ddpm
#          6.0:50:ddpm 8.0:50:ddpm 4.0:50:ddim 4.0:250:ddpm
set -euo pipefail
B=$1; DIT=$2; ENC=$3; DATA=$4; WORK=$5; shift 5
SETTINGS=("$@")
[ ${#SETTINGS[@]} -gt 0 ] || SETTINGS=(1.0:50:ddpm 1.5:50:ddpm 2.0:50:ddpm 4.0:50:ddpm 6.0:50:ddpm 8.0:50:ddpm 4.0:50:ddim 4.0:250:ddpm)
for f in "$B" "$DIT" "$ENC"; do [ -e "$f" ] || { echo "$f: not found" >&2; exit 2; }; done
for d in fit validation; do [ -d "$DATA/$d" ] || { echo "$DATA/$d: not found (run the job's data stage first)" >&2; exit 2; }; done
V=$DATA/validation
dir_of() { IFS=: read -r c s m sd <<< "$1"; echo "$WORK/cfg$c-steps$s-$m${sd:+-seed$sd}"; }
prepare() {
  IFS=: read -r c s m sd <<< "$1"; local P; P=$(dir_of "$1")
  [ -e "$P/sel/final_distilled/train" ] && return 0
  mkdir -p "$P"
  RAYON_NUM_THREADS=2 "$B" --device cpu sample --dit "$DIT" --dataset fashion-mnist --per-class 10 --cfg-scale "$c" --steps "$s" --sampler "$m" --seed "${sd:-0}" ${VAE:+--vae "$VAE"} --out "$P/cands" > "$P/sample.log" 2>&1
  RAYON_NUM_THREADS=2 "$B" --device cpu select --candidates "$P/cands" --encoder "$ENC" --real-idx "$DATA/fit" --groups 1 --ipc 10 --out "$P/sel" > "$P/select.log" 2>&1
}
evaluate() {
  local P; P=$(dir_of "$1")
  [ -e "$P/eval-s0/eval.md" ] && return 0
  RAYON_NUM_THREADS=1 "$B" --device cpu eval --distilled "$P/sel/final_distilled/train" --val "$V" --test "$V" --dataset fashion-mnist --net convnet3 --width 128 --size 28 --epochs 100 --batch 32 --lr 0.01 --eval-every 20 --seeds 0 --out "$P/eval-s0" > "$P/eval-s0.log" 2>&1
}
for s in "${SETTINGS[@]}"; do prepare "$s"; done
# Two evaluations at a time (one thread each).
i=0
for s in "${SETTINGS[@]}"; do evaluate "$s" & i=$((i + 1)); if (( i % 2 == 0 )); then wait; fi; done
wait
{
  echo "# Sampling settings on the validation split"
  echo
  echo "Plain-DiT IPC-10 set from \`$(basename "$DIT")\`${VAE:+ (latents decoded by the VAE in \`$VAE\`)}, ConvNet-3 width 128 (seed 0), top-1 on the 2,500 held-out validation images. Produced by \`scripts/fmnist-sampling-choices.sh\`."
  echo
  echo "| CFG | steps | sampler | sampling seed | validation top-1 (final epoch) | best (epoch) |"
  echo "|---|---|---|---|---|---|"
  for s in "${SETTINGS[@]}"; do
    IFS=: read -r c st m sd <<< "$s"
    row=$(grep -h '^| 0 |' "$(dir_of "$s")/eval-s0/eval.md")
    final=$(echo "$row" | awk -F'|' '{gsub(/ /,"",$3); print $3}'); best=$(echo "$row" | awk -F'|' '{gsub(/^ +| +$/,"",$4); print $4}')
    echo "| $c | $st | $m | ${sd:-0} | $final | $best |"
  done
} > "$WORK/summary.md"
cat "$WORK/summary.md"
