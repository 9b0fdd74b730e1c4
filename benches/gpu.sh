#!/usr/bin/env bash
# One prepared GPU benchmark run (the device machine of this workplace, or any CUDA box):
#   benches/gpu.sh <ims3-bench binary or .xz> <out dir>
# Build the binary with `cargo build -p ims3-bench --no-default-features --features cuda`
# (what `cargo xtask bench --device cuda:0` runs). Each stage runs under its own timeout and
# merges its records into <out>/cuda-h200.json as soon as each workload finishes, so a stage cut
# short keeps what it measured. Stage order = priority: the issue's three targets first.
set -u
BIN_IN=$1; OUT_DIR=$2
mkdir -p "$OUT_DIR"
NVRTC_DIR=/usr/local/cuda-13.0/targets/x86_64-linux/lib
if ! ls "$NVRTC_DIR"/libnvrtc.so* >/dev/null 2>&1; then
  NVRTC_DIR=$(dirname "$(find /usr/local /opt -name 'libnvrtc.so*' 2>/dev/null | head -1)")
fi
export LD_LIBRARY_PATH=$NVRTC_DIR:${LD_LIBRARY_PATH:-}
echo "libnvrtc from $NVRTC_DIR"
BIN=/tmp/ims3-bench
case "$BIN_IN" in *.xz) xz -dc "$BIN_IN" > "$BIN" ;; *) cp "$BIN_IN" "$BIN" ;; esac
chmod +x "$BIN"
J="$OUT_DIR/cuda-h200.json"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv > "$OUT_DIR/gpu.txt" 2>&1
cat "$OUT_DIR/gpu.txt"
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 250 > "$OUT_DIR/smi.csv" 2>/dev/null &
SMI=$!
T0=$(date +%s)
stage() { # name timeout args...
  local name=$1 t=$2; shift 2
  echo "== $name (limit ${t}s, at +$(( $(date +%s) - T0 ))s)"
  timeout "$t" "$BIN" --device cuda:0 --out "$J" --machine "NVIDIA H200" "$@" 2>&1 | grep -v "^\s*$" | tee -a "$OUT_DIR/bench.log"
  echo "== $name rc=${PIPESTATUS[0]} at +$(( $(date +%s) - T0 ))s"
}
stage f32-core   200 --dtype f32  --label cold-cache --iters 5 --workloads dit_forward,im_step,sample_cfg50 --im-batches 8 --sample-batches 10
stage bf16-core  150 --dtype bf16 --label cold-cache --iters 5 --workloads dit_forward
stage warm        50 --dtype bf16 --label warm-cache --iters 5 --workloads dit_forward
stage f32-rest    90 --dtype f32  --label cold-cache --iters 3 --workloads vae_decode,resnet_ap_step,im_step,sample_cfg50 --im-batches 32 --sample-batches 50
kill $SMI 2>/dev/null
ls -la target/environment 2>/dev/null | tee -a "$OUT_DIR/bench.log"
for f in target/environment/*.db; do [ -f "$f" ] && xz -T8 -c "$f" > "$OUT_DIR/$(basename "$f").xz"; done
echo "total $(( $(date +%s) - T0 ))s"
