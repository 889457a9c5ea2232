r"""VLM with the "vanilla" rotary scheme: 1-D RoPE over the flattened sequence (image tokens in
raster order, one id each).

Position design 'vanilla', freqs_1d on the t column (models/vlm_schemes.py). Everything else is
shared by all configs/vlm_*.py (configs/vlm_common.py documents the choices and the modes).
Every key is documented in configs/common.py (training loop), models/vlm.py (model.*),
data/vlm_pipeline.py (data.*) and tasks/vlm.py (eval.conditions, metrics).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_vanilla.py:smoke --workdir=/tmp/vlm_vanilla
  python -m tasks.vlm_eval --workdir=/tmp/vlm_vanilla --out=/tmp/vlm_vanilla/eval
  # ~5-10 min on 2 CPU cores (width 96, depth 3, 600 steps of 64; docs/results/vlm.md):
  python train.py --config=configs/vlm_vanilla.py:cpu --workdir=runs/vlm/vanilla/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_vanilla.py --workdir=/mnt/runs/vlm_vanilla
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("vanilla", arg)
