#!/bin/bash
# Same-run A/B of two commits on this machine: bench_vit_step (ViT-S/16, 112 px, none and
# RoPE-Mixed, float32 and bfloat16) and bench_rope (forward + backward, [8, 1024, 6, 64]), in
# fresh processes alternating base / new, ROUNDS times, with tcmalloc.
#
#   bash benchmarks/ab_commits.sh BASE_REV [NEW_REV] [OUT_DIR]   # default NEW_REV = HEAD
#
# ROPE_ONLY (comma-separated bench_rope row names) limits bench_rope to rows both commits have;
# the default is the first-round rows without the slow matrix-exponential ones.
#
# Each commit is checked out into its own temporary worktree and run from there (`python -m`
# puts that tree first on sys.path). The old `--posencs` flag is accepted by both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1; new=${2:-HEAD}; out=${3:-benchmarks/results/ab}; rounds=${ROUNDS:-2}
only=${ROPE_ONLY:-"copy,x * c,1d,axial,axial (grid),mixed,mixed (grid),mrope,mrope_interleave,videorope,circle,mhrope,spherical,spherical (grid) thirds,liere2"}
mkdir -p "$out"
export LD_PRELOAD=${LD_PRELOAD:-/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4}
export TF_CPP_MIN_LOG_LEVEL=2
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/base" 2>/dev/null; git worktree remove --force "$tmp/new" 2>/dev/null; rm -rf "$tmp"' EXIT
git worktree add -q --detach "$tmp/base" "$base"
git worktree add -q --detach "$tmp/new" "$new"
echo "base $(git rev-parse --short "$base")  new $(git rev-parse --short "$new")" | tee "$out/commits.txt"
for r in $(seq 1 "$rounds"); do
  for side in base new; do
    for dtype in float32 bfloat16; do
      f="$out/vit_step.$dtype.$side.$r.txt"
      echo "== $f" >&2
      (cd "$tmp/$side" && python -m benchmarks.bench_vit_step --image_size 112 --repeats 3 \
         --posencs none,rope_mixed --dtype "$dtype") > "$f" 2> "$f.log"
    done
    f="$out/rope.$side.$r.txt"
    echo "== $f" >&2
    (cd "$tmp/$side" && python -m benchmarks.bench_rope --backward --shape 8,1024,6,64 \
       --repeats 20 --only "$only") > "$f" 2> "$f.log"
  done
done
echo "done: $out" >&2
