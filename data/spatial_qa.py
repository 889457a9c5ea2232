"""Synthetic spatial question answering: a seeded, offline dataset where positions matter.

A scene is a few coloured shapes in distinct cells of a `g x g` grid, rendered to an
`S x S x 3` image (cell = `S/g` pixels, one shape per cell, black background, exact
colours, no anti-aliasing). Each sample asks one question whose answer needs *where* things
are; the question types (ids = index in `QUESTION_TYPES`):

  0 color_at        "what color is at row 2 column 3 ?"              -> "red" | "none"
  1 left            "which is further left , the red square or the blue circle ?" -> "red square"
  2 above           "which is higher up , the red square or the blue circle ?"    -> "blue circle"
  3 nearest         "which shape is nearest to the red square ?"    -> "green cross"
  4 count           "how many red shapes are there ?"               -> "2"
  5 two_image_more  (two images) "which image has more red shapes ?" -> "first" | "second"
  6 video_moved     (two frames) "which shape moved ?"               -> "red square"
  7 video_where     (two frames) "where did the shape that moved go ?" -> "3 1" (row, column)

Rows and columns are 1-based, counted from the top-left. Every (color, shape) pair occurs at
most once per scene, so "the red square" names one object; questions are only asked when the
answer is unique (different columns for `left`, different rows for `above`, a unique nearest
object under the Euclidean distance between cell centres for `nearest`, different counts for
`two_image_more`). Every answer has a fixed number of words per question type, so exact match
(of the answer tokens and EOS) is meaningful.

Token sequence of a sample (ids from `data.tokenizer`):

  BOS prefix... VISION_START IMAGE*(h*w) VISION_END [VISION_START IMAGE*(h*w) VISION_END]
      question... answer... EOS PAD...

The prefix is 0..N random filler words, so the same question appears at many offsets. A
two-frame video is one `rope.Video(2, h, w)` block (`video_as="video"`, 2*h*w placeholders, frame 0
first) or two `rope.Image(h, w)` blocks like two images (`video_as="frames"`). Circle-RoPE
cannot place a video (`rope.multimodal_positions` raises for `Video(t>1)`), so a config with
`scheme="circle"`, `video_as="video"` and video questions in the mix is rejected by
`validate_config` (use `video_as="frames"`, or give the video types weight 0).

Batches: see `collate`; the format is INTERFACES.md §4. Sample `i` of a split is a pure function
of `(seed, split, i)`, so training resumes from a step number alone.

The same pipeline reads a tensorflow-datasets image-question-answer dataset when
`config.tfds.name` is set (`data/vlm_tfds.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
from typing import Callable, Iterable, Iterator, Sequence

import ml_collections
from ml_collections import config_dict
import numpy as np

from data import tokenizer as tok
import rope

# ---------------------------------------------------------------------------------------------
# Vocabulary.

COLORS = (  # name, RGB in [0, 1]; exact values so pixels map back to names.
    ("red", (1.0, 0.0, 0.0)),
    ("green", (0.0, 1.0, 0.0)),
    ("blue", (0.0, 0.0, 1.0)),
    ("yellow", (1.0, 1.0, 0.0)),
    ("magenta", (1.0, 0.0, 1.0)),
    ("cyan", (0.0, 1.0, 1.0)),
)
COLOR_NAMES = tuple(c for c, _ in COLORS)
SHAPES = ("square", "circle", "triangle", "cross")
QUESTION_TYPES = ("color_at", "left", "above", "nearest", "count", "two_image_more",
                  "video_moved", "video_where")
SINGLE_IMAGE_TYPES = QUESTION_TYPES[:5]
VIDEO_TYPES = ("video_moved", "video_where")
# question_type id of tfds samples (one past the synthetic ones); -1 marks eval padding rows.
TFDS_QUESTION_TYPE = len(QUESTION_TYPES)
PADDING_QUESTION_TYPE = -1
EVAL_CONDITIONS = ("as_trained", "larger_grid", "longer_prefix", "multi_image")
MIN_CELL = 7  # pixels per cell; at 6 the circle and the cross have the same mask.
MAX_NUMBER = 32  # "0".."32" are words; larger numbers still encode (byte fallback).

# Prefix filler: no colors, shapes, numbers or position words, so it carries no answer.
FILLER_WORDS = (
    "please", "look", "at", "this", "picture", "carefully", "and", "then", "answer", "a",
    "short", "question", "about", "it", "here", "we", "have", "some", "objects", "on", "grid",
    "now", "tell", "me", "quickly", "think", "before", "you", "reply", "an", "image", "of")
_TEMPLATE_WORDS = (
    "what", "color", "is", "at", "row", "column", "?", "which", "further", "left", ",", "the",
    "or", "higher", "up", "shape", "nearest", "to", "how", "many", "shapes", "are", "there",
    "image", "has", "more", "moved", "where", "did", "that", "go", "none", "first", "second")
WORDS = tuple(dict.fromkeys(
    COLOR_NAMES + SHAPES + tuple(str(i) for i in range(MAX_NUMBER + 1)) + _TEMPLATE_WORDS
    + FILLER_WORDS))


@functools.lru_cache(maxsize=None)
def make_tokenizer() -> tok.Tokenizer:
  """The tokenizer of the VLM task (synthetic words + byte fallback); shared with tfds."""
  return tok.Tokenizer(WORDS)


# ---------------------------------------------------------------------------------------------
# Config.


def default_config() -> ml_collections.ConfigDict:
  """Every key of the VLM data config, with its default."""
  c = ml_collections.ConfigDict()
  c.name = "spatial_qa"
  # Images: S x S pixels, patch p, merge m -> (S/(p m)) x (S/(p m)) visual tokens per image.
  c.image_size = 32
  c.patch_size = 4
  c.merge_size = 2          # the 2x2 patch merge of INTERFACES.md §4 (models must agree).
  c.grid_size = 4           # scene grid g x g; cell = image_size / grid_size pixels (>= 7).
  c.min_objects = 3         # objects per scene (distinct cells, distinct (color, shape)).
  c.max_objects = 6
  c.p_empty_cell = 0.25     # color_at: chance the asked cell is empty (answer "none").
  # Weights of the question types (normalised; 0 removes a type).
  c.question_mix = ml_collections.ConfigDict(dict(
      color_at=1.0, left=1.0, above=1.0, nearest=1.0, count=1.0, two_image_more=0.5,
      video_moved=0.25, video_where=0.25))
  c.video_as = "video"      # "video": one rope.Video(2, h, w); "frames": two rope.Image.
  c.min_prefix_len = 0      # random filler words before the first image.
  c.max_prefix_len = 8
  c.max_images = 2          # N of "images" [B, N, S, S, 3].
  c.max_len = 64            # L; must fit the longest sample (see required_max_len).
  c.prefetch = 2            # training batches built ahead in a background thread (0: none).
  # Positions: rope.multimodal_positions(segments, scheme, **options); unset options (None)
  # take the rope defaults. Options that do not belong to the scheme raise.
  c.scheme = "mrope"        # vanilla | mrope | spatial_reset | videorope | v2pe | circle
  c.scheme_options = ml_collections.ConfigDict(dict(
      temporal_stride=config_dict.placeholder(float),   # mrope / spatial_reset / videorope
      visual_stride=config_dict.placeholder(float),     # v2pe
      alpha=config_dict.placeholder(float),             # circle
      radius=config_dict.placeholder(object),           # circle: number, "auto", "auto-k"
      dff_rate=config_dict.placeholder(float),          # circle
      move_to_origin=config_dict.placeholder(bool),     # circle
      move_to_positive=config_dict.placeholder(object),  # circle: False, "auto", number
  ))
  c.age = False             # also emit "mrope" ids as positions_alt (Circle-RoPE's AGE).
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


def token_grid(config) -> tuple[int, int]:
  """(h, w) visual tokens per image after the merge."""
  s = config.image_size // (config.patch_size * config.merge_size)
  return s, s


def scheme_options(config) -> dict:
  """The options passed to rope.multimodal_positions (the set ones)."""
  return {k: v for k, v in config.scheme_options.items() if v is not None}


def _mix(config) -> np.ndarray:
  return np.array([float(config.question_mix[t]) for t in QUESTION_TYPES])


def _question_len(qtype: str) -> int:
  """Number of question words of a type (constant per type by construction)."""
  obj = Obj(0, 0, "red", "square")
  words = {
      "color_at": _q_color_at(1, 1), "left": _q_pair("left", obj, obj),
      "above": _q_pair("above", obj, obj), "nearest": _q_nearest(obj),
      "count": _q_count("red"), "two_image_more": _q_two_image("red"),
      "video_moved": _q_video_moved(), "video_where": _q_video_where()}[qtype]
  return len(words)


ANSWER_LEN = dict(color_at=1, left=2, above=2, nearest=2, count=1, two_image_more=1,
                  video_moved=2, video_where=2)


def _num_visual_tokens(config, qtype: str) -> int:
  """Visual placeholders + VISION_START/END tokens of a sample of this type."""
  h, w = token_grid(config)
  if qtype in VIDEO_TYPES and config.video_as == "video":
    return 2 * h * w + 2
  if qtype in VIDEO_TYPES or qtype == "two_image_more":
    return 2 * (h * w + 2)
  return h * w + 2


def required_max_len(config) -> int:
  """Length of the longest sample the config can produce (types with weight > 0)."""
  if config.tfds.name:
    raise ValueError("required_max_len: tfds samples have no fixed maximum; set max_len.")
  lens = [1 + config.max_prefix_len + _num_visual_tokens(config, t) + _question_len(t)
          + ANSWER_LEN[t] + 1
          for t, wgt in zip(QUESTION_TYPES, _mix(config)) if wgt > 0]
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
  if config.scheme not in rope.SCHEMES:
    raise ValueError(f"scheme={config.scheme!r}; allowed: {rope.SCHEMES}.")
  opts = scheme_options(config)
  try:  # Let rope check the option names and values on a one-token sequence.
    rope.multimodal_positions([rope.Text(1), rope.Image(2, 2)], config.scheme, **opts)
  except ValueError as e:
    raise ValueError(f"scheme_options {opts} for scheme={config.scheme!r}: {e}") from None
  if not 0 <= config.min_prefix_len <= config.max_prefix_len:
    raise ValueError(f"need 0 <= min_prefix_len ({config.min_prefix_len}) <= max_prefix_len "
                     f"({config.max_prefix_len}).")
  if config.video_as not in ("video", "frames"):
    raise ValueError(f"video_as={config.video_as!r}; allowed: 'video', 'frames'.")
  if config.tfds.name:
    return
  if set(config.question_mix.keys()) != set(QUESTION_TYPES):
    raise ValueError(f"question_mix keys {sorted(config.question_mix.keys())} must be "
                     f"exactly {QUESTION_TYPES}.")
  mix = _mix(config)
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
  has_video = sum(config.question_mix[t] for t in VIDEO_TYPES) > 0
  if config.scheme == "circle" and config.video_as == "video" and has_video:
    raise ValueError(
        "video_as='video' with scheme='circle': Circle-RoPE cannot place a Video(2, h, w) "
        "segment. Set video_as='frames' (two Image segments) or question_mix.video_moved = "
        "question_mix.video_where = 0.")
  need = required_max_len(config)
  if config.max_len < need:
    raise ValueError(f"max_len={config.max_len} is shorter than the longest sample ({need}) "
                     f"of this config.")


def _round_up(n: int, k: int = 8) -> int:
  return -(-n // k) * k


def eval_configs(config) -> dict[str, ml_collections.ConfigDict]:
  """The evaluation conditions, each a full data config (max_len grown to fit).

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
    if sum(d.question_mix[t] for t in QUESTION_TYPES) <= 0:
      d.question_mix.two_image_more = 1.0
      if not (config.scheme == "circle" and config.video_as == "video"):
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
# Scenes and rendering.


