"""The VLM input pipeline: data config, batches with position ids, iterators, eval sets.

Samples come from `data/spatial_scenes.py` (synthetic spatial questions) or, when
`config.tfds.name` is set, from a tensorflow-datasets image-question-answer dataset
(`data/vlm_tfds.py`); both give `spatial_scenes.Sample`s, which `Collator` pads into the batch
format every VLM module reads (its docstring lists the keys).

Position ids are not a data option: the caller passes `positions_fn`, the position function
of the model's rotary scheme (`models.vlm_schemes.positions_fn(config.model)`, from the same
registry entry the model uses), and `PositionTable` memoises it per segment layout. So a
config states its scheme once (`model.scheme`) and data and model cannot disagree. A clip's
frame interval (`Sample.seconds_per_frame`) is passed to the positions function only if the
function says it takes one (`absolute_time`, set from the scheme's registry entry), and is
then part of the memo key.

Imports flow one way: vlm_pipeline -> spatial_scenes, vlm_tfds -> spatial_scenes, tokenizer.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Callable, Iterable, Iterator, Sequence

import ml_collections
from ml_collections import config_dict
import numpy as np

from data.spatial_scenes import (ANSWER_LEN, CLIP_TYPES, COLORS, MAX_NUMBER, MIN_CELL,
                                 OPT_IN_TYPES, PADDING_QUESTION_TYPE, QUESTION_TYPES, SHAPES,
                                 SINGLE_IMAGE_TYPES, VIDEO_TYPES, GenSpec, Sample, clip_setting,
                                 elapsed_answer, make_sample, make_tokenizer, mix_weights,
                                 num_frames, question_len, token_grid)
import rope

EVAL_CONDITIONS = ("as_trained", "larger_grid", "longer_prefix", "multi_image")
# ---------------------------------------------------------------------------------------------
# Config.


def default_config() -> ml_collections.ConfigDict:
  """Every key of the VLM data config, with its default."""
  c = ml_collections.ConfigDict()
  c.name = "spatial_qa"
  # Images: S x S pixels, patch p, merge m -> (S/(p m)) x (S/(p m)) visual tokens per image.
  c.image_size = 32
  c.patch_size = 4
  c.merge_size = 2          # the 2x2 patch merge (model.vision.merge must agree).
  c.grid_size = 4           # scene grid g x g; cell = image_size / grid_size pixels (>= 7).
  c.min_objects = 3         # objects per scene (distinct cells, distinct (color, shape)).
  c.max_objects = 6
  c.p_empty_cell = 0.25     # color_at: chance the asked cell is empty (answer "none").
  # Weights of the question types (normalised; 0 removes a type). video_elapsed (clips with
  # a frame rate, data/spatial_scenes.py) is opt-in: 0 here, so the default stream is the one
  # of the eight original types (configs/vlm_mrope_time.py sets it).
  c.question_mix = ml_collections.ConfigDict(dict(
      color_at=1.0, left=1.0, above=1.0, nearest=1.0, count=1.0, two_image_more=0.5,
      video_moved=0.25, video_where=0.25, video_elapsed=0.0))
  # "video": one rope.Video(2, h, w) (a clip: rope.Video(T, h, w)); "frames": one rope.Image
  # per frame. Schemes that cannot place a video (Circle-RoPE) need "frames" when video
  # questions are in the mix (tasks/vlm.py checks).
  c.video_as = "video"
  # video_elapsed clips: T frames, T uniform in clip_min_frames..clip_max_frames (max_images
  # must be >= clip_max_frames), and one frame interval per sample drawn from
  # clip_seconds_per_frame (seconds; every frame time k * interval must be a whole number of
  # seconds <= 32, the answer words). Read only when video_elapsed has weight > 0.
  c.clip_min_frames = 2
  c.clip_max_frames = 4
  c.clip_seconds_per_frame = (1.0, 2.0, 3.0)
  c.min_prefix_len = 0      # random filler words before the first image.
  c.max_prefix_len = 8
  c.max_images = 2          # N of "images" [B, N, S, S, 3].
  c.max_len = 64            # L; must fit the longest sample (see required_max_len).
  c.prefetch = 2            # training batches built ahead in a background thread (0: none).
  # Evaluation sets (eval_configs): seed, size, and what conditions (b) and (c) change.
  c.eval_seed = 1234
  c.num_eval_examples = 512
  c.eval_image_size = 64    # (b) larger grids: same cell/patch size, grid scaled with image.
  c.eval_min_prefix_len = 24  # (c) text prefixes longer than in training.
  c.eval_max_prefix_len = 40
  # A tensorflow-datasets image-question-answer dataset instead of the synthetic one when
  # `tfds.name` is set (data/vlm_tfds.py).
  c.tfds = ml_collections.ConfigDict(dict(
      name="",                                 # e.g. "my_vqa" (a prepared tfds dataset).
      data_dir=config_dict.placeholder(str),   # None: the tfds default.
      train_split="train",
      eval_split="validation",
      image_key="image",        # uint8 [H, W, C] (or [K, H, W, C] for several images).
      question_key="question",  # text (str or bytes).
      answer_key="answer",      # text, or a list of texts (the first is used).
      max_answer_len=16,        # answer tokens kept (EOS excluded).
  ))
  return c


def _num_visual_tokens(config, qtype: str) -> int:
  """Visual placeholders + VISION_START/END tokens of the longest sample of this type."""
  h, w = token_grid(config)
  frames = num_frames(config, qtype)
  if qtype in VIDEO_TYPES and config.video_as == "video":
    return frames * h * w + 2
  return frames * (h * w + 2)


def required_max_len(config) -> int:
  """Length of the longest sample the config can produce (types with weight > 0)."""
  if config.tfds.name:
    raise ValueError("required_max_len: tfds samples have no fixed maximum; set max_len.")
  lens = [1 + config.max_prefix_len + _num_visual_tokens(config, t) + question_len(t)
          + ANSWER_LEN[t] + 1
          for t, wgt in zip(QUESTION_TYPES, mix_weights(config)) if wgt > 0]
  return max(lens)


def validate_config(config) -> None:
  """Raises ValueError naming the bad option (before any data is generated)."""
  for k in ("image_size", "patch_size", "merge_size", "grid_size", "max_images", "max_len"):
    if not isinstance(config[k], int) or config[k] < 1:
      raise ValueError(f"{k}={config[k]!r} must be a positive int.")
  unit = config.patch_size * config.merge_size
  if config.image_size % unit:
    raise ValueError(f"image_size={config.image_size} must be divisible by patch_size * "
                     f"merge_size = {unit}.")
  if not 0 <= config.min_prefix_len <= config.max_prefix_len:
    raise ValueError(f"need 0 <= min_prefix_len ({config.min_prefix_len}) <= max_prefix_len "
                     f"({config.max_prefix_len}).")
  if config.video_as not in ("video", "frames"):
    raise ValueError(f"video_as={config.video_as!r}; allowed: 'video', 'frames'.")
  if config.tfds.name:
    return
  keys = set(config.question_mix.keys())
  if not set(QUESTION_TYPES) - set(OPT_IN_TYPES) <= keys <= set(QUESTION_TYPES):
    raise ValueError(f"question_mix keys {sorted(keys)} must be exactly {QUESTION_TYPES} "
                     f"(an opt-in type, {', '.join(OPT_IN_TYPES)}, may be left out).")
  mix = mix_weights(config)
  if (mix < 0).any() or mix.sum() <= 0:
    raise ValueError(f"question_mix weights must be >= 0 with a positive sum, got "
                     f"{config.question_mix.to_dict()}.")
  g = config.grid_size
  if config.image_size % g or config.image_size // g < MIN_CELL:
    raise ValueError(f"grid_size={g}: image_size={config.image_size} must be a multiple of "
                     f"grid_size with cells of >= {MIN_CELL} pixels (smaller cells cannot "
                     f"draw four distinct shapes).")
  if not 1 <= config.min_objects <= config.max_objects:
    raise ValueError(f"need 1 <= min_objects ({config.min_objects}) <= max_objects "
                     f"({config.max_objects}).")
  max_obj = min(g * g - 1, len(COLORS) * len(SHAPES))  # video needs a free cell to move to.
  if config.max_objects > max_obj:
    raise ValueError(f"max_objects={config.max_objects} exceeds {max_obj} (grid cells - 1 "
                     f"and distinct (color, shape) pairs).")
  if mix[QUESTION_TYPES.index("left")] + mix[QUESTION_TYPES.index("above")] > 0 and (
      config.min_objects < 2):
    raise ValueError("min_objects must be >= 2 when left/above are in question_mix.")
  if mix[QUESTION_TYPES.index("nearest")] > 0 and config.min_objects < 2:
    raise ValueError("min_objects must be >= 2 when nearest is in question_mix.")
  multi = mix[QUESTION_TYPES.index("two_image_more"):].sum() > 0
  if multi and config.max_images < 2:
    raise ValueError(f"max_images={config.max_images} must be >= 2 for two-image/video "
                     f"questions (or set their question_mix weights to 0).")
  if any(mix[QUESTION_TYPES.index(t)] > 0 for t in CLIP_TYPES):
    _validate_clips(config)
  need = required_max_len(config)
  if config.max_len < need:
    raise ValueError(f"max_len={config.max_len} is shorter than the longest sample ({need}) "
                     f"of this config.")


def _validate_clips(config) -> None:
  """The clip settings of video_elapsed (checked when its weight is > 0)."""
  lo, hi = clip_setting(config, "clip_min_frames"), clip_setting(config, "clip_max_frames")
  for k, v in (("clip_min_frames", lo), ("clip_max_frames", hi)):
    if isinstance(v, bool) or not isinstance(v, int):
      raise ValueError(f"{k}={v!r} must be an int.")
  if not 2 <= lo <= hi:
    raise ValueError(f"need 2 <= clip_min_frames ({lo}) <= clip_max_frames ({hi}): a clip "
                     f"shows the shape before and after it moved.")
  if config.max_images < hi:
    raise ValueError(f"max_images={config.max_images} must be >= clip_max_frames={hi} "
                     f"(one image per clip frame) when video_elapsed is in question_mix.")
  rates = clip_setting(config, "clip_seconds_per_frame")
  try:
    rates = tuple(float(r) for r in rates)
  except (TypeError, ValueError):
    rates = ()
  if not rates or not all(r > 0 for r in rates):
    raise ValueError(f"clip_seconds_per_frame={clip_setting(config, 'clip_seconds_per_frame')!r}"
                     f" must be one or more positive numbers of seconds.")
  for r in rates:
    for k in range(1, hi):
      elapsed_answer(k, r)   # ValueError naming clip_seconds_per_frame if not whole seconds
    if (hi - 1) * r > MAX_NUMBER:
      raise ValueError(f"clip_seconds_per_frame: {r} s per frame puts frame {hi - 1} at "
                       f"{(hi - 1) * r:g} s, beyond the largest answer word {MAX_NUMBER}.")


def _round_up(n: int, k: int = 8) -> int:
  return -(-n // k) * k


def eval_configs(config, places_video: bool = True) -> dict[str, ml_collections.ConfigDict]:
  """The evaluation conditions, each a full data config (max_len grown to fit).

  `places_video`: False if the model's scheme cannot place a `rope.Video` (Circle-RoPE); then
  (d) adds no video questions when the training mix has none with video_as="video".

  "as_trained"    (a) the training distribution.
  "larger_grid"   (b) images of eval_image_size pixels with the same cell and patch size, so
                      both the scene grid and the visual token grid grow (object counts are
                      unchanged, so only the geometry differs from training).
  "longer_prefix" (c) eval_min/max_prefix_len filler words before the image.
  "multi_image"   (d) only two-image and video questions (training weights kept among them).
  For a tfds dataset (d) does not exist and (b) resizes the images to eval_image_size.
  """
  out = {}
  a = config.copy_and_resolve_references()
  out["as_trained"] = a
  b = config.copy_and_resolve_references()
  b.image_size = config.eval_image_size
  if not config.tfds.name:
    if config.eval_image_size % (config.image_size // config.grid_size):
      raise ValueError(f"eval_image_size={config.eval_image_size} must be a multiple of the "
                       f"cell size {config.image_size // config.grid_size}.")
    b.grid_size = config.eval_image_size // (config.image_size // config.grid_size)
  out["larger_grid"] = b
  c = config.copy_and_resolve_references()
  c.min_prefix_len = config.eval_min_prefix_len
  c.max_prefix_len = config.eval_max_prefix_len
  out["longer_prefix"] = c
  if not config.tfds.name:
    d = config.copy_and_resolve_references()
    for t in SINGLE_IMAGE_TYPES:
      d.question_mix[t] = 0.0
    if mix_weights(d).sum() <= 0:
      d.question_mix.two_image_more = 1.0
      if places_video or config.video_as == "frames":
        d.question_mix.video_moved = d.question_mix.video_where = 0.5
    out["multi_image"] = d
    for cfg in out.values():
      cfg.max_len = max(config.max_len, _round_up(required_max_len(cfg)))
  else:  # tfds: grow max_len by the extra visual / prefix tokens.
    (h, w), (h2, w2) = token_grid(config), token_grid(b)
    b.max_len = config.max_len + config.max_images * max(0, h2 * w2 - h * w)
    c.max_len = config.max_len + max(0, c.max_prefix_len - config.max_prefix_len)
  return out


# ---------------------------------------------------------------------------------------------
# Positions (cached per segment layout) and batching.


# segments -> (positions [n, 3], next_position, positions_alt [n, 3], next_position_alt), e.g.
# `models.vlm_schemes.positions_fn(model_config)`. A function with a true attribute
# `absolute_time` is called as fn(segments, seconds_per_grid=s), s the sample's seconds per
# temporal grid (None: the sample has no frame rate of its own).
PositionsFn = Callable[..., tuple]


def layout_segments(layout: tuple) -> list:
  """The rope segments of a layout tuple."""
  make = {"text": rope.Text, "image": rope.Image, "video": rope.Video}
  return [make[kind](*dims) for kind, *dims in layout]


class PositionTable:
  """A positions function memoised per distinct layout (and frame interval, if it reads one).

  Samples of a config share few layouts (question length is fixed per type, so a layout is
  fixed by type, prefix length and visual layout), so after warm-up a batch costs only array
  copies.

  `uses_time`: the function takes a sample's seconds per temporal grid (`fn.absolute_time`,
  `models.vlm_schemes.positions_fn` sets it from the scheme's entry); otherwise the interval is
  neither passed nor part of the key.
  """

  def __init__(self, fn: PositionsFn):
    self.fn = fn
    self.uses_time = bool(getattr(fn, "absolute_time", False))
    self._cache = {}

  def key(self, layout: tuple, seconds_per_grid: float | None = None) -> tuple:
    """The memo key of a sample: its layout, and its frame interval if the function reads it."""
    if self.uses_time and seconds_per_grid is not None:
      return (layout, float(seconds_per_grid))
    return (layout, None)

  def __call__(self, layout: tuple,
               seconds_per_grid: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positions, positions_alt), float32 [n, 3] each, of the layout's tokens."""
    key = self.key(layout, seconds_per_grid)
    out = self._cache.get(key)
    if out is None:
      segments = layout_segments(layout)
      if key[1] is not None:
        pos, _, alt, _ = self.fn(segments, seconds_per_grid=key[1])
      else:
        pos, _, alt, _ = self.fn(segments)
      out = tuple(np.asarray(p, np.float32) for p in (pos, alt))
      n = sum(d[0] if k == "text" else int(np.prod(d)) for k, *d in layout)
      for p in out:
        if p.shape != (n, 3):
          raise ValueError(f"positions_fn returned shape {p.shape} for a layout of {n} "
                           f"tokens; expected ({n}, 3).")
        p.flags.writeable = False
      self._cache[key] = out
    return out

  def __len__(self):
    return len(self._cache)


