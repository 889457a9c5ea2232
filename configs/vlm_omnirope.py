r"""VLM with the "omnirope" rotary scheme (models/vlm_schemes.py SCHEMES["omnirope"]; docs/spec/multimodal_ext.md).

The entry's summary states its position design and frequency table. Everything else is
shared by all configs/vlm_*.py (configs/vlm_common.py documents the choices and the modes).
Every key is documented in configs/common.py (training loop), models/vlm.py (model.*),
data/vlm_pipeline.py (data.*) and tasks/vlm.py (eval.conditions, metrics).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_omnirope.py:smoke --workdir=/tmp/vlm_omnirope
  python -m tasks.vlm_eval --workdir=/tmp/vlm_omnirope --out=/tmp/vlm_omnirope/eval
  # ~5-10 min on 2 CPU cores (width 96, depth 3, 600 steps of 64; docs/results/vlm.md):
  python train.py --config=configs/vlm_omnirope.py:cpu --workdir=runs/vlm/omnirope/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_omnirope.py --workdir=/mnt/runs/vlm_omnirope
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("omnirope", arg)
