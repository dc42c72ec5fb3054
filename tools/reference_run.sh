#!/usr/bin/env bash
# The reference runs behind docs/PERF.md, for one model size: the default-config bench with the PyTorch peers in the
# same process tree (--peers torch,hf), the decode-context and prompt-length sweeps, at 7B the PoE spread sweep (issue
# 11's acceptance study), then the decode-step profile at 256 and 4000 tokens of context, on each WebGPU runtime of
# WEBGPU (default deno; e.g. WEBGPU=deno,dawn runs both back to back, ARCHITECTURE.md "Two WebGPU runtimes").
#   tools/reference_run.sh SIZE [OUT_DIR]      (SIZE: 1b or 7b; logs and the profile go to OUT_DIR, default .)
# On the offline GPU machine also set HYDRA_BENCH_COMMIT to the staged commit (docs/DEVICE.md).
# Deno must be on PATH; on a machine without network whose node_modules was staged by hand, set
# DENO_FLAGS=--node-modules-dir=manual. The run folder is the last line the bench prints ("done: results/...").
set -euo pipefail
size=${1:?usage: tools/reference_run.sh 1b|7b [OUT_DIR]}
out=${2:-.}
run="deno run ${DENO_FLAGS:-} -A"
extra=()
if [ "$size" = 7b ]; then extra=(--poe-spread-sweep 0,0.5,1 --poe-gamma-sweep 2,4); fi
webgpu=${WEBGPU:-deno}
$run bench/main.ts --size "$size" --webgpu "$webgpu" --peers torch,hf --decode-contexts 128,1024,4095 --prompt-lengths 512,2048 \
  "${extra[@]}" 2>&1 | tee "$out/bench_$size.log"
for rt in ${webgpu//,/ }; do
  $run tools/profile.ts --size "$size" --webgpu "$rt" --contexts 256,4000 --json "$out/profile_${size}_$rt.json" 2>&1 |
    tee "$out/profile_${size}_$rt.txt"
done
