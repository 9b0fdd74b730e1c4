#!/usr/bin/env bash
# One prepared GPU benchmark run (the device machine of this workplace, or any CUDA box):
#   benches/gpu.sh <ims3-bench binary or .xz> <out dir> [seconds]
# Build the binary here with
#   CARGO_TARGET_DIR=target/gpu cargo build --release -p ims3-bench --no-default-features --features cuda
# (burn with fusion, autotune and persistence; cubecl.toml at the repository root keeps compiled
# kernels and autotune results in target/environment/). Run from the repository root.
#
# Stages in priority order, each under its own timeout, each merging its records into
# <out>/cuda-h200.json as soon as a workload finishes (a stage cut short keeps what it measured):
#   torch        benches/torch_gpu.py: PyTorch at the same shapes on the same GPU (ratios)
#   f32          DiT-XL/2 forward b64, IM step b8, 50-step CFG sampling b10 (cold caches)
#   attn-direct  the DiT forward again with the head dim left at 72 (the lever's before row)
#   update-per-tensor  the IM step with AdamW/EMA per tensor (the flat update's before row)
#   warm         a second process: start-up and first call with the caches on disk
#   bf16         forward and sampling with every tensor bf16
#   bf16-weights the DiT's weights bf16, the sampler f32 (`ims3 sample --dtype bf16`), and the
#                mixed-precision IM step (`ims3 finetune --dtype bf16`)
#   conv         VAE decode b8 and the ResNet-AP-10 step b64 at 224 px
# At the end the environment database (kernels, autotune) is compressed into <out>.
set -u
BIN_IN=$1; OUT_DIR=$2; BUDGET=${3:-480}
mkdir -p "$OUT_DIR"
NVRTC_DIR=/usr/local/cuda-13.0/targets/x86_64-linux/lib
if ! ls "$NVRTC_DIR"/libnvrtc.so* >/dev/null 2>&1; then
  NVRTC_DIR=$(dirname "$(find /usr/local /opt -name 'libnvrtc.so*' 2>/dev/null | head -1)")
fi
export LD_LIBRARY_PATH=$NVRTC_DIR:${LD_LIBRARY_PATH:-}
BIN=/tmp/ims3-bench
case "$BIN_IN" in *.xz) xz -dc "$BIN_IN" > "$BIN" ;; *) cp "$BIN_IN" "$BIN" ;; esac
chmod +x "$BIN"
J="$OUT_DIR/cuda-h200.json"
LOG="$OUT_DIR/bench.log"
{ echo "libnvrtc from $NVRTC_DIR"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv; } 2>&1 | tee "$LOG"
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
run() { # name limit command...
  local name=$1 t=$2; shift 2
  local l; l=$(left); [ "$t" -gt "$l" ] && t=$l
  if [ "$t" -lt 10 ]; then echo "== $name skipped (budget spent)" | tee -a "$LOG"; return; fi
  echo "== $name (limit ${t}s, at +$(( $(date +%s) - T0 ))s)" | tee -a "$LOG"
  timeout "$t" "$@" 2>&1 | grep -v "^\s*$" | tee -a "$LOG"
  echo "== $name rc=${PIPESTATUS[0]} at +$(( $(date +%s) - T0 ))s" | tee -a "$LOG"
}
bench() { # name limit args...
  local name=$1 t=$2; shift 2
  run "$name" "$t" "$BIN" --device cuda:0 --out "$J" --machine "NVIDIA H200" "$@"
}
run   torch       90 env PYTHONUNBUFFERED=1 python3 benches/torch_gpu.py --out "$OUT_DIR/torch-h200.json" --iters 10
bench f32        170 --dtype f32 --label cold-cache --iters 5 --workloads dit_forward,im_step,sample_cfg50 --im-batches 8 --sample-batches 10
bench attn-direct 45 --dtype f32 --label attn-direct --attention direct --iters 5 --workloads dit_forward
bench update-per-tensor 45 --dtype f32 --label per-tensor-update --update per-tensor --iters 5 --workloads im_step --im-batches 8
bench warm        30 --dtype f32 --label warm-cache --iters 5 --workloads dit_forward
bench bf16        90 --dtype bf16 --label cold-cache --iters 5 --workloads dit_forward,sample_cfg50 --sample-batches 10
bench bf16-weights 60 --dtype bf16 --cast weights --label weights-bf16 --iters 5 --workloads dit_forward,sample_cfg50,im_step --sample-batches 10 --im-batches 8
bench conv        60 --dtype f32 --label cold-cache --iters 5 --workloads vae_decode,resnet_ap_step
ls -la target/environment 2>/dev/null | tee -a "$LOG"
for f in target/environment/*.db; do [ -f "$f" ] && xz -T8 -c "$f" > "$OUT_DIR/$(basename "$f").xz"; done
echo "total $(( $(date +%s) - T0 ))s" | tee -a "$LOG"