class Collator:
  """Pads samples into the VLM batch (the format every VLM module reads; keys in `__call__`).

  Args:
    config: the data config (max_len, max_images, image_size).
    positions_fn: the model scheme's position function (`PositionsFn`,
      `models.vlm_schemes.positions_fn(model_config)`), memoised per layout.
  """

  def __init__(self, config, positions_fn: PositionsFn):
    self.max_len = config.max_len
    self.max_images = config.max_images
    self.image_size = config.image_size
    self.table = PositionTable(positions_fn)

  def __call__(self, samples: Sequence[Sample], num_padding: int = 0) -> dict:
    """Batch of len(samples) + num_padding rows (padding rows: all False, question_type -1).

    Returns:
      dict of numpy arrays (B rows, L = max_len, N = max_images, S = image_size):
        tokens int32 [B, L]: PAD after EOS.
        seconds_per_frame float32 [B]: the sample's clip frame interval (video_elapsed), 0 for
          samples without one (not a model input; the positions already use it, below).
        images float32 [B, N, S, S, 3] in [0, 1], zeros where absent.
        image_valid bool [B, N].
        positions, positions_alt float32 [B, L, 3]: padding slots 0. A sample's clip frame
          interval reaches them when the positions function takes it (`PositionTable`).
        next_position, next_position_alt float32 [B]: the position of the token at
          prompt_len (the first answer token); token s >= prompt_len is at
          next_position + (s - prompt_len) on all three axes.
        valid bool [B, L], segment_ids int32 [B, L] (1 on real tokens, 0 on padding).
        loss_mask bool [B, L]: True on the answer tokens and EOS, i.e. the logits at t
          predict tokens[:, t+1] and count where loss_mask[:, t+1].
        prompt_len int32 [B], question_type int32 [B].
    """
    bsz = len(samples) + num_padding
    L, N, S = self.max_len, self.max_images, self.image_size
    tokens = np.zeros((bsz, L), np.int32)
    images = np.zeros((bsz, N, S, S, 3), np.float32)
    image_valid = np.zeros((bsz, N), bool)
    lengths = np.zeros((bsz,), np.int32)
    prompt_len = np.zeros((bsz,), np.int32)
    qtype = np.full((bsz,), PADDING_QUESTION_TYPE, np.int32)
    seconds = np.zeros((bsz,), np.float32)
    by_layout = {}
    for b, s in enumerate(samples):
      n, k = len(s.tokens), len(s.images)
      if n > L:
        raise ValueError(f"max_len={L} is shorter than a sample of {n} tokens.")
      if k > N:
        raise ValueError(f"max_images={N} is smaller than a sample's {k} images.")
      if s.images.shape[1:] != (S, S, 3):
        raise ValueError(f"image_size={S} does not match a sample image {s.images.shape}.")
      tokens[b, :n] = s.tokens
      images[b, :k] = s.images
      image_valid[b, :k] = True
      lengths[b] = n
      prompt_len[b] = s.prompt_len
      qtype[b] = s.question_type
      spf = getattr(s, "seconds_per_frame", None)
      seconds[b] = 0.0 if spf is None else spf
      # One frame per temporal grid here (no temporal patch merge): seconds per grid = per frame.
      by_layout.setdefault(self.table.key(s.layout, spf), []).append(b)
    idx = np.arange(L)
    valid = idx[None, :] < lengths[:, None]
    loss_mask = valid & (idx[None, :] >= prompt_len[:, None])
    batch = dict(tokens=tokens, images=images, image_valid=image_valid, valid=valid,
                 segment_ids=valid.astype(np.int32), loss_mask=loss_mask,
                 prompt_len=prompt_len, question_type=qtype, seconds_per_frame=seconds)
    pos = np.zeros((2, bsz, L, 3), np.float32)
    for key, rows in by_layout.items():   # one broadcast copy per distinct layout
      p = np.stack(self.table(*key))
      pos[:, np.asarray(rows), :p.shape[1]] = p[:, None]
    for i, key in enumerate(("", "_alt")):
      batch["positions" + key] = pos[i]
      # The first answer token is text, so its three ids are equal: take t.
      batch["next_position" + key] = pos[i, np.arange(bsz), prompt_len, 0] * (lengths > 0)
    return batch


