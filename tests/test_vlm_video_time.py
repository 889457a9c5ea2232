"""Clips with a frame rate (video_elapsed) and absolute time ids (scheme mrope_time, Qwen2.5-VL).

The generator's answers are recomputed from each sample's scenes and frame interval; the time
ids are checked against the Qwen2.5-VL rule written out here (t = start + floor(tau * seconds *
2)); schemes without absolute time must give the same ids whatever the rate; the default data
stream must be the one of the generator before clips existed (sha256 recorded from commit
25f8394, main before this change); the clip configs build and train one step.
"""
import dataclasses
import hashlib

import jax
import ml_collections
import numpy as np
import pytest

import rope
import tasks
from configs import vlm_common
from configs import vlm_mrope_time
from data import spatial_scenes
from data import vlm_pipeline as pipe
from models import vlm
from models import vlm_schemes
from trainer import loop
from trainer import mesh as mesh_lib
from trainer import step as step_lib

ELAPSED = spatial_scenes.QUESTION_TYPES.index("video_elapsed")


def _model(scheme):
  m = vlm.default_config()
  m.scheme = scheme
  return m


def _clips_data(**kw):
  """The data config of configs/vlm_common.py's `clips` argument."""
  d = vlm_common.get_config("mrope_time", "smoke,clips").data
  d = ml_collections.ConfigDict(d.to_dict())
  d.update(kw)
  return d


@pytest.fixture(scope="module")
def clip_samples():
  """300 video_elapsed samples of the clip config (only that type: a one-hot mix)."""
  spec = spatial_scenes.GenSpec.from_config(_clips_data())
  only = tuple(float(i == ELAPSED) for i in range(len(spec.probs)))
  spec = dataclasses.replace(spec, probs=only)
  return spec, [spatial_scenes.make_sample(spec, seed=5, split="train", index=i)
                for i in range(300)]


# --------------------------------------------------------------------------------------------
# The generator.


def test_elapsed_answers_are_recomputed_from_the_scenes(clip_samples):
  spec, samples = clip_samples
  tk = spatial_scenes.make_tokenizer()
  h, w = spatial_scenes.token_grid(spec)
  for s in samples:
    n = len(s.scenes)
    assert spec.clip_min_frames <= n <= spec.clip_max_frames
    assert s.seconds_per_frame in spec.clip_seconds_per_frame
    # One object moves to an empty cell at frame k; the frames before show the first scene.
    k = next(i for i, sc in enumerate(s.scenes) if sc != s.scenes[0])
    assert all(sc == s.scenes[0] for sc in s.scenes[:k])
    assert all(sc == s.scenes[k] for sc in s.scenes[k:])
    gone, new = set(s.scenes[0]) - set(s.scenes[k]), set(s.scenes[k]) - set(s.scenes[0])
    assert len(gone) == len(new) == 1 and gone.pop().name == new.pop().name
    assert s.answer == (str(int(k * s.seconds_per_frame)),)
    assert k * s.seconds_per_frame == int(s.answer[0])
    # Tokens, layout and pixels: one Video(n, h, w), one image per frame, no rate anywhere.
    assert tk.decode(s.tokens[s.prompt_len:-1]) == s.answer[0]
    assert s.question == ("the", "shape", "moved", "at", "what", "second", "?")
    assert s.layout[1] == ("video", n, h, w) and len(s.layout) == 3
    for img, sc in zip(s.images, s.scenes):
      np.testing.assert_array_equal(img, spatial_scenes.render(sc, spec.image_size,
                                                               spec.grid_size))


def test_the_rate_varies_and_the_frames_alone_do_not_give_the_answer(clip_samples):
  _, samples = clip_samples
  assert {s.seconds_per_frame for s in samples} == {1.0, 2.0, 3.0}
  assert {len(s.scenes) for s in samples} == {2, 3, 4}
  assert {s.answer[0] for s in samples} == {"1", "2", "3", "4", "6", "9"}
  # The same frame layout (clip length, frame of the move) comes with different answers.
  by_frames = {}
  for s in samples:
    k = next(i for i, sc in enumerate(s.scenes) if sc != s.scenes[0])
    by_frames.setdefault((len(s.scenes), k), set()).add(s.answer)
  assert all(len(a) == 3 for a in by_frames.values()), by_frames
  # Every other sample has no rate, and the default mix has no clips.
  c = pipe.default_config()
  others = [spatial_scenes.make_sample(c, seed=0, split="train", index=i) for i in range(100)]
  assert all(s.seconds_per_frame is None and s.question_type != ELAPSED for s in others)


