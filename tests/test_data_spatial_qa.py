"""Tests of the VLM data: tokenizer, synthetic spatial QA (data/spatial_scenes.py), batching and
positions (data/vlm_pipeline.py, ids from the model scheme's entry), tfds path.

The answer check is an independent re-derivation: it reads the scene back from the rendered
pixels and the question back from the decoded tokens, and answers with its own code.
"""
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data import spatial_scenes
from data import tokenizer as tok
from data import vlm_pipeline as pipe
from models import vlm
from models import vlm_schemes
import rope


def _model(scheme="mrope", **options):
  """A model config whose scheme (and position options) decide the data's ids."""
  m = vlm.default_config()
  m.scheme = scheme
  for k, v in options.items():
    m[k] = v
  return m


def _fn(model=None):
  return vlm_schemes.positions_fn(model or _model())


def _train_it(config, model=None, **kw):
  return pipe.make_train_iterator(config, positions_fn=_fn(model), **kw)


def _eval_it(config, model=None, **kw):
  return pipe.make_eval_iterator(config, positions_fn=_fn(model), **kw)

# The color table as the task statement fixes it (independent of spatial_scenes.COLORS).
RGB_NAMES = {(1, 0, 0): "red", (0, 1, 0): "green", (0, 0, 1): "blue", (1, 1, 0): "yellow",
             (1, 0, 1): "magenta", (0, 1, 1): "cyan"}


# --------------------------------------------------------------------------------------------
# Tokenizer.


def test_tokenizer_special_ids_and_roundtrip():
  assert (tok.PAD, tok.BOS, tok.EOS, tok.IMAGE, tok.VISION_START, tok.VISION_END) == (
      0, 1, 2, 3, 4, 5)
  tk = spatial_scenes.make_tokenizer()
  assert tk.vocab_size == tok.WORD_OFFSET + len(spatial_scenes.WORDS)
  text = "Which is further LEFT, the red square or the blue circle?"
  ids = tk.encode(text)
  assert all(i >= tok.WORD_OFFSET for i in ids)            # all known words, one id each
  assert len(ids) == 13
  assert tk.decode(ids) == "which is further left , the red square or the blue circle ?"
  for text in ["zebra crossing near the red Zürich tram ?", "naïve ünïcödé 12345 x_y",
               "unknown", "", "  a  b "]:
    ids = tk.encode(text)
    assert tk.decode(ids) == tok.normalize(text)
  # Unknown words are bytes; special ids decode to nothing unless asked.
  ids = tk.encode("zebra red")
  assert ids[:-1] == [tok.BYTE_OFFSET + b for b in b"zebra"] and ids[-1] == tk.word_id("red")
  assert tk.decode([tok.BOS, tok.IMAGE] + ids + [tok.EOS, tok.PAD]) == "zebra red"
  assert tk.decode([tok.BOS, tok.IMAGE], skip_special=False) == "<bos> <image>"
  with pytest.raises(ValueError, match="ids"):
    tk.decode([tk.vocab_size])
  with pytest.raises(ValueError, match="words"):
    tok.Tokenizer(["Red"])
  with pytest.raises(ValueError, match="duplicates"):
    tok.Tokenizer(["red", "red"])


# --------------------------------------------------------------------------------------------
# Independent re-derivation of scenes (from pixels) and answers (from the question text).


