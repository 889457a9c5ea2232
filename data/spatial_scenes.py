"""Synthetic spatial question answering: scenes, questions and unpadded samples (pure numpy).

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
  8 video_elapsed   (a clip of T frames, its own seconds per frame) "the shape moved at what
                    second ?" -> "4": the time, in seconds from the first frame, of the first
                    frame showing the moved shape in its new cell (frame k at k * seconds per
                    frame). Opt-in: weight 0 in the default question_mix.

Rows and columns are 1-based, counted from the top-left. Every (color, shape) pair occurs at
most once per scene, so "the red square" names one object; questions are only asked when the
answer is unique (different columns for `left`, different rows for `above`, a unique nearest
object under the Euclidean distance between cell centres for `nearest`, different counts for
`two_image_more`). Every answer has a fixed number of words per question type, so exact match
(of the answer tokens and EOS) is meaningful.

Clips (`video_elapsed`): T frames, T uniform in clip_min_frames..clip_max_frames (default 2..4),
and a frame interval drawn per sample from clip_seconds_per_frame (default 1, 2 or 3 seconds).
One object moves to an empty cell at frame k, uniform in 1..T-1 (frames 0..k-1 show the first
scene, frames k..T-1 the second); the answer is k * seconds per frame, an integer word. The frames
say which frame changed, but nothing in the pixels or the tokens says how many seconds lie
between frames: that is only in `Sample.seconds_per_frame`, which the input pipeline gives to
the position ids of schemes with absolute time (Qwen2.5-VL; models/vlm_schemes.py
`Scheme.absolute_time`), as Qwen2.5-VL sees a video's frame rate only through its time ids.
Without it the answer is k * (1, 2 or 3) with the interval unknown: at most 1/3 of the answers
can be right.

Token sequence of a sample (ids from `data.tokenizer`):

  BOS prefix... VISION_START IMAGE*(h*w) VISION_END [VISION_START IMAGE*(h*w) VISION_END]
      question... answer... EOS

The prefix is 0..N random filler words, so the same question appears at many offsets. A
two-frame video is one `rope.Video(2, h, w)` block (`video_as="video"`, 2*h*w placeholders,
frame 0 first) or two `rope.Image(h, w)` blocks like two images (`video_as="frames"`); a clip
likewise is one `rope.Video(T, h, w)` or T images.

Sample `i` of a split is a pure function of `(seed, split, i)`, so training resumes from a step
number alone. This module knows nothing of batches, position ids or models: the input
pipeline (`data/vlm_pipeline.py`) pads samples into batches and asks the model's rotary
scheme for the ids of each sample's segment `layout`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from data import tokenizer as tok

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
# New types are appended (ids and the draw of existing types stay as they were).
QUESTION_TYPES = ("color_at", "left", "above", "nearest", "count", "two_image_more",
                  "video_moved", "video_where", "video_elapsed")
SINGLE_IMAGE_TYPES = QUESTION_TYPES[:5]
VIDEO_TYPES = ("video_moved", "video_where", "video_elapsed")
CLIP_TYPES = ("video_elapsed",)   # T-frame clips with their own seconds per frame.
# Types a question_mix may leave out (weight 0): configs written before they existed.
OPT_IN_TYPES = ("video_elapsed",)
# Clip settings of data configs that predate them (vlm_pipeline.default_config has the keys).
CLIP_DEFAULTS = dict(clip_min_frames=2, clip_max_frames=4,
                     clip_seconds_per_frame=(1.0, 2.0, 3.0))
# question_type id of tfds samples (one past the synthetic ones); -1 marks eval padding rows.
TFDS_QUESTION_TYPE = len(QUESTION_TYPES)
PADDING_QUESTION_TYPE = -1
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
# Sizes fixed by a data config (read by the input pipeline too).


def token_grid(config) -> tuple[int, int]:
  """(h, w) visual tokens per image after the merge."""
  s = config.image_size // (config.patch_size * config.merge_size)
  return s, s


def mix_weights(config) -> np.ndarray:
  """The question_mix weights in QUESTION_TYPES order (not normalised); an opt-in type that
  the mix does not list has weight 0."""
  mix = config.question_mix
  return np.array([float(mix[t]) if t in mix or t not in OPT_IN_TYPES else 0.0
                   for t in QUESTION_TYPES])


def clip_setting(config, key: str):
  """A clip setting of a data config (CLIP_DEFAULTS for configs that predate the keys)."""
  return config[key] if key in config else CLIP_DEFAULTS[key]


def num_frames(config, qtype: str) -> int:
  """Images (frames) of the longest sample of a question type."""
  if qtype in CLIP_TYPES:
    return int(clip_setting(config, "clip_max_frames"))
  return 2 if qtype in VIDEO_TYPES or qtype == "two_image_more" else 1


def question_len(qtype: str) -> int:
  """Number of question words of a type (constant per type by construction)."""
  obj = Obj(0, 0, "red", "square")
  words = {
      "color_at": _q_color_at(1, 1), "left": _q_pair("left", obj, obj),
      "above": _q_pair("above", obj, obj), "nearest": _q_nearest(obj),
      "count": _q_count("red"), "two_image_more": _q_two_image("red"),
      "video_moved": _q_video_moved(), "video_where": _q_video_where(),
      "video_elapsed": _q_video_elapsed()}[qtype]
  return len(words)


ANSWER_LEN = dict(color_at=1, left=2, above=2, nearest=2, count=1, two_image_more=1,
                  video_moved=2, video_where=2, video_elapsed=1)


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


def _q_video_elapsed():
  # Words of the existing vocabulary only, so the tokenizer (and every model's vocab size)
  # stays as it was.
  return ["the", "shape", "moved", "at", "what", "second", "?"]


def elapsed_answer(frame: int, seconds_per_frame: float) -> str:
  """The video_elapsed answer word: seconds from the first frame to frame `frame`."""
  seconds = frame * float(seconds_per_frame)
  if seconds != int(seconds):
    raise ValueError(f"clip_seconds_per_frame: {seconds_per_frame} s per frame puts frame "
                     f"{frame} at {seconds} s, not a whole number of seconds.")
  return str(int(seconds))


def _count(scene: Scene, color: str) -> int:
  return sum(o.color == color for o in scene)


def _ask(qtype: str, rng: np.random.Generator, config):
  """One attempt at a question: (scenes, question words, answer words, seconds per frame or
  None) or None to retry."""
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
    return (scene,), _q_color_at(r + 1, c + 1), ans, None
  if qtype in ("left", "above"):
    key = (lambda o: o.col) if qtype == "left" else (lambda o: o.row)
    pairs = [(a, b) for a in scene for b in scene if key(a) < key(b)]
    if not pairs:
      return None
    a, b = pairs[rng.integers(len(pairs))]   # a is further left / higher up
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    return (scene,), _q_pair(qtype, first, second), list(a.name), None
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
    return (scene,), _q_nearest(a), list(near.name), None
  if qtype == "count":
    color = COLOR_NAMES[rng.integers(len(COLORS))]
    return (scene,), _q_count(color), [str(_count(scene, color))], None
  if qtype == "two_image_more":
    other = draw()
    colors = [c for c in COLOR_NAMES if _count(scene, c) != _count(other, c)]
    if not colors:
      return None
    color = colors[rng.integers(len(colors))]
    ans = "first" if _count(scene, color) > _count(other, color) else "second"
    return (scene, other), _q_two_image(color), [ans], None
  # Video: one object moves to an empty cell between the two frames.
  if qtype in CLIP_TYPES:   # draws before the move, so the move code below is shared
    num = int(rng.integers(config.clip_min_frames, config.clip_max_frames + 1))
    rates = config.clip_seconds_per_frame
    seconds_per_frame = float(rates[int(rng.integers(len(rates)))])
    frame = int(rng.integers(1, num))    # first frame showing the moved shape
  occupied = {(o.row, o.col) for o in scene}
  empty = [(r, c) for r in range(g) for c in range(g) if (r, c) not in occupied]
  i = int(rng.integers(len(scene)))
  r, c = empty[rng.integers(len(empty))]
  moved = dataclasses.replace(scene[i], row=r, col=c)
  after = tuple(sorted(scene[:i] + (moved,) + scene[i + 1:], key=lambda o: (o.row, o.col)))
  if qtype in CLIP_TYPES:
    return ((scene,) * frame + (after,) * (num - frame), _q_video_elapsed(),
            [elapsed_answer(frame, seconds_per_frame)], seconds_per_frame)
  if qtype == "video_moved":
    return (scene, after), _q_video_moved(), list(moved.name), None
  return (scene, after), _q_video_where(), [str(r + 1), str(c + 1)], None


# ---------------------------------------------------------------------------------------------
# Samples: token ids + segment layout + images.


@dataclasses.dataclass
class Sample:
  """One unpadded sample.

  tokens: int32 [n]; layout: the segments as hashable tuples ("text", n) / ("image", h, w) /
  ("video", t, h, w) in order; images: float32 [k, S, S, 3] (k-th image = k-th h*w block of
  IMAGE placeholders); prompt_len: tokens before the answer; question_type: int id.
  scenes / question / answer: the generating data (words), for inspection and tests.
  seconds_per_frame: a clip's frame interval (video_elapsed), None for every other sample;
  not in the tokens: the input pipeline hands it to the position ids of schemes with absolute
  time.
  """
  tokens: np.ndarray
  layout: tuple
  images: np.ndarray
  prompt_len: int
  question_type: int
  scenes: tuple = ()
  question: tuple = ()
  answer: tuple = ()
  seconds_per_frame: float | None = None


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
    **extra: scenes / question / answer / seconds_per_frame for the Sample.

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
  clip_min_frames: int = CLIP_DEFAULTS["clip_min_frames"]
  clip_max_frames: int = CLIP_DEFAULTS["clip_max_frames"]
  clip_seconds_per_frame: tuple = CLIP_DEFAULTS["clip_seconds_per_frame"]

  @classmethod
  def from_config(cls, config) -> "GenSpec":
    mix = mix_weights(config)
    fields = [f.name for f in dataclasses.fields(cls)]
    i = fields.index("probs")
    return cls(*(config[name] for name in fields[:i]), probs=tuple(mix / mix.sum()),
               **{name: (tuple(float(v) for v in clip_setting(config, name))
                         if name == "clip_seconds_per_frame" else int(clip_setting(config, name)))
                  for name in fields[i + 1:]})


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
  scenes, question, answer, seconds_per_frame = made
  rendered = {}   # a clip repeats its two scenes
  for s in scenes:
    if s not in rendered:
      rendered[s] = render(s, config.image_size, config.grid_size)
  images = np.stack([rendered[s] for s in scenes])
  h, w = token_grid(config)
  vs, ve = [tok.VISION_START], [tok.VISION_END]
  chunks = [tk.encode(prefix)]
  if qtype in VIDEO_TYPES and config.video_as == "video":
    chunks += [vs, ("visual", len(scenes), h, w), ve]
  else:
    for _ in scenes:
      chunks += [vs, ("visual", 1, h, w), ve]
  chunks.append(tk.encode(question))
  return pack(chunks, images, tk.encode(answer), QUESTION_TYPES.index(qtype),
              scenes=scenes, question=tuple(question), answer=tuple(answer),
              seconds_per_frame=seconds_per_frame)