@pytest.mark.parametrize("changes,match", [
    (dict(clip_seconds_per_frame=(0.5, 1.0)), "clip_seconds_per_frame"),  # 0.5 s: not whole
    (dict(clip_seconds_per_frame=(11.0,)), "clip_seconds_per_frame"),     # 33 s > 32
    (dict(clip_seconds_per_frame=()), "clip_seconds_per_frame"),
    (dict(clip_min_frames=1), "clip_min_frames"),
    (dict(clip_max_frames=5), "max_images"),
    (dict(max_len=64), "max_len"),
])
def test_clip_settings_are_validated(changes, match):
  pipe.validate_config(_clips_data())
  with pytest.raises(ValueError, match=match):
    pipe.validate_config(_clips_data(**changes))


# --------------------------------------------------------------------------------------------
# The rate reaches the time ids of absolute-time schemes only.

SEGMENTS = [rope.Text(5), rope.Video(4, 4, 4), rope.Text(9)]


def test_time_ids_follow_the_rate():
  fn = vlm_schemes.positions_fn(_model("mrope_time"))
  assert fn.absolute_time and vlm_schemes.SCHEMES.get("mrope_time").absolute_time
  ids = {s: fn(SEGMENTS, seconds_per_grid=s).positions for s in (1.0, 2.0, 3.0)}
  tau = np.repeat(np.arange(4), 16)
  for s, p in ids.items():
    video = p[5:5 + 64]
    np.testing.assert_array_equal(video[:, 0], 5 + np.floor(tau * s * 2))  # tokens_per_second 2
    np.testing.assert_array_equal(video[:, 1:], ids[1.0][5:5 + 64, 1:])   # h, w: rate-free
    # Text after the clip resumes after the block's largest id.
    np.testing.assert_array_equal(p[69:, 0], video.max() + 1 + np.arange(9))
  assert np.abs(ids[1.0] - ids[2.0]).max() > 0 and np.abs(ids[2.0] - ids[3.0]).max() > 0
  np.testing.assert_array_equal(fn(SEGMENTS, seconds_per_grid=2.0).positions, ids[2.0])
  # No rate of its own: 1 s per grid (HF without second_per_grid_ts).
  np.testing.assert_array_equal(fn(SEGMENTS).positions, ids[1.0])


@pytest.mark.parametrize("scheme", [s for s in vlm_schemes.SCHEMES.names()
                                    if not vlm_schemes.SCHEMES.get(s).absolute_time])
def test_other_schemes_ignore_the_rate(scheme):
  entry = vlm_schemes.SCHEMES.get(scheme)
  fn = vlm_schemes.positions_fn(_model(scheme))
  assert not fn.absolute_time
  segs = SEGMENTS if entry.places_video else [rope.Text(5)] + [rope.Image(4, 4)] * 4 + [
      rope.Text(9)]
  want = fn(segs)
  for s in (1.0, 3.0):
    got = fn(segs, seconds_per_grid=s)
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)


def _pair(samples, same_rate):
  """Two samples with one layout and equal (or different) rates."""
  seen = {}
  for s in samples:
    for o in seen.get(s.layout, []):
      if (o.seconds_per_frame == s.seconds_per_frame) == same_rate:
        return o, s
    seen.setdefault(s.layout, []).append(s)
  raise AssertionError("no such pair")


@pytest.mark.parametrize("scheme", ["mrope_time", "mrope", "hope"])
def test_the_collator_passes_each_samples_rate(clip_samples, scheme):
  spec, samples = clip_samples
  collate = pipe.Collator(_clips_data(), vlm_schemes.positions_fn(_model(scheme)))
  diff, same = _pair(samples, False), _pair(samples, True)
  batch = collate([*diff, *same])
  np.testing.assert_array_equal(batch["seconds_per_frame"],
                                [s.seconds_per_frame for s in (*diff, *same)])
  pos = batch["positions"]
  np.testing.assert_array_equal(pos[2], pos[3])         # same layout, same rate
  n = len(diff[0].tokens)
  if vlm_schemes.SCHEMES.get(scheme).absolute_time:
    assert np.abs(pos[0, :n] - pos[1, :n]).max() >= 1   # same layout, other rate
    for b, s in enumerate(diff):                         # = rope's own rule at that rate
      want, nxt = rope.multimodal_positions(pipe.layout_segments(s.layout), "mrope",
                                            seconds_per_grid=s.seconds_per_frame)
      np.testing.assert_array_equal(pos[b, :n], want)
      assert batch["next_position"][b] == want[s.prompt_len, 0]
    assert len(collate.table) == len({(s.layout, s.seconds_per_frame)
                                      for s in (*diff, *same)})
  else:
    np.testing.assert_array_equal(pos[0], pos[1])       # the rate is not read
    assert len(collate.table) == len({s.layout for s in (*diff, *same)})