def _shape_from_mask(m):
  """Classifies a shape mask by geometry: square / triangle / circle / cross."""
  rows, cols = np.nonzero(m)
  box = m[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  if box.all():
    return "square"
  top, bottom = box[0].sum(), box[-1].sum()
  if top < bottom:
    return "triangle"
  assert top == bottom and not box[0, 0]
  return "circle" if box[1, 1] else "cross"


def _read_scene(image, grid):
  """{(row, col): (color, shape)} read back from a rendered image [S, S, 3]."""
  cell = image.shape[0] // grid
  scene = {}
  for r in range(grid):
    for c in range(grid):
      px = image[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
      on = px.any(-1)
      if not on.any():
        continue
      colors = {tuple(v) for v in px[on].astype(int).tolist()}
      assert len(colors) == 1 and np.isin(px, (0.0, 1.0)).all(), colors
      assert not on[0].any() and not on[:, 0].any()   # the margin keeps cells apart
      scene[(r, c)] = (RGB_NAMES[colors.pop()], _shape_from_mask(on))
  return scene


def _find(scene, color, shape):
  cells = [rc for rc, v in scene.items() if v == (color, shape)]
  assert len(cells) == 1, (color, shape, scene)
  return cells[0]


def _answer(question, scenes, seconds_per_frame=0.0):
  """The answer words, derived from the question text and the scenes read from pixels (and,
  for a clip, its frame interval: in no token or pixel by design)."""
  m = re.fullmatch(r"what color is at row (\d+) column (\d+) \?", question)
  if m:
    v = scenes[0].get((int(m[1]) - 1, int(m[2]) - 1))
    return [v[0]] if v else ["none"]
  m = re.fullmatch(r"which is (further left|higher up) , the (\w+) (\w+) or the (\w+) (\w+) \?",
                   question)
  if m:
    a, b = _find(scenes[0], m[2], m[3]), _find(scenes[0], m[4], m[5])
    axis = 1 if m[1] == "further left" else 0
    assert a[axis] != b[axis]
    return [m[2], m[3]] if a[axis] < b[axis] else [m[4], m[5]]
  m = re.fullmatch(r"which shape is nearest to the (\w+) (\w+) \?", question)
  if m:
    a = np.array(_find(scenes[0], m[1], m[2]))
    dist = {v: np.hypot(*(np.array(rc) - a)) for rc, v in scenes[0].items()
            if v != (m[1], m[2])}
    best = sorted(dist.values())
    assert len(best) == 1 or best[0] < best[1] - 1e-9       # unique nearest
    return list(min(dist, key=dist.get))
  m = re.fullmatch(r"how many (\w+) shapes are there \?", question)
  if m:
    return [str(sum(v[0] == m[1] for v in scenes[0].values()))]
  m = re.fullmatch(r"which image has more (\w+) shapes \?", question)
  if m:
    n0, n1 = (sum(v[0] == m[1] for v in s.values()) for s in scenes)
    assert n0 != n1
    return ["first" if n0 > n1 else "second"]
  if question == "the shape moved at what second ?":
    # The first frame that differs from frame 0; every later frame equals it.
    first = next(k for k, s in enumerate(scenes) if s != scenes[0])
    assert all(s == scenes[first] for s in scenes[first:])
    assert _answer("which shape moved ?", [scenes[0], scenes[first]])   # one object moved
    seconds = first * seconds_per_frame
    assert seconds > 0 and seconds == int(seconds)
    return [str(int(seconds))]
  before, after = scenes
  assert len(before) == len(after)
  gone = set(before.items()) - set(after.items())
  new = set(after.items()) - set(before.items())
  assert len(gone) == 1 and len(new) == 1 and gone.pop()[1] == (obj := new.pop())[1]
  if question == "which shape moved ?":
    return list(obj[1])
  assert question == "where did the shape that moved go ?"
  return [str(obj[0][0] + 1), str(obj[0][1] + 1)]


def _segments_from_tokens(tokens, n_images, hw, video):
  """rope segments read off the token ids (IMAGE runs), independent of Sample.layout."""
  segs, i, n = [], 0, len(tokens)
  while i < n:
    j = i
    is_img = tokens[i] == tok.IMAGE
    while j < n and (tokens[j] == tok.IMAGE) == is_img:
      j += 1
    if not is_img:
      segs.append(rope.Text(j - i))
    elif video:
      assert j - i == n_images * hw[0] * hw[1] and n_images >= 2
      segs.append(rope.Video(n_images, *hw))
    else:
      assert j - i == hw[0] * hw[1]
      segs.append(rope.Image(*hw))
    i = j
  return segs


def _check_batch(config, batch, tk, model=None):
  """Re-derives every answer of a batch and checks tokens, masks and positions (those of
  rope's position design of the model's scheme, and its alternate design if any)."""
  model = model or _model()
  entry = vlm_schemes.SCHEMES.get(model.scheme)
  design = entry.design
  hw = spatial_scenes.token_grid(config)
  for b in range(len(batch["tokens"])):
    opts = entry.position_options(model)
    spf = float(batch["seconds_per_frame"][b])
    if entry.absolute_time:   # Qwen2.5-VL: the clip's rate, else HF's default 1 s per grid
      opts["seconds_per_grid"] = spf or 1.0
    qt = int(batch["question_type"][b])
    if qt == spatial_scenes.PADDING_QUESTION_TYPE:
      assert not batch["valid"][b].any() and not batch["loss_mask"][b].any()
      continue
    toks = batch["tokens"][b][batch["valid"][b]]
    n, p = len(toks), int(batch["prompt_len"][b])
    assert toks[0] == tok.BOS and toks[-1] == tok.EOS
    assert (batch["tokens"][b][n:] == tok.PAD).all() and not batch["valid"][b][n:].any()
    assert (batch["segment_ids"][b] == batch["valid"][b]).all()
    assert (np.nonzero(batch["loss_mask"][b])[0] == np.arange(p, n)).all()
    n_img = int(batch["image_valid"][b].sum())
    assert batch["image_valid"][b][:n_img].all() and not batch["images"][b][n_img:].any()
    # Question = text after the last VISION_END, up to the answer.
    last_ve = np.nonzero(toks == tok.VISION_END)[0][-1]
    question = tk.decode(toks[last_ve + 1:p])
    answer = tk.decode(toks[p:n - 1]).split()
    scenes = [_read_scene(batch["images"][b, k], config.grid_size) for k in range(n_img)]
    assert answer == _answer(question, scenes, spf), (question, scenes)
    assert (spf > 0) == (spatial_scenes.QUESTION_TYPES[qt] == "video_elapsed")
    assert spatial_scenes.QUESTION_TYPES[qt] in (
        "two_image_more", "video_moved", "video_where", "video_elapsed") or n_img == 1
    # Tokens: VISION_START/END around every visual block; positions = rope on the segments.
    video = (toks == tok.VISION_START).sum() == 1 and n_img >= 2
    segs = _segments_from_tokens(toks, n_img, hw, video)
    assert (toks == tok.VISION_START).sum() == (toks == tok.VISION_END).sum()
    want, _ = rope.multimodal_positions(segs, design, **opts)
    np.testing.assert_array_equal(batch["positions"][b, :n], want)
    assert not batch["positions"][b, n:].any()
    prompt_segs = _segments_from_tokens(toks[:p], n_img, hw, video)
    _, nxt = rope.multimodal_positions(prompt_segs, design, **opts)
    np.testing.assert_allclose(batch["next_position"][b], nxt, rtol=1e-6)
    np.testing.assert_allclose(batch["positions"][b, p:n], nxt + np.arange(n - p)[:, None]
                               * np.ones(3), rtol=1e-6)
    alt_scheme = entry.alt_design or design
    alt_opts = {} if entry.alt_design else opts
    want_alt, nxt_alt = rope.multimodal_positions(segs, alt_scheme, **alt_opts)
    np.testing.assert_array_equal(batch["positions_alt"][b, :n], want_alt)
    np.testing.assert_allclose(batch["next_position_alt"][b],
                               rope.multimodal_positions(prompt_segs, alt_scheme, **alt_opts)[1],
                               rtol=1e-6)
    del nxt_alt


def _config(**kw):
  c = pipe.default_config()
  for k, v in kw.items():
    c[k] = v
  return c


def _clips_config(**kw):
  """The default data with video_elapsed clips in the mix (configs/vlm_common.py `clips`)."""
  c = _config(**{"max_images": 4, "max_len": 88, **kw})
  c.question_mix.video_elapsed = 2.0
  return c


def _types_in_mix(config):
  return {i for i, w in enumerate(spatial_scenes.mix_weights(config)) if w > 0}


@pytest.mark.parametrize("config,model", [
    (_config(), _model("mrope")),
    (_config(video_as="frames"), _model("circle_age")),
    (_config(grid_size=8, image_size=56, max_len=128), _model("mrope_interleave")),
    (_clips_config(), _model("mrope_time")),
    (_clips_config(video_as="frames", max_len=96), _model("mrope_time")),
], ids=["mrope", "circle_frames_age", "grid8_cells_unaligned", "clips_mrope_time",
        "clips_frames"])
def test_every_answer_is_rederived_from_pixels(config, model):
  tk = spatial_scenes.make_tokenizer()
  it = _train_it(config, model, global_batch_size=100, seed=7)
  seen = set()
  for _ in range(3):   # 300 samples
    batch = next(it)
    _check_batch(config, batch, tk, model)
    seen |= set(batch["question_type"].tolist())
  assert seen == _types_in_mix(config)


@pytest.mark.parametrize("condition", pipe.EVAL_CONDITIONS)
def test_eval_conditions(condition):
  train = pipe.default_config()
  config = pipe.eval_configs(train)[condition]
  pipe.validate_config(config)
  ev = _eval_it(config, batch_size=64, num_examples=100)
  batches = list(ev)
  assert len(batches) == 2 and batches[1]["tokens"].shape == (64, config.max_len)
  assert (batches[1]["question_type"][36:] == spatial_scenes.PADDING_QUESTION_TYPE).all()
  for batch in batches:
    _check_batch(config, batch, spatial_scenes.make_tokenizer())
  # Re-iterable and deterministic.
  again = list(ev)
  for b1, b2 in zip(batches, again):
    for k in b1:
      np.testing.assert_array_equal(b1[k], b2[k])
  qt = np.concatenate([b["question_type"][b["question_type"] >= 0] for b in batches])
  prefix = np.concatenate([
      [int(np.nonzero(t == tok.VISION_START)[0][0]) - 1 for t in b["tokens"] if t[0] == tok.BOS]
      for b in batches])
  if condition == "larger_grid":
    assert config.grid_size == 8 and spatial_scenes.token_grid(config) == (8, 8)
    assert batches[0]["images"].shape[2:] == (64, 64, 3)
  elif condition == "longer_prefix":
    assert prefix.min() >= 24 and prefix.max() <= 40
    assert prefix.min() > train.max_prefix_len
  elif condition == "multi_image":
    assert set(qt.tolist()) <= {5, 6, 7} and len(set(qt.tolist())) == 3
  else:
    assert 0 <= prefix.min() and prefix.max() <= train.max_prefix_len
    assert set(qt.tolist()) == _types_in_mix(train)


# --------------------------------------------------------------------------------------------
# Determinism and sharding.


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_deterministic_per_seed_and_index_and_resumable():
  c = pipe.default_config()
  s1 = spatial_scenes.make_sample(c, seed=3, split="train", index=12345)
  s2 = spatial_scenes.make_sample(c, seed=3, split="train", index=12345)
  assert s1.layout == s2.layout and s1.scenes == s2.scenes
  np.testing.assert_array_equal(s1.tokens, s2.tokens)
  np.testing.assert_array_equal(s1.images, s2.images)
  others = [spatial_scenes.make_sample(c, seed=4, split="train", index=12345),
            spatial_scenes.make_sample(c, seed=3, split="eval", index=12345),
            spatial_scenes.make_sample(c, seed=3, split="train", index=12346)]
  assert all(o.scenes != s1.scenes for o in others)
  # Step 2 of a fresh run == first batch of a run resumed at step 2.
  it = _train_it(c, global_batch_size=8, seed=1)
  full = [next(it) for _ in range(3)]
  resumed = next(_train_it(c, global_batch_size=8, seed=1, start_step=2))
  _assert_batches_equal(full[2], resumed)
  # Two processes get the two halves of the same global batch.
  halves = [next(_train_it(c, global_batch_size=8, seed=1, start_step=1,
                           process_index=p, process_count=2)) for p in range(2)]
  for k in full[1]:
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), full[1][k])
  with pytest.raises(ValueError, match="process_count"):
    _train_it(c, global_batch_size=6, seed=1, process_count=4)


