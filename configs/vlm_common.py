"""A full vision-language config from a rotary scheme name (used by every configs/vlm_*.py).

Task: data/spatial_scenes.py's synthetic spatial questions (colour at a cell, left/above, nearest,
count, which of two images has more, which shape moved between two frames and where to),
answered by the decoder of models/vlm.py; exact-match accuracy per question type
(tasks/vlm.py). Only the LLM's position scheme differs between the configs/vlm_*.py files.

Choices made for every scheme (so that the decoder's scheme is what is compared):
  * model.vision.depth = 0: the image encoder is the patch embedding alone. A 4x4-pixel patch
    embedding and the 2x2 merge make one visual token per 8x8-pixel scene cell, with no
    position information of its own; the encoder's own 2-D RoPE layers (depth > 0) would let
    the vision side solve the geometry and blur the comparison.
  * Grid: 32x32 images, scene grid 4x4 (cell 8 px) -> 4x4 = 16 visual tokens per image;
    condition (b) uses 64x64 images (8x8 grid, 64 tokens), the same cell and patch size.
  * model.theta = 1e4 (not Qwen's 1e6 for 32k contexts): sequences here are <= 152 tokens
    and image grids 4-8 tokens wide, and with 1e6 the chunked M-RoPE layout leaves the h/w
    pairs almost unrotated over such distances.
  * Videos: a two-frame video is one rope.Video(2, h, w) (data.video_as="video") for every
    scheme that can place it; Circle-RoPE cannot (it maps single images onto its circle), so
    circle and circle_age use data.video_as="frames" (two Image segments, like two images).
  * V2PE: model.visual_stride = 4 ids per image (1/4 per token on 4x4 grids, 1/16 on 8x8);
    the default 16 would make V2PE identical to vanilla on 16-token images.
  * Circle-RoPE: the released settings (alpha 0.5, radius 10); circle_age alternates circle
    and M-RoPE layers (rope.age_schedule "alternate").
  * The multimodal extensions (docs/spec/multimodal_ext.md) keep theta = 1e4 as well (the spec's
    1e6 / Qwen3.5's 1e7 are for long contexts). HoPE draws its temporal scale per sample from
    (0.5, 0.75, 1, 1.25, 1.5) in training and uses 1 at evaluation; MM-RoPE position_scale
    (1, 1, 1); GRAPE learned "mixed" planes, rope init; Qwen3.5 rotates
    partial_rotary_dim(head_dim, 0.25) channels (smoke: 4 of 16, sections (0, 1, 1); cpu: 8
    of 32, (2, 1, 1)).

Clips (`clips` after the colon, with any mode: `configs/vlm_mrope_time.py:cpu,clips`): the task
gains the opt-in question type video_elapsed (data/spatial_scenes.py) at weight CLIP_WEIGHT (2 of
8, a quarter of the questions): clips of 2-4 frames, each sample with its own frame interval of
1, 2 or 3 seconds, "the shape moved at what second ?". The interval is in no token and no
pixel: only schemes with absolute time ids (mrope_time, Qwen2.5-VL) see it, through the t ids of
the clip's frames (models/vlm_schemes.py `Scheme.absolute_time`); every other scheme can answer
at most a third of these questions. data.max_images grows to 4 (one image per frame),
data.max_len to the longest clip sample and model.max_len to the longest evaluation sequence.
The same argument runs the same task with any other scheme, e.g. plain M-RoPE for comparison:
`configs/vlm_mrope.py:cpu,clips`.

Modes (after the colon, configs.common.parse_arg):
  (none)   an accelerator-sized run: the model defaults (width 256, depth 4, 8 heads), batch
           256, 20k steps. Not run in this repository (no accelerator); sized by analogy.
  :cpu     a real CPU run: width 96, depth 3, batch 64, 600 steps (~5-10 min on 2 shared
           CPU cores; docs/results/vlm.md has the numbers).
  :smoke   a tiny run that checks everything works: width 64, depth 2, batch 32, 200 steps
           (~1 min on 2 CPU cores; well above chance on the easy types only).
"""
import ml_collections

from configs import common
from data import vlm_pipeline
from models import vlm
from models import vlm_schemes

# The registered schemes: vanilla mrope mrope_interleave mhrope videorope v2pe circle*
# hope ilrope omnirope mmrope grape qwen35 mrope_time.
SCHEMES = vlm_schemes.SCHEMES.names()
MODES = ("smoke", "cpu")  # Besides the default (accelerator-sized).
CLIP_WEIGHT = 2.0  # question_mix weight of video_elapsed with `clips` (the others sum to 6).


def _model(scheme: str, **overrides) -> ml_collections.ConfigDict:
  m = vlm.default_config()
  m.scheme = scheme  # models/vlm_schemes.py SCHEMES; also decides the data's position ids.
  m.theta = 1e4  # Rotary base (see the module docstring for why not 1e6).
  m.max_len = 160  # >= the longest eval sequence (larger_grid: 152 tokens).
  m.visual_stride = 4.0  # v2pe only: position ids per image (see the module docstring).
  m.vision.depth = 0  # Patch embedding alone: no vision-side position information.
  m.vision.patch_size = 4  # 4x4-pixel patches; with the 2x2 merge one token per 8 px cell.
  m.update(overrides)
  return m


