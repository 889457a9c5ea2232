r"""VLM with the "circle" rotary scheme: Circle-RoPE: image tokens on a circle orthogonal to the
text direction (PTD = 0); two-frame videos as two images (data.video_as='frames').

Position design 'circle', freqs_mrope (chunked) (models/vlm_schemes.py). Everything else is
shared by all configs/vlm_*.py (configs/vlm_common.py documents the choices and the modes).
Every key is documented in configs/common.py (training loop), models/vlm.py (model.*),
data/vlm_pipeline.py (data.*) and tasks/vlm.py (eval.conditions, metrics).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_circle.py:smoke --workdir=/tmp/vlm_circle
  python -m tasks.vlm_eval --workdir=/tmp/vlm_circle --out=/tmp/vlm_circle/eval
  # ~5-10 min on 2 CPU cores (width 96, depth 3, 600 steps of 64; docs/results/vlm.md):
  python train.py --config=configs/vlm_circle.py:cpu --workdir=runs/vlm/circle/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_circle.py --workdir=/mnt/runs/vlm_circle
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("circle", arg)