def test_prefetch_keeps_order_and_raises():
  c = pipe.default_config()
  c.prefetch = 0
  plain = _train_it(c, global_batch_size=4, seed=9)
  c.prefetch = 3
  ahead = _train_it(c, global_batch_size=4, seed=9)
  assert isinstance(ahead, pipe.Prefetch)
  for _ in range(5):
    _assert_batches_equal(next(plain), next(ahead))
  ahead.close()

  def failing():
    yield 1
    raise KeyError("boom")

  it = pipe.Prefetch(failing(), 2)
  assert next(it) == 1
  with pytest.raises(KeyError, match="boom"):
    next(it)
  assert list(pipe.Prefetch(iter(range(4)), 1)) == [0, 1, 2, 3]


def test_answers_are_balanced():
  """Answers must not be guessable from the question alone (e.g. always the first object)."""
  c = pipe.default_config()
  firsts = {"left": [], "above": []}
  answers = {t: set() for t in spatial_scenes.QUESTION_TYPES}
  for i in range(600):
    s = spatial_scenes.make_sample(c, seed=0, split="train", index=i)
    t = spatial_scenes.QUESTION_TYPES[s.question_type]
    answers[t].add(s.answer)
    if t in firsts:
      firsts[t].append(s.answer == s.question[6:8])
  for t, f in firsts.items():
    assert 0.3 < np.mean(f) < 0.7, t
  assert ("none",) in answers["color_at"] and len(answers["color_at"]) == 7
  assert answers["two_image_more"] == {("first",), ("second",)}
  assert len(answers["count"]) >= 3 and len(answers["video_where"]) >= 8