def _data(scheme: str) -> ml_collections.ConfigDict:
  d = vlm_pipeline.default_config()
  d.image_size = 32  # 4x4 scene grid of 8 px cells -> 4x4 visual tokens per image.
  d.grid_size = 4
  d.patch_size = 4  # Must equal model.vision.patch_size (the task checks).
  d.max_len = 64  # Longest training sample: 54 (video) / 56 (frames) tokens.
  # Schemes that cannot place a video (Circle-RoPE) see a two-frame video as two images.
  d.video_as = "video" if vlm_schemes.SCHEMES.get(scheme).places_video else "frames"
  d.num_eval_examples = 512  # Per eval condition.
  return d


def _round_up(n: int, k: int = 8) -> int:
  return -(-n // k) * k


def _add_clips(c: ml_collections.ConfigDict, scheme: str) -> None:
  """The `clips` argument: video_elapsed in the mix, and the lengths that makes necessary."""
  d = c.data
  d.question_mix.video_elapsed = CLIP_WEIGHT  # Clips with a frame rate (module docstring).
  d.max_images = d.clip_max_frames  # One image per clip frame.
  d.max_len = _round_up(vlm_pipeline.required_max_len(d))  # 88 (video) / 96 (frames).
  places_video = vlm_schemes.SCHEMES.get(scheme).places_video
  longest = max(e.max_len for e in vlm_pipeline.eval_configs(d, places_video).values())
  c.model.max_len = max(c.model.max_len, longest)  # (b) larger grid: 4 frames of 8x8 tokens.


def get_config(scheme: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The full, locked config for `scheme` (one of SCHEMES) and a mode argument."""
  scheme = vlm_schemes.SCHEMES.canonical(scheme)  # ValueError listing the names
  arg = common.parse_arg(arg, smoke=False, cpu=False, clips=False)
  modes = [m for m in MODES if arg[m]]
  if len(modes) > 1:
    raise ValueError(f"config arguments {modes} exclude each other; give at most one of "
                     f"{', '.join(MODES)}.")
  mode = modes[0] if modes else "full"

  c = common.training_defaults()
  c.task = "vlm"  # tasks/vlm.py.
  c.data = _data(scheme)
  del c.eval["image_sizes"]  # A classification key; the VLM conditions are below.
  # Eval sets during training (tasks/vlm_eval.py evaluates all four conditions afterwards).
  c.eval.conditions = ("as_trained",)
  c.checkpoint.best_metric = "as_trained/accuracy"  # Exact match on the training distribution.
  c.optim.update(name="adamw", b2=0.98, eps=1e-8, weight_decay=0.01, grad_clip_norm=1.0,
                 schedule="cosine", warmup_init_lr=0.0)
  if mode == "full":
    c.model = _model(scheme)  # width 256, depth 4, 8 heads (4 KV) x 32, MLP 768.
    c.training.batch_size = 256
    c.training.total_steps = 20_000
    c.training.log_every_steps = 100
    c.optim.update(lr=1e-3, warmup_steps=1000, end_lr=1e-5)
    c.eval.every_steps = 2000
    c.eval.batch_size = 512
    c.checkpoint.every_steps = 2000
  elif mode == "cpu":
    # 3 heads = 3 KV heads of 32: chunked sections (4, 6, 6), interleaved (6, 5, 5), MHRoPE
    # one KV head per axis (1, 1, 1). Step times: benchmarks/RESULTS.md (bench_vlm).
    c.model = _model(scheme, width=96, depth=3, num_heads=3, num_kv_heads=3, head_dim=32,
                     mlp_dim=256)
    c.model.vision.width = 64  # Patch embedding width (48 input values per patch).
    c.training.batch_size = 64
    c.training.total_steps = 600
    c.training.log_every_steps = 50
    c.optim.update(lr=2e-3, warmup_steps=100, end_lr=2e-5)
    c.eval.every_steps = None  # Only at the end (tasks/vlm_eval.py does the full evaluation).
    c.eval.batch_size = 128
    c.checkpoint.every_steps = 200
  else:  # smoke
    # 4 heads = 4 KV heads of 16: chunked (2, 3, 3), interleaved (4, 2, 2), MHRoPE (2, 1, 1).
    c.model = _model(scheme, width=64, depth=2, num_heads=4, num_kv_heads=4, head_dim=16,
                     mlp_dim=192)
    c.model.vision.width = 32  # Patch embedding width.
    c.data.num_eval_examples = 128  # Per eval condition.
    c.training.batch_size = 32
    c.training.total_steps = 200
    c.training.log_every_steps = 25
    c.optim.update(lr=2e-3, warmup_steps=20, end_lr=2e-5)
    c.eval.every_steps = None  # Only at the end.
    c.eval.batch_size = 64
    c.checkpoint.every_steps = 100
  if arg.clips:
    _add_clips(c, scheme)
  c.lock()
  return c