@dataclasses.dataclass(frozen=True)
class Obj:
  """One shape of a scene, in cell (row, col)."""
  row: int    # 0-based cell row (top = 0)
  col: int
  color: str
  shape: str

  @property
  def name(self) -> tuple[str, str]:
    return (self.color, self.shape)


Scene = tuple  # tuple[Obj, ...]


def sample_scene(rng: np.random.Generator, grid_size: int, min_objects: int,
                 max_objects: int) -> Scene:
  """Objects in distinct cells with distinct (color, shape) pairs, sorted by cell."""
  n = int(rng.integers(min_objects, max_objects + 1))
  cells = rng.choice(grid_size * grid_size, n, replace=False)
  kinds = rng.choice(len(COLORS) * len(SHAPES), n, replace=False)
  objs = [Obj(int(c) // grid_size, int(c) % grid_size, COLOR_NAMES[k // len(SHAPES)],
               SHAPES[k % len(SHAPES)]) for c, k in zip(cells, kinds)]
  return tuple(sorted(objs, key=lambda o: (o.row, o.col)))


@functools.lru_cache(maxsize=None)
def shape_masks(cell: int) -> dict[str, np.ndarray]:
  """bool [cell, cell] mask of each shape, with a 1-pixel empty margin."""
  if cell < MIN_CELL:
    raise ValueError(f"cell={cell} pixels is below {MIN_CELL}: shapes would look alike.")
  b = cell - 2
  c = np.arange(b) + 0.5 - b / 2     # pixel centres relative to the box centre
  y, x = np.meshgrid(c, c, indexing="ij")
  rows = np.arange(b)[:, None]
  inner = {
      "square": np.ones((b, b), bool),
      "circle": y ** 2 + x ** 2 <= (b / 2) ** 2,
      "triangle": np.abs(x) <= (rows + 1) / 2,      # apex up, widening by 1 px per row
      "cross": (np.abs(x) <= max(0.5, b / 6)) | (np.abs(y) <= max(0.5, b / 6)),
  }
  out = {}
  for k, m in inner.items():
    full = np.zeros((cell, cell), bool)
    full[1:-1, 1:-1] = m
    full.flags.writeable = False
    out[k] = full
  return out


