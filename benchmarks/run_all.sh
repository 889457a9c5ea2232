#!/bin/bash
# Runs every benchmark behind benchmarks/RESULTS.md, each in fresh processes, with tcmalloc.
#
#   bash benchmarks/run_all.sh [OUT_DIR]        # default benchmarks/results; ~45 min on 2 cores
#
# Needs a quiet machine (nothing else running), `apt-get install libtcmalloc-minimal4` and, for
# the PyTorch reference, `pip install -r benchmarks/requirements.txt`. bench_rope runs in three
# fresh processes (allocator page-fault behaviour differs between processes); the others once.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
export LD_PRELOAD=${LD_PRELOAD:-/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4}
export TF_CPP_MIN_LOG_LEVEL=2
run() {  # run NAME ARGS...: python -m benchmarks.NAME ARGS > OUT/NAME[.tag].txt
  local file=$1; shift
  echo "== python -m $* > $out/$file" >&2
  python -m "$@" > "$out/$file" 2> "$out/$file.log"
}
for i in 1 2 3; do run "bench_rope.$i.txt" benchmarks.bench_rope --backward; done
run bench_scaling.txt benchmarks.bench_scaling
run bench_vlm.txt benchmarks.bench_vlm
run bench_vit_step.f32.txt benchmarks.bench_vit_step --torch --repeats 3
run bench_vit_step.bf16.txt benchmarks.bench_vit_step --torch --repeats 5 --dtype bfloat16
# Issue 14 item 5: the step overhead of every vision encoding (float32, 112 px).
run bench_vit_step.encodings.f32.112.txt benchmarks.bench_vit_step --image_size 112 --repeats 5 \
  --encodings none,mixed,axial,dinov3,eva02,prope,comrope_ap,comrope_ld,string_cayley,string_circulant,lookhere,fire
# Issue 18 item 2: the step by op kind, ours and torch's (float32; bf16 only on bf16 CPUs).
mkdir -p "$out/issue18"
run issue18/bench_vit_step.f32.breakdown.txt benchmarks.bench_vit_step --encodings none,mixed \
  --repeats 3 --torch --breakdown 2
# Issue 18 item 1: ours against torch at the same precision (RESULTS "AMD Zen 3" section;
# bf16 against torch's bf16 autocast), and with XLA's experimental oneDNN dots.
run issue18/zen3.f32.112.txt benchmarks.bench_vit_step --image_size 112 --encodings none,mixed \
  --repeats 5 --torch
run issue18/zen3.bf16.112.txt benchmarks.bench_vit_step --image_size 112 --encodings none,mixed \
  --repeats 5 --torch --dtype bfloat16 --torch_dtype bfloat16
XLA_FLAGS=--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT \
  run issue18/zen3.f32.112.onednn_dot.txt benchmarks.bench_vit_step --image_size 112 \
  --encodings none,mixed --repeats 5 --torch
# Issue 18 item 4: RoPE's share of the step by op kind (float32, 112 px).
run issue18/bench_vit_step.f32.112.rope_share.txt benchmarks.bench_vit_step --image_size 112 \
  --encodings none,axial,mixed,spherical,liere --repeats 3 --breakdown 2
run issue18/bench_vit_step.f32.112.liere8.txt benchmarks.bench_vit_step --image_size 112 \
  --encodings none,liere --block_size 8 --repeats 3 --breakdown 2
# Issue 18 item 3: every dot of the step standalone, ours and torch's (torch step times: the
# RoPE-Mixed rows of the breakdown run above, on the machine of RESULTS.md).
run issue18/bench_dots.f32.txt benchmarks.bench_dots --torch --torch_step_ms 112=1517.2,224=6713.4
# Issue 13 item 5: the commuting schemes against x * c round-robin, and the VLM step of every
# new scheme against vanilla, each in three processes (RESULTS.md, "Issue 13 item 5, met").
mkdir -p "$out/issue13d"
for i in 1 2 3; do
  run "issue13d/bench_rope_rounds.$i.txt" benchmarks.bench_rope --shape 8,1024,6,64 --rounds 40 \
    --only "1d,mrope,hope,ilrope,omnirope,mmrope,qwen35 (partial)"
done
for i in 1 2 3; do
  run "issue13d/bench_vlm.$i.txt" benchmarks.bench_vlm --repeats 20 \
    --only hope,ilrope,omnirope,mmrope,grape,qwen35,mrope_time,mrope
done
echo "done: $out" >&2
