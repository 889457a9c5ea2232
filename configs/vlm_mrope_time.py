r"""VLM with the "mrope_time" rotary scheme: Qwen2.5-VL M-RoPE with absolute time (models/vlm_schemes.py
SCHEMES["mrope_time"]; docs/spec/multimodal_ext.md §6).

M-RoPE ids (chunked 16:24:24) whose video t ids follow each sample's frame rate: frame tau of a
clip sits at t = start + floor(tau * seconds_per_frame * 2) (tokens_per_second 2, the released
Qwen2.5-VL value; transformers 4.49's float rule). The rate is each sample's
`seconds_per_frame`, passed by the input pipeline to the position ids because the entry has
`absolute_time=True`; videos without a rate of their own (the two-frame video questions) count
1 s per frame, as HF without `second_per_grid_ts`. As in Qwen2.5-VL, the rate reaches the model
only through these ids (no frame-rate text).

`clips` adds the question type whose answer needs the rate (video_elapsed: clips of 2-4 frames
at 1, 2 or 3 s per frame, "the shape moved at what second ?"; configs/vlm_common.py). Without
`clips` the config is the common task, as for every other scheme (the sweep runs it so).

  # ~1-2 min on 2 CPU cores (tiny model, 200 steps; checks the plumbing, learns little):
  python train.py --config=configs/vlm_mrope_time.py:smoke,clips --workdir=/tmp/vlm_mrope_time
  python -m tasks.vlm_eval --workdir=/tmp/vlm_mrope_time --out=/tmp/vlm_mrope_time/eval
  # The clip task with absolute time, and the same task with plain M-RoPE (no time ids):
  python train.py --config=configs/vlm_mrope_time.py:cpu,clips --workdir=runs/vlm_clips/mrope_time/seed0
  python train.py --config=configs/vlm_mrope.py:cpu,clips --workdir=runs/vlm_clips/mrope/seed0
  # The common task (no clips), as every configs/vlm_*.py:
  python train.py --config=configs/vlm_mrope_time.py:cpu --workdir=runs/vlm/mrope_time/seed0
  # Accelerator-sized (width 256, 20k steps of 256; not run here):
  python train.py --config=configs/vlm_mrope_time.py:clips --workdir=/mnt/runs/vlm_mrope_time
"""
from configs import vlm_common


def get_config(arg=None):
  return vlm_common.get_config("mrope_time", arg)