# --------------------------------------------------------------------------------------------
# Config validation and the positions cache.


@pytest.mark.parametrize("changes,match", [
    (dict(max_len=40), "max_len"),
    (dict(image_size=30), "image_size"),
    (dict(grid_size=8), "grid_size"),
    (dict(grid_size=5), "grid_size"),
    (dict(max_objects=24), "max_objects"),
    (dict(max_images=1), "max_images"),
    (dict(video_as="clip"), "video_as"),
])
def test_validate_config_names_the_option(changes, match):
  with pytest.raises(ValueError, match=match):
    pipe.validate_config(_config(**changes))


def test_position_options_come_from_the_model_config():
  """Each scheme forwards only its own design options; unset ones take rope's defaults."""
  m = _model("circle", circle_radius="auto", temporal_stride=2.0)
  assert vlm_schemes.SCHEMES.get("circle").position_options(m) == {"alpha": 0.5,
                                                                   "radius": "auto"}
  assert vlm_schemes.SCHEMES.get("mrope").position_options(m) == {"temporal_stride": 2.0}
  assert vlm_schemes.SCHEMES.get("mrope").position_options(_model("mrope")) == {}
  assert vlm_schemes.SCHEMES.get("vanilla").position_options(m) == {}
  # The data config has no scheme: the video check belongs to the scheme (tasks/vlm.py).
  c = _config()
  pipe.validate_config(c)
  with pytest.raises(ValueError, match="`scheme`='circle' cannot place Video"):
    next(_train_it(c, _model("circle"), global_batch_size=64, seed=0))