def render(scene: Scene, image_size: int, grid_size: int) -> np.ndarray:
  """float32 [S, S, 3] in [0, 1]: black background, each object in its cell."""
  cell = image_size // grid_size
  masks = shape_masks(cell)
  rgb = dict(COLORS)
  img = np.zeros((image_size, image_size, 3), np.float32)
  for o in scene:
    patch = img[o.row * cell:(o.row + 1) * cell, o.col * cell:(o.col + 1) * cell]
    patch[masks[o.shape]] = rgb[o.color]
  return img


# ---------------------------------------------------------------------------------------------
# Question templates (word lists) and answers.


def _q_color_at(r: int, c: int):
  return ["what", "color", "is", "at", "row", str(r), "column", str(c), "?"]


def _q_pair(kind: str, a: Obj, b: Obj):
  head = ["which", "is", "further", "left"] if kind == "left" else ["which", "is", "higher",
                                                                     "up"]
  return head + [",", "the", *a.name, "or", "the", *b.name, "?"]


def _q_nearest(a: Obj):
  return ["which", "shape", "is", "nearest", "to", "the", *a.name, "?"]


def _q_count(color: str):
  return ["how", "many", color, "shapes", "are", "there", "?"]


def _q_two_image(color: str):
  return ["which", "image", "has", "more", color, "shapes", "?"]


