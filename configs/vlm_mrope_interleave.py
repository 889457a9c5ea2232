r"""VLM with the "mrope_interleave" rotary scheme: MRoPE-I (Qwen3-VL style): spatial-reset ids (h, w
restart at 0 per image), interleaved t/h/w frequencies.

Position design 'spatial_reset', freqs_mrope_interleaved (models/vlm_schemes.py). Everything
else is shared by all configs/vlm_*.py (configs/vlm_common.py documents the choices and the
modes). Every key is documented in configs/common.py (training loop), models/vlm.py (model.*),
data/vlm_pipeline.py (data.*) and tasks/vlm.py (eval.conditions, metrics).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_mrope_interleave.py:smoke --workdir=/tmp/vlm_mrope_interleave
  python -m tasks.vlm_eval --workdir=/tmp/vlm_mrope_interleave --out=/tmp/vlm_mrope_interleave/eval
  # ~5-10 min on 2 CPU cores (width 96, depth 3, 600 steps of 64; docs/results/vlm.md):
  python train.py --config=configs/vlm_mrope_interleave.py:cpu \
      --workdir=runs/vlm/mrope_interleave/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_mrope_interleave.py --workdir=/mnt/runs/vlm_mrope_interleave
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("mrope_interleave", arg)