@pytest.mark.parametrize("scheme,opts", [
    ("vanilla", {}), ("v2pe", dict(visual_stride=8.0)), ("videorope", {}),
    ("circle", dict(circle_alpha=0.25, circle_radius="auto")),
    ("mrope", dict(temporal_stride=2.0))])
def test_positions_for_each_scheme(scheme, opts):
  model = _model(scheme, **opts)
  c = _config(video_as="video" if vlm_schemes.SCHEMES.get(scheme).places_video else "frames")
  batch = next(_train_it(c, model, global_batch_size=48, seed=2))
  _check_batch(c, batch, spatial_scenes.make_tokenizer(), model)


def test_position_table_caches_layouts():
  c = pipe.default_config()
  collate = pipe.Collator(c, _fn(_model("mrope")))
  samples = [spatial_scenes.make_sample(c, seed=0, split="train", index=i) for i in range(200)]
  collate(samples)
  layouts = {s.layout for s in samples}
  assert len(collate.table) == len(layouts) < 100   # few layouts: a batch is mostly copies
  # The cached ids are those of a fresh call.
  lay = samples[0].layout
  want, _ = rope.multimodal_positions(pipe.layout_segments(lay), "mrope")
  np.testing.assert_array_equal(collate.table(lay)[0], want)
  np.testing.assert_array_equal(collate.table(lay)[1], want)


def test_positions_fn_override():
  """The pipeline's ids are whatever positions function it is given (any scheme's)."""
  calls = []

  def fn(segments):
    calls.append(tuple(segments))
    pos, nxt = rope.multimodal_positions(segments, "vanilla")
    return pos, nxt, pos + 1, nxt + 1

  c = _config()
  c.prefetch = 0   # no background thread: the calls counted are those of this batch only
  batch = next(pipe.make_train_iterator(c, global_batch_size=16, seed=0, positions_fn=fn))
  assert 0 < len(calls) <= 16
  lengths = batch["valid"].sum(1)
  for b in range(16):
    n, p = lengths[b], batch["prompt_len"][b]
    np.testing.assert_array_equal(batch["positions"][b, :n], np.arange(n)[:, None] * [1, 1, 1])
    np.testing.assert_array_equal(batch["positions_alt"][b, :n], batch["positions"][b, :n] + 1)
    assert batch["next_position"][b] == p and batch["next_position_alt"][b] == p + 1


# --------------------------------------------------------------------------------------------
# tensorflow-datasets path (no TensorFlow: a tiny builder prepared to array_record, and mock).


