r"""VLM with the "videorope" rotary scheme: VideoRoPE: diagonal layout (h, w offset by t), temporal
stride 2, low frequencies to t.

Position design 'videorope', VideoRoPE's LTA frequency allocation (models/vlm_schemes.py).
Everything else is shared by all configs/vlm_*.py (configs/vlm_common.py documents the choices
and the modes). Every key is documented in configs/common.py (training loop), models/vlm.py
(model.*), data/vlm_pipeline.py (data.*) and tasks/vlm.py (eval.conditions, metrics).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_videorope.py:smoke --workdir=/tmp/vlm_videorope
  python -m tasks.vlm_eval --workdir=/tmp/vlm_videorope --out=/tmp/vlm_videorope/eval
  # ~5-10 min on 2 CPU cores (width 96, depth 3, 600 steps of 64; docs/results/vlm.md):
  python train.py --config=configs/vlm_videorope.py:cpu --workdir=runs/vlm/videorope/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_videorope.py --workdir=/mnt/runs/vlm_videorope
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("videorope", arg)
