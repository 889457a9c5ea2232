r"""VLM with the "circle_age" rotary scheme: Circle-RoPE with AGE: layers alternate Circle-RoPE ids
and M-RoPE ids; two-frame videos as two images (data.video_as='frames').

Position design 'circle' on even layers, 'mrope' ids on odd layers, freqs_mrope
(models/vlm_schemes.py). Everything else is shared by all configs/vlm_*.py (configs/vlm_common.py
documents the choices and the modes). Every key is documented in configs/common.py (training
loop), models/vlm.py (model.*), data/vlm_pipeline.py (data.*) and tasks/vlm.py (eval.conditions,
metrics).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_circle_age.py:smoke --workdir=/tmp/vlm_circle_age
  python -m tasks.vlm_eval --workdir=/tmp/vlm_circle_age --out=/tmp/vlm_circle_age/eval
  # ~5-10 min on 2 CPU cores (width 96, depth 3, 600 steps of 64; docs/results/vlm.md):
  python train.py --config=configs/vlm_circle_age.py:cpu --workdir=runs/vlm/circle_age/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_circle_age.py --workdir=/mnt/runs/vlm_circle_age
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("circle_age", arg)