# ---------------------------------------------------------------------------------------------
# Iterators.


def _sample_fn(config, *, seed: int, split: str) -> tuple[Callable[[int], Sample], int | None]:
  """(index -> Sample, number of examples or None if unbounded) for the config's source."""
  if config.tfds.name:
    from data import vlm_tfds  # pylint: disable=g-import-not-at-top  (tfds only if used)
    return vlm_tfds.make_sample_fn(config, seed=seed, split=split)
  spec = GenSpec.from_config(config)
  return (lambda i: make_sample(spec, seed=seed, split=split, index=i)), None


def make_train_iterator(config, *, global_batch_size: int, seed: int, start_step: int = 0,
                        process_index: int = 0, process_count: int = 1,
                        positions_fn: PositionsFn) -> Iterator[dict]:
  """Endless iterator of LOCAL training batches (see Collator for the keys).

  The global batch of step s holds samples s*G .. s*G+G-1 of the "train" split (a pure
  function of (seed, s)); process p gets rows [p*b, (p+1)*b), b = G // process_count.
  `positions_fn`: the model scheme's position function (see Collator).
  """
  validate_config(config)
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be divisible by "
                     f"process_count={process_count}.")
  b = global_batch_size // process_count
  sample, _ = _sample_fn(config, seed=seed, split="train")
  collate = Collator(config, positions_fn)

  def gen():
    step = start_step
    while True:
      first = step * global_batch_size + process_index * b
      yield collate([sample(i) for i in range(first, first + b)])
      step += 1

  return Prefetch(gen(), config.prefetch) if config.prefetch else gen()