def _q_video_moved():
  return ["which", "shape", "moved", "?"]


def _q_video_where():
  return ["where", "did", "the", "shape", "that", "moved", "go", "?"]


def _count(scene: Scene, color: str) -> int:
  return sum(o.color == color for o in scene)


def _ask(qtype: str, rng: np.random.Generator, config):
  """One attempt at a question: (scenes, question words, answer words) or None to retry."""
  g = config.grid_size
  draw = lambda: sample_scene(rng, g, config.min_objects, config.max_objects)
  scene = draw()
  if qtype == "color_at":
    occupied = {(o.row, o.col): o for o in scene}
    empty = [(r, c) for r in range(g) for c in range(g) if (r, c) not in occupied]
    if empty and rng.random() < config.p_empty_cell:
      r, c = empty[rng.integers(len(empty))]
      ans = ["none"]
    else:
      o = scene[rng.integers(len(scene))]
      r, c, ans = o.row, o.col, [o.color]
    return (scene,), _q_color_at(r + 1, c + 1), ans
  if qtype in ("left", "above"):
    key = (lambda o: o.col) if qtype == "left" else (lambda o: o.row)
    pairs = [(a, b) for a in scene for b in scene if key(a) < key(b)]
    if not pairs:
      return None
    a, b = pairs[rng.integers(len(pairs))]   # a is further left / higher up
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    return (scene,), _q_pair(qtype, first, second), list(a.name)
  if qtype == "nearest":
    choices = []
    for a in scene:
      d = sorted((((o.row - a.row) ** 2 + (o.col - a.col) ** 2, o) for o in scene
                  if o is not a), key=lambda t: t[0])
      if len(d) == 1 or d[0][0] < d[1][0]:
        choices.append((a, d[0][1]))
    if not choices:
      return None
    a, near = choices[rng.integers(len(choices))]
    return (scene,), _q_nearest(a), list(near.name)
  if qtype == "count":
    color = COLOR_NAMES[rng.integers(len(COLORS))]
    return (scene,), _q_count(color), [str(_count(scene, color))]
  if qtype == "two_image_more":
    other = draw()
    colors = [c for c in COLOR_NAMES if _count(scene, c) != _count(other, c)]
    if not colors:
      return None
    color = colors[rng.integers(len(colors))]
    ans = "first" if _count(scene, color) > _count(other, color) else "second"
    return (scene, other), _q_two_image(color), [ans]
  # Video: one object moves to an empty cell between the two frames.
  occupied = {(o.row, o.col) for o in scene}
  empty = [(r, c) for r in range(g) for c in range(g) if (r, c) not in occupied]
  i = int(rng.integers(len(scene)))
  r, c = empty[rng.integers(len(empty))]
  moved = dataclasses.replace(scene[i], row=r, col=c)
  after = tuple(sorted(scene[:i] + (moved,) + scene[i + 1:], key=lambda o: (o.row, o.col)))
  if qtype == "video_moved":
    return (scene, after), _q_video_moved(), list(moved.name)
  return (scene, after), _q_video_where(), [str(r + 1), str(c + 1)]


