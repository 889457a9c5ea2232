#!/bin/bash
# Runs every benchmark behind benchmarks/RESULTS.md, each in a fresh process, with tcmalloc
# (except bench_data, measured with glibc malloc), each at the commit RESULTS.md names for its
# table: that commit is checked out into a temporary worktree and the benchmark runs from there
# (`python -m` puts that tree first on sys.path), so a table's numbers come back from the code
# they were measured on, whatever HEAD is now.
#
#   bash benchmarks/run_all.sh [OUT_DIR [SECTION ...]]   # default benchmarks/results, all sections
#   bash benchmarks/run_all.sh /tmp/bench issue18 issue13  # only those RESULTS.md sections
#
# Sections: issue5 (the Sapphire Rapids run: needs a CPU with AMX-BF16 to compare), issue12
# (ab_commits.sh), issue13, issue14, issue15, issue18, and issue18_bf16 (the bf16 rows still to
# measure, at the current checkout, on CPUs with bf16 instructions only). All of them take
# several hours on 2 cores.
# Needs a quiet machine (nothing else running), `apt-get install libtcmalloc-minimal4` and, for
# the PyTorch reference, `pip install -r benchmarks/requirements.txt`. Files land under OUT_DIR
# with the names RESULTS.md links to.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-benchmarks/results}")
shift || true
sections=("$@")
known="issue5 issue12 issue13 issue14 issue15 issue18 issue18_bf16"
for s in "${sections[@]}"; do
  [[ " $known " == *" $s "* ]] || { echo "run_all.sh: unknown section '$s'; allowed: $known" >&2; exit 2; }
done
mkdir -p "$out"
export LD_PRELOAD=${LD_PRELOAD-/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4}
export TF_CPP_MIN_LOG_LEVEL=2
trees=$(mktemp -d)
trap 'for t in "$trees"/*/; do [ -d "$t" ] && git worktree remove --force "$t"; done; rm -rf "$trees"' EXIT