class SpatialQaTestVqa(tfds.core.GeneratorBasedBuilder):
  """A 5 + 3 record image-question-answer dataset whose content the test knows."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        # Tensor, not Image: encoding an Image feature needs TensorFlow.
        "img": tfds.features.Tensor(shape=(12, 20, 3), dtype=np.uint8),
        "q": tfds.features.Text(),
        "a": tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(5), "validation": self._generate_examples(3)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"img": np.full((12, 20, 3), 10 * i, np.uint8),
                "q": f"what is shown in picture {i} ?", "a": f"Number {i} zebra"}


def _tfds_config(data_dir):
  c = pipe.default_config()
  c.tfds.name = "spatial_qa_test_vqa"
  c.tfds.data_dir = str(data_dir)
  c.tfds.image_key, c.tfds.question_key, c.tfds.answer_key = "img", "q", "a"
  c.max_images = 1
  c.min_prefix_len = c.max_prefix_len = 2
  return c


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  SpatialQaTestVqa(data_dir=str(d), file_format="array_record").download_and_prepare()
  return d


def test_tfds_batches(tfds_dir):
  c = _tfds_config(tfds_dir)
  tk = spatial_scenes.make_tokenizer()
  ev = list(_eval_it(c, batch_size=4))
  assert len(ev) == 1
  batch = ev[0]
  assert (batch["question_type"] == [spatial_scenes.TFDS_QUESTION_TYPE] * 3 + [-1]).all()
  seen = []
  for b in range(3):
    toks = batch["tokens"][b][batch["valid"][b]]
    p = int(batch["prompt_len"][b])
    q = tk.decode(toks[np.nonzero(toks == tok.VISION_END)[0][0] + 1:p])
    i = int(re.fullmatch(r"what is shown in picture (\d) \?", q)[1])
    seen.append(i)
    assert tk.decode(toks[p:-1]) == f"number {i} zebra"
    np.testing.assert_allclose(batch["images"][b, 0], 10 * i / 255, atol=1e-6)
    assert batch["images"][b, 0].shape == (32, 32, 3) and batch["image_valid"][b].all()
  assert sorted(seen) == [0, 1, 2]
  _check_positions_only(c, batch)
  # Training visits every record once per epoch, in a seeded order.
  it = _train_it(c, global_batch_size=5, seed=0)
  for _ in range(2):
    train = next(it)
    firsts = [float(x) for x in train["images"][:, 0, 0, 0, 0]]
    np.testing.assert_allclose(sorted(firsts), [10 * i / 255 for i in range(5)], rtol=1e-6)
  # Too small max_len for the image + answer is a clear error.
  c.max_len = 20
  with pytest.raises(ValueError, match="max_len"):
    next(_train_it(c, global_batch_size=2, seed=0))
  # Eval condition (c) works on tfds too; (d) does not exist there.
  conds = pipe.eval_configs(_tfds_config(tfds_dir))
  assert set(conds) == {"as_trained", "larger_grid", "longer_prefix"}
  big = next(iter(_eval_it(conds["larger_grid"], batch_size=2)))
  assert big["images"].shape == (2, 1, 64, 64, 3)


def _check_positions_only(config, batch):
  for b in range(len(batch["tokens"])):
    if batch["question_type"][b] < 0:
      continue
    toks = batch["tokens"][b][batch["valid"][b]]
    segs = _segments_from_tokens(toks, 1, spatial_scenes.token_grid(config), False)
    want, _ = rope.multimodal_positions(segs, "mrope")   # the ids of _model()
    np.testing.assert_array_equal(batch["positions"][b, :len(toks)], want)


def test_tfds_mock_data_image_feature():
  """With tfds mock data (Image feature, random text) batches have the right format."""

  class SpatialQaMockVqa(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 1)),
          "question": tfds.features.Text(),
          "answer": tfds.features.Text(),
      }))

    def _split_generators(self, dl_manager):
      raise NotImplementedError   # mock_data never prepares

    def _generate_examples(self):
      raise NotImplementedError

  c = pipe.default_config()
  c.tfds.name = "spatial_qa_mock_vqa"
  c.max_len = 96
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    batch = next(_train_it(c, global_batch_size=4, seed=0))
  assert batch["images"].shape == (4, 2, 32, 32, 3) and batch["images"].dtype == np.float32
  assert batch["image_valid"].tolist() == [[True, False]] * 4
  assert (batch["images"][:, 0, ..., 0] == batch["images"][:, 0, ..., 2]).all()   # grey->RGB
  assert batch["tokens"].dtype == np.int32 and batch["loss_mask"].any(1).all()
  assert ((batch["tokens"] == tok.IMAGE).sum(1) == 16).all()
  _check_positions_only(c, batch)
  del SpatialQaMockVqa