# ---------------------------------------------------------------------------------------------
# Samples: token ids + segment layout + images.


@dataclasses.dataclass
class Sample:
  """One unpadded sample.

  tokens: int32 [n]; layout: the segments as hashable tuples ("text", n) / ("image", h, w) /
  ("video", t, h, w) in order; images: float32 [k, S, S, 3] (k-th image = k-th h*w block of
  IMAGE placeholders); prompt_len: tokens before the answer; question_type: int id.
  scenes / question / answer: the generating data (words), for inspection and tests.
  """
  tokens: np.ndarray
  layout: tuple
  images: np.ndarray
  prompt_len: int
  question_type: int
  scenes: tuple = ()
  question: tuple = ()
  answer: tuple = ()


def pack(chunks: Sequence, images: np.ndarray, answer_ids: Sequence[int],
         question_type: int, **extra) -> Sample:
  """Builds a Sample from text chunks (lists of ids) and visual blocks.

  Args:
    chunks: the prompt in order; each item a list of token ids (text) or a tuple
      ("visual", t, h, w) for t frames of an h x w token grid (t = 1: an image).
      BOS is prepended; VISION_START/END are the caller's (they are text).
    images: float32 [k, S, S, 3], one per frame in order.
    answer_ids: answer token ids; EOS is appended.
    question_type: id stored in the sample.
    **extra: scenes / question / answer for the Sample.

  Returns:
    the Sample; consecutive text chunks form one ("text", n) segment.
  """
  ids = [tok.BOS]
  layout = []
  run = 1
  for ch in chunks:
    if isinstance(ch, tuple) and ch and ch[0] == "visual":
      _, t, h, w = ch
      if run:
        layout.append(("text", run))
      layout.append(("image", h, w) if t == 1 else ("video", t, h, w))
      ids.extend([tok.IMAGE] * (t * h * w))
      run = 0
    else:
      ids.extend(int(i) for i in ch)
      run += len(ch)
  prompt_len = len(ids)
  ids.extend(int(i) for i in answer_ids)
  ids.append(tok.EOS)
  layout.append(("text", run + len(answer_ids) + 1))
  return Sample(np.asarray(ids, np.int32), tuple(layout), images, prompt_len,
                question_type, **extra)


