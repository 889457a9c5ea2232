r"""VLM with the "v2pe" rotary scheme: V2PE: 1-D ids with a fractional step inside images
(model.visual_stride = 4 ids per image).

Position design 'v2pe', freqs_1d (models/vlm_schemes.py). Everything else is shared by all
configs/vlm_*.py (configs/vlm_common.py documents the choices and the modes). Every key is
documented in configs/common.py (training loop), models/vlm.py (model.*), data/vlm_pipeline.py
(data.*) and tasks/vlm.py (eval.conditions, metrics).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_v2pe.py:smoke --workdir=/tmp/vlm_v2pe
  python -m tasks.vlm_eval --workdir=/tmp/vlm_v2pe --out=/tmp/vlm_v2pe/eval
  # ~5-10 min on 2 CPU cores (width 96, depth 3, 600 steps of 64; docs/results/vlm.md):
  python train.py --config=configs/vlm_v2pe.py:cpu --workdir=runs/vlm/v2pe/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_v2pe.py --workdir=/mnt/runs/vlm_v2pe
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("v2pe", arg)