want() {  # want SECTION: whether this run includes SECTION
  [ ${#sections[@]} -eq 0 ] && return 0
  local s; for s in "${sections[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1
}

here() {  # here FILE MODULE ARGS...: python -m MODULE ARGS > OUT/FILE, at the current checkout
  local file=$1; shift
  mkdir -p "$(dirname "$out/$file")"
  echo "== $(git rev-parse --short HEAD): python -m $* > $out/$file" >&2
  python -m "$@" > "$out/$file" 2> "$out/$file.log"
}

at() {  # at COMMIT[+BENCH_COMMIT] FILE MODULE ARGS...: `here`, run in a worktree of COMMIT
  #       (with benchmarks/ taken from BENCH_COMMIT: old code timed by a newer script)
  local commit=$1; shift
  local tree="$trees/$commit"
  if [ ! -d "$tree" ]; then
    git worktree add -q --detach "$tree" "${commit%+*}"
    [[ $commit == *+* ]] && git -C "$tree" checkout -q "${commit#*+}" -- benchmarks
  fi
  (cd "$tree" && here "$@")
}

if want issue5; then  # "Benchmark results (issue 5)": the first full run, Sapphire Rapids
  for i in 1 2 3; do at daf3f68 "bench_rope.$i.txt" benchmarks.bench_rope --backward; done
  at daf3f68 bench_scaling.txt benchmarks.bench_scaling
  at daf3f68 bench_vlm.txt benchmarks.bench_vlm
  at daf3f68 bench_vit_step.f32.txt benchmarks.bench_vit_step --torch --repeats 3
  at daf3f68 bench_vit_step.bf16.txt benchmarks.bench_vit_step --torch --repeats 5 --dtype bfloat16
fi

if want issue18; then
  # "AMD Zen 3": ours against torch at the same precision (bf16 against torch's bf16 autocast),
  # and with XLA's experimental oneDNN dots.
  at 3904d96 issue18/zen3.f32.112.txt benchmarks.bench_vit_step --image_size 112 \
    --encodings none,mixed --repeats 5 --torch
  at 3904d96 issue18/zen3.bf16.112.txt benchmarks.bench_vit_step --image_size 112 \
    --encodings none,mixed --repeats 5 --torch --dtype bfloat16 --torch_dtype bfloat16
  XLA_FLAGS=--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT \
    at 3904d96 issue18/zen3.f32.112.onednn_dot.txt benchmarks.bench_vit_step --image_size 112 \
    --encodings none,mixed --repeats 5 --torch
  # Item 2: the step by op kind, ours and torch's (float32; bf16 only on bf16 CPUs); and its
  # first run (whole event durations), whose torch step times item 3 uses.
  at b046a06 issue18/bench_vit_step.f32.breakdown.txt benchmarks.bench_vit_step \
    --encodings none,mixed --repeats 3 --torch --breakdown 2
  at a4ae245 issue18/bench_vit_step.f32.breakdown.a4ae245.txt benchmarks.bench_vit_step \
    --encodings none,mixed --repeats 3 --torch --breakdown 2
  # Item 3: every dot of the step standalone, ours and torch's (torch step times: the RoPE-Mixed
  # rows of the breakdown run of a4ae245 on the machine of RESULTS.md).
  at e96ca8f issue18/bench_dots.f32.txt benchmarks.bench_dots --torch \
    --torch_step_ms 112=1517.2,224=6713.4
  # Item 4: RoPE's share of the step by op kind (float32, 112 px), and LieRE's expm bound.
  at f34f1af issue18/bench_vit_step.f32.112.rope_share.txt benchmarks.bench_vit_step \
    --image_size 112 --encodings none,axial,mixed,spherical,liere --repeats 3 --breakdown 2
  at f34f1af issue18/bench_vit_step.f32.112.liere8.txt benchmarks.bench_vit_step \
    --image_size 112 --encodings none,liere --block_size 8 --repeats 3 --breakdown 2
  at f34f1af issue18/bench_expm.112.txt benchmarks.bench_expm --torch
fi

if want issue18_bf16; then
  # Issue 18's bfloat16 rows (items 1-4), not measured yet: they need a CPU with bf16
  # instructions (AMX-BF16 or AVX-512-BF16), where torch's bf16 autocast is the like-for-like
  # comparison. Run at the current checkout (no commit to pin yet); RESULTS.md then names it.
  if grep -qwE "amx_bf16|avx512_bf16" /proc/cpuinfo; then
    here issue18/bf16.breakdown.txt benchmarks.bench_vit_step --dtype bfloat16 --torch \
      --encodings none,mixed --repeats 3 --breakdown 2
    here issue18/bf16.112.rope_share.txt benchmarks.bench_vit_step --dtype bfloat16 \
      --image_size 112 --encodings none,axial,mixed,spherical,liere --repeats 3 --breakdown 2
    here issue18/bf16.112.liere8.txt benchmarks.bench_vit_step --dtype bfloat16 \
      --image_size 112 --encodings none,liere --block_size 8 --repeats 3 --breakdown 2
    here issue18/bench_dots.bf16.txt benchmarks.bench_dots --dtype bfloat16 --torch
  else
    echo "== issue18_bf16: skipped, this CPU has no bf16 instructions (amx_bf16 / avx512_bf16)" >&2
  fi
fi

if want issue12; then  # "Issue 12": same-run A/B of the registry and backend split
  ROUNDS=3 bash benchmarks/ab_commits.sh f74260f 8d37bbc "$out/ab_issue12"
fi

if want issue15; then  # "Issue 15": input pipeline, glibc malloc (as measured)
  LD_PRELOAD= at c04c34b issue15/bench_data.txt benchmarks.bench_data --workers 0,1,2
fi

if want issue14; then
  # Issue 14 item 5: the step overhead of every vision encoding (float32, 112 px), and STRING
  # again after 3ad584d.
  at 495ef95 issue14/bench_vit_step.f32.112.txt benchmarks.bench_vit_step --image_size 112 \
    --repeats 5 --encodings none,mixed,axial,dinov3,eva02,prope,comrope_ap,comrope_ld,string_cayley,string_circulant,lookhere,fire
  at 3ad584d issue14b/bench_vit_step.f32.112.txt benchmarks.bench_vit_step --image_size 112 \
    --repeats 5 --encodings none,string_cayley,string_circulant,prope,dinov3
fi

if want issue13; then
  # The VLM step and the rotations of the second-round schemes, one process each (495ef95).
  at 495ef95 issue13/bench_vlm.txt benchmarks.bench_vlm \
    --only hope,ilrope,omnirope,mmrope,grape,qwen35,mrope_time,mrope
  at 495ef95 issue13/bench_rope.txt benchmarks.bench_rope --backward --only "1d,mrope,hope,ilrope,omnirope,mmrope,qwen35 (partial),grape (learned planes),dinov3,eva02,fit_yarn,p_rope_0.5,string_cayley,string_cayley left=False,string_circulant,string_circulant b16,comrope_ap8,comrope_ld8"
  # GRAPE at two intermediate commits ("GRAPE again").
  at da28b64 issue13b/bench_vlm_grape.1.txt benchmarks.bench_vlm --only grape
  at ffb15d7 issue13b/bench_vlm_grape.2.txt benchmarks.bench_vlm --only grape --repeats 20
  # The commuting rows in three fresh processes (7f68505).
  for i in 1 2 3; do
    at 7f68505 "issue13c/bench_rope.$i.txt" benchmarks.bench_rope --backward \
      --only "1d,mrope,hope,ilrope,omnirope,mmrope,qwen35 (partial)"
  done
  # Item 5 met: x * c round-robin against the commuting schemes (and partial rotary before
  # 351723a), the VLM step of every new scheme against vanilla, three processes each.
  rows="1d,mrope,hope,ilrope,omnirope,mmrope,qwen35 (partial)"
  for i in 1 2 3; do
    at 958743e "issue13d/bench_rope_rounds.$i.txt" benchmarks.bench_rope --shape 8,1024,6,64 \
      --rounds 40 --only "$rows"
    at 600ca57+351723a "issue13d/bench_rope_rounds.before.$i.txt" benchmarks.bench_rope \
      --shape 8,1024,6,64 --rounds 40 --only "$rows"
  done
  for i in 1 2 3; do
    at 958743e "issue13d/bench_vlm.$i.txt" benchmarks.bench_vlm --repeats 20 \
      --only hope,ilrope,omnirope,mmrope,grape,qwen35,mrope_time,mrope
  done
fi
echo "done: $out" >&2