class Prefetch:
  """Runs an iterator in a background thread, `size` items ahead (order kept).

  Batch building is NumPy/Python; a jitted train step releases the GIL, so the next batches
  are built while the device computes. Exceptions surface on the consumer's next().
  """

  _END = object()

  def __init__(self, it: Iterable, size: int):
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(iter(it),), daemon=True)
    self._thread.start()

  def _run(self, it):
    try:
      for item in it:
        while not self._stop.is_set():
          try:
            self._queue.put((item, None), timeout=0.1)
            break
          except queue.Full:
            continue
        if self._stop.is_set():
          return
      self._queue.put((self._END, None))
    except Exception as e:  # pylint: disable=broad-except  (re-raised in __next__)
      self._queue.put((self._END, e))

  def __iter__(self):
    return self

  def __next__(self):
    item, err = self._queue.get()
    if item is self._END:
      self._queue.put((item, err))   # stay exhausted
      if err is not None:
        raise err
      raise StopIteration
    return item

  def close(self):
    """Stops the background thread (it exits within ~0.1 s)."""
    self._stop.set()


class EvalIterable:
  """Re-iterable, deterministic evaluation batches; the last global batch is padded."""

  def __init__(self, config, *, batch_size: int, num_examples: int | None = None,
               process_index: int = 0, process_count: int = 1,
               positions_fn: PositionsFn):
    validate_config(config)
    if batch_size % process_count:
      raise ValueError(f"batch_size={batch_size} must be divisible by "
                       f"process_count={process_count}.")
    self._sample, size = _sample_fn(config, seed=config.eval_seed, split="eval")
    self.num_examples = num_examples or size or config.num_eval_examples
    if size is not None:
      self.num_examples = min(self.num_examples, size)
    self._b = batch_size // process_count
    self._global = batch_size
    self._first = process_index * self._b
    self._collate = Collator(config, positions_fn)

  def __len__(self):
    return -(-self.num_examples // self._global)

  def __iter__(self):
    for step in range(len(self)):
      lo = step * self._global + self._first
      idx = [i for i in range(lo, lo + self._b) if i < self.num_examples]
      yield self._collate([self._sample(i) for i in idx], num_padding=self._b - len(idx))


def make_eval_iterator(config, *, batch_size: int, num_examples: int | None = None,
                       process_index: int = 0, process_count: int = 1,
                       positions_fn: PositionsFn) -> EvalIterable:
  """Evaluation batches of the "eval" split (seed config.eval_seed).

  `batch_size` is global; process p gets rows [p*b, (p+1)*b) of each global batch. Rows past
  the end are padding: no valid tokens, loss_mask False, question_type -1. Use
  `eval_configs(config)` to get the configs of the evaluation conditions; `positions_fn`:
  see Collator.
  """
  return EvalIterable(config, batch_size=batch_size, num_examples=num_examples,
                      process_index=process_index, process_count=process_count,
                      positions_fn=positions_fn)


@dataclasses.dataclass(frozen=True)
class DataInfo:
  vocab_size: int
  max_len: int
  max_images: int
  image_size: int
  token_grid: tuple
  question_types: tuple


def data_info(config) -> DataInfo:
  """Static facts a model / task needs (vocab size, shapes, question type names)."""
  return DataInfo(make_tokenizer().vocab_size, config.max_len, config.max_images,
                  config.image_size, token_grid(config), QUESTION_TYPES + ("tfds",))