# --------------------------------------------------------------------------------------------
# The streams of existing configs are unchanged.


def _sample_digest(config, seed, split, n):
  h = hashlib.sha256()
  spec = spatial_scenes.GenSpec.from_config(config)
  for i in range(n):
    s = spatial_scenes.make_sample(spec, seed=seed, split=split, index=i)
    for a in (s.tokens, s.images, np.asarray([s.prompt_len, s.question_type], np.int64)):
      h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr(s.layout).encode())
  return h.hexdigest()


def _batch_digest(config, scheme, seed, batch_size):
  config.prefetch = 0
  b = next(pipe.make_train_iterator(config, global_batch_size=batch_size, seed=seed,
                                    positions_fn=vlm_schemes.positions_fn(_model(scheme))))
  h = hashlib.sha256()
  for k in sorted(b):
    if k != "seconds_per_frame":   # the one new key
      h.update(k.encode())
      h.update(np.ascontiguousarray(b[k]).tobytes())
  return h.hexdigest()


# Recorded with the generator and collator of commit 25f8394 (before clips existed).
BEFORE_CLIPS = {
    ("mrope", "cpu"): ("c56a918ea11c79ae47a42b7017150b3f2d9fae9ea6a9e2dd3105c7c6a4918342",
                       "ea7c164c05b1d7fb888e83beb05deed70f01efc77da379cc12e726648bfac805"),
    ("circle_age", "smoke"): (
        "c25710204c4ca662112cb20f7e608648b3aa56cd716f1c87cbb09efba3a03eb1",
        "59dc15515f2e9177adf9bba16c82ce0d5fb43dc88e3fe6cf3e05df22201803a6"),
}


@pytest.mark.parametrize("scheme,mode", list(BEFORE_CLIPS))
def test_existing_configs_give_the_same_stream_as_before(scheme, mode):
  data = ml_collections.ConfigDict(vlm_common.get_config(scheme, mode).data.to_dict())
  assert data.question_mix.video_elapsed == 0.0
  n = 200 if mode == "cpu" else 100
  assert (_sample_digest(data, 0, "train", n), _batch_digest(data, scheme, 0, 32)) == (
      BEFORE_CLIPS[(scheme, mode)])


# --------------------------------------------------------------------------------------------
# Configs.


@pytest.mark.parametrize("arg", ["smoke,clips", "cpu,clips", "smoke", "cpu"])
def test_configs_build(arg):
  c = vlm_mrope_time.get_config(arg)
  assert c.model.scheme == "mrope_time"
  plain = vlm_common.get_config("mrope", arg)   # the comparison: same task, no time ids
  assert plain.data.to_dict() == c.data.to_dict() and plain.model.scheme == "mrope"
  if "clips" in arg:
    assert c.data.question_mix.video_elapsed > 0 and c.data.max_images == 4
  else:
    assert c.data.question_mix.video_elapsed == 0 and c.data.max_images == 2
  for config in (c, plain):
    tasks.get_task(config)   # validates data, model and every eval condition's lengths


def test_one_train_step_of_the_smoke_clip_config():
  c = vlm_mrope_time.get_config("smoke,clips")
  with c.unlocked():
    c.model.update(width=32, depth=1, mlp_dim=64)
    c.model.vision.width = 16
    c.data.prefetch = 0
    c.training.batch_size = 16
    c.eval.conditions = ()
  setup = loop.build(c, jax.devices()[:1], task=tasks.get_task(c))
  task = setup.task
  host = next(task.train_iterator(0, 0, 1))
  assert (host["question_type"] == ELAPSED).any()
  clip = np.flatnonzero(host["question_type"] == ELAPSED)
  assert set(host["seconds_per_frame"][clip].tolist()) <= {1.0, 2.0, 3.0}
  state = jax.jit(step_lib.make_init_fn(task, setup.tx))(jax.random.key(0))
  batch = mesh_lib.global_batch(host, setup.mesh)
  state, metrics = loop.jit_train_step(setup)(state, batch)
  assert int(state["step"]) == 1 and np.isfinite(float(metrics["loss"]))