def prefix_words(rng: np.random.Generator, config) -> list[str]:
  """min_prefix_len..max_prefix_len filler words (uniform length, uniform words)."""
  n = int(rng.integers(config.min_prefix_len, config.max_prefix_len + 1))
  return [FILLER_WORDS[i] for i in rng.integers(len(FILLER_WORDS), size=n)]


SPLITS = {"train": 0, "eval": 1}


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of sample `index` of `split`: a pure function of (seed, split, index)."""
  return np.random.default_rng([int(seed), SPLITS[split], int(index)])


@dataclasses.dataclass(frozen=True)
class GenSpec:
  """The generation settings of a data config as plain values (ConfigDict reads are slow)."""
  image_size: int
  patch_size: int
  merge_size: int
  grid_size: int
  min_objects: int
  max_objects: int
  p_empty_cell: float
  min_prefix_len: int
  max_prefix_len: int
  video_as: str
  probs: tuple   # normalised question_mix in QUESTION_TYPES order

  @classmethod
  def from_config(cls, config) -> "GenSpec":
    mix = _mix(config)
    return cls(*(config[f.name] for f in dataclasses.fields(cls)[:-1]),
               probs=tuple(mix / mix.sum()))


def make_sample(config, *, seed: int, split: str, index: int) -> Sample:
  """Sample `index` of the synthetic `split` ("train" | "eval") under `seed`.

  `config`: a data config or its GenSpec (faster when making many samples).
  """
  config = config if isinstance(config, GenSpec) else GenSpec.from_config(config)
  rng = sample_rng(seed, split, index)
  tk = make_tokenizer()
  qtype = QUESTION_TYPES[rng.choice(len(QUESTION_TYPES), p=config.probs)]
  prefix = prefix_words(rng, config)
  for _ in range(1000):
    made = _ask(qtype, rng, config)
    if made is not None:
      break
  else:
    raise ValueError(f"could not build a {qtype!r} question in 1000 scenes; the config's "
                     f"min_objects={config.min_objects} is too small for it.")
  scenes, question, answer = made
  images = np.stack([render(s, config.image_size, config.grid_size) for s in scenes])
  h, w = token_grid(config)
  vs, ve = [tok.VISION_START], [tok.VISION_END]
  chunks = [tk.encode(prefix)]
  if qtype in VIDEO_TYPES and config.video_as == "video":
    chunks += [vs, ("visual", 2, h, w), ve]
  else:
    for _ in scenes:
      chunks += [vs, ("visual", 1, h, w), ve]
  chunks.append(tk.encode(question))
  return pack(chunks, images, tk.encode(answer), QUESTION_TYPES.index(qtype),
              scenes=scenes, question=tuple(question), answer=tuple(answer))


# ---------------------------------------------------------------------------------------------
# Positions (cached per segment layout) and batching.


PositionsFn = Callable[[Sequence], tuple]


def layout_segments(layout: tuple) -> list:
  """The rope segments of a layout tuple."""
  make = {"text": rope.Text, "image": rope.Image, "video": rope.Video}
  return [make[kind](*dims) for kind, *dims in layout]


def config_positions_fn(config) -> PositionsFn:
  """The positions function of a data config: its scheme (+ M-RoPE ids as alt if age).

  Returns:
    fn(segments) -> (positions [n, 3], next_position, positions_alt [n, 3],
    next_position_alt), the signature of `models.vlm.sequence_positions(model_cfg, .)`.
  """
  scheme, opts, age = config.scheme, scheme_options(config), bool(config.age)

  def fn(segments):
    pos, nxt = rope.multimodal_positions(segments, scheme, **opts)
    if not age:
      return pos, nxt, pos, nxt
    # AGE: the other layers use the M-RoPE ids of the same segments (circle_rope.md §7).
    alt, nxt_alt = rope.multimodal_positions(segments, "mrope")
    return pos, nxt, alt, nxt_alt

  return fn


class PositionTable:
  """A positions function memoised per distinct layout.

  Samples of a config share few layouts (question length is fixed per type, so a layout is
  fixed by type, prefix length and visual layout), so after warm-up a batch costs only array
  copies.
  """

  def __init__(self, fn: PositionsFn):
    self.fn = fn
    self._cache = {}

  def __call__(self, layout: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(positions, positions_alt), float32 [n, 3] each, of the layout's tokens."""
    out = self._cache.get(layout)
    if out is None:
      pos, _, alt, _ = self.fn(layout_segments(layout))
      out = tuple(np.asarray(p, np.float32) for p in (pos, alt))
      n = sum(d[0] if k == "text" else int(np.prod(d)) for k, *d in layout)
      for p in out:
        if p.shape != (n, 3):
          raise ValueError(f"positions_fn returned shape {p.shape} for a layout of {n} "
                           f"tokens; expected ({n}, 3).")
        p.flags.writeable = False
      self._cache[layout] = out
    return out

  def __len__(self):
    return len(self._cache)


class Collator:
  """Pads samples into the INTERFACES.md §4 batch; positions via a cached PositionTable.

  Args:
    config: the data config (max_len, max_images, image_size, scheme, ...).
    positions_fn: optional fn(segments) -> (positions, next_position, positions_alt,
      next_position_alt) replacing the config's scheme, e.g.
      `functools.partial(models.vlm.sequence_positions, model_cfg)` so the ids come from the
      model's own scheme settings.
  """

  def __init__(self, config, positions_fn: PositionsFn | None = None):
    self.max_len = config.max_len
    self.max_images = config.max_images
    self.image_size = config.image_size
    self.table = PositionTable(positions_fn or config_positions_fn(config))

  def __call__(self, samples: Sequence[Sample], num_padding: int = 0) -> dict:
    """Batch of len(samples) + num_padding rows (padding rows: all False, question_type -1).

    Returns:
      dict of numpy arrays (B rows, L = max_len, N = max_images, S = image_size):
        tokens int32 [B, L]: PAD after EOS.
        images float32 [B, N, S, S, 3] in [0, 1], zeros where absent.
        image_valid bool [B, N].
        positions, positions_alt float32 [B, L, 3]: padding slots 0.
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
      by_layout.setdefault(s.layout, []).append(b)
    idx = np.arange(L)
    valid = idx[None, :] < lengths[:, None]
    loss_mask = valid & (idx[None, :] >= prompt_len[:, None])
    batch = dict(tokens=tokens, images=images, image_valid=image_valid, valid=valid,
                 segment_ids=valid.astype(np.int32), loss_mask=loss_mask,
                 prompt_len=prompt_len, question_type=qtype)
    pos = np.zeros((2, bsz, L, 3), np.float32)
    for layout, rows in by_layout.items():   # one broadcast copy per distinct layout
      p = np.stack(self.table(layout))
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
    from data import vlm_tfds  # pylint: disable=g-import-not-at-top  (avoids a cycle)
    return vlm_tfds.make_sample_fn(config, seed=seed, split=split)
  spec = GenSpec.from_config(config)
  return (lambda i: make_sample(spec, seed=seed, split=split, index=i)), None


def make_train_iterator(config, *, global_batch_size: int, seed: int, start_step: int = 0,
                        process_index: int = 0, process_count: int = 1,
                        positions_fn: PositionsFn | None = None) -> Iterator[dict]:
  """Endless iterator of LOCAL training batches (see Collator for the keys).

  The global batch of step s holds samples s*G .. s*G+G-1 of the "train" split (a pure
  function of (seed, s)); process p gets rows [p*b, (p+1)*b), b = G // process_count.
  `positions_fn`: see Collator (default: the config's scheme).
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
               positions_fn: PositionsFn | None = None):
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
                       positions_fn: PositionsFn | None = None) -> EvalIterable:
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
