"""Tests of models/vlm.py and models/vlm_schemes.py (tiny model, hand-made Collator batches)."""
import functools

import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rope
from models import vlm
from models import vlm_schemes

SCHEMES = vlm_schemes.SCHEMES.names()
VOCAB = 50
IMAGE = 3          # placeholder id used by these tests
IMAGE_SIZE = 12    # patch 2 -> 6x6 patches -> 3x3 merged tokens per image
MAX_LEN = 40


def tiny_config(scheme="vanilla", depth=2, vision_depth=0):
  """Tiny model; vision_depth 0 (patch embedding alone) keeps the per-scheme compiles fast."""
  cfg = vlm.default_config()
  cfg.scheme = scheme
  cfg.width = 32
  cfg.depth = depth
  cfg.num_heads = 6        # grouped-query attention: 2 query heads per KV head
  cfg.num_kv_heads = 3     # MHRoPE needs >= 3 KV heads (one per axis)
  cfg.head_dim = 16        # 8 pairs: chunked (2, 3, 3), interleaved (4, 2, 2)
  cfg.mlp_dim = 64
  cfg.max_len = MAX_LEN
  cfg.image_token_id = IMAGE
  cfg.vision.patch_size = 2
  cfg.vision.width = 16
  cfg.vision.depth = vision_depth
  cfg.vision.num_heads = 2
  cfg.vision.mlp_dim = 32
  return cfg


@functools.lru_cache(maxsize=None)
def model_and_forward(scheme, vision_depth=0):
  model = vlm.model_from_config(tiny_config(scheme, vision_depth=vision_depth), VOCAB)
  return model, jax.jit(lambda p, inputs: model.apply({"params": p}, **inputs))


@functools.lru_cache(maxsize=None)
def shared_params(vision_depth=0):
  """One set of weights for every scheme (the scheme adds no parameters)."""
  model, _ = model_and_forward("vanilla", vision_depth)
  inputs = vlm.dummy_inputs(tiny_config(), IMAGE_SIZE, batch_size=1, num_images=1, length=8)
  return jax.jit(lambda k: vlm.init_params(model, k, inputs))(jax.random.PRNGKey(0))


def scheme_params(scheme, vision_depth=0):
  """`shared_params()` plus, for a scheme with parameters of its own (`owns_params`, e.g.
  GRAPE's planes), those parameters at their initial values."""
  params = shared_params(vision_depth)
  if not vlm_schemes.SCHEMES.get(scheme).owns_params:
    return params
  model, _ = model_and_forward(scheme, vision_depth)
  inputs = vlm.dummy_inputs(tiny_config(scheme), IMAGE_SIZE, batch_size=1, num_images=1,
                            length=8)
  own = flax.traverse_util.flatten_dict(
      jax.jit(lambda k: vlm.init_params(model, k, inputs))(jax.random.PRNGKey(0)))
  shared = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: shared.get(k, v) for k, v in own.items()})


def sample_segments(scheme):
  """Two prompts of different lengths; the second holds a 2-frame video unless circle."""
  first = [rope.Text(3), rope.Image(3, 3), rope.Text(2), rope.Image(3, 3), rope.Text(3)]
  visual = rope.Image(3, 3) if scheme.startswith("circle") else rope.Video(2, 3, 3)
  return [first, [rope.Text(6), visual, rope.Text(4)]]


def make_batch(scheme, segments_per_sample, length=MAX_LEN, num_images=2, seed=0,
               tokens_after=None):
  """A right-padded batch (the keys of data.vlm_pipeline.Collator).

  Text tokens are random ids >= 4, visual segments are IMAGE placeholders, everything after the
  prompt is random junk (generation must ignore it) unless `tokens_after` gives the tokens.
  """
  rng = np.random.default_rng(seed)
  cfg = tiny_config(scheme)
  b = len(segments_per_sample)
  batch = {
      "tokens": rng.integers(4, VOCAB, (b, length)).astype(np.int32),
      "images": np.zeros((b, num_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32),
      "image_valid": np.zeros((b, num_images), bool),
      "positions": np.zeros((b, length, 3), np.float32),
      "positions_alt": np.zeros((b, length, 3), np.float32),
      "valid": np.zeros((b, length), bool),
      "prompt_len": np.zeros((b,), np.int32),
      "next_position": np.zeros((b,), np.float32),
      "next_position_alt": np.zeros((b,), np.float32),
  }
  for i, segments in enumerate(segments_per_sample):
    pos, nxt, pos_alt, nxt_alt = vlm.sequence_positions(cfg, segments)
    n, cur, frame = len(pos), 0, 0
    for seg in segments:
      if isinstance(seg, rope.Video):
        batch["tokens"][i, cur:cur + seg.num_tokens] = IMAGE
        for _ in range(seg.t):
          batch["images"][i, frame] = rng.normal(size=(IMAGE_SIZE, IMAGE_SIZE, 3))
          batch["image_valid"][i, frame] = True
          frame += 1
      cur += seg.num_tokens
    if tokens_after is not None:
      batch["tokens"][i, n - len(tokens_after[i]):n] = tokens_after[i]
    batch["positions"][i, :n] = pos
    batch["positions_alt"][i, :n] = pos_alt
    batch["valid"][i, :n] = True
    batch["prompt_len"][i] = n
    batch["next_position"][i] = nxt
    batch["next_position_alt"][i] = nxt_alt
  return batch


# ---------------------------------------------------------------------------------------------
# Generation with a KV cache == full-sequence forward, for every scheme.


@pytest.mark.parametrize("scheme", SCHEMES)
def test_cached_greedy_decoding_matches_full_forward(scheme):
  model, forward = model_and_forward(scheme)
  check_cached_decoding(scheme, model, forward, scheme_params(scheme))


def check_cached_decoding(scheme, model, forward, params):
  """Greedy decoding with the KV cache == the uncached forward of prompt + generated tokens."""
  prompts = sample_segments(scheme)
  batch = make_batch(scheme, prompts)
  new = 6
  tokens, logits = vlm.generate(model, params, batch, max_new_tokens=new)
  tokens, logits = np.asarray(tokens), np.asarray(logits)
  assert tokens.shape == (2, new) and logits.shape == (2, new, VOCAB)
  np.testing.assert_array_equal(tokens, logits.argmax(-1))

  # Reference: teacher-force prompt + generated tokens through the uncached forward, with the
  # positions the scheme's position function gives the extended sequence (generated tokens are
  # text following the prompt). For circle_age positions_alt are the M-RoPE ids of that
  # sequence, which checks the AGE M-RoPE layers continue with the M-RoPE delta.
  extended = [segs + [rope.Text(new)] for segs in prompts]
  prompt_tokens = [batch["tokens"][i, :batch["prompt_len"][i]] for i in range(2)]
  full = make_batch(scheme, extended,
                    tokens_after=[np.concatenate([p, t]) for p, t in zip(prompt_tokens, tokens)])
  full["images"], full["image_valid"] = batch["images"], batch["image_valid"]
  ref = np.asarray(forward(params, vlm.model_inputs(full)))
  for i in range(2):
    start = batch["prompt_len"][i] - 1
    np.testing.assert_allclose(logits[i], ref[i, start:start + new], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tokens[i], ref[i, start:start + new].argmax(-1))


# ---------------------------------------------------------------------------------------------
# A new scheme is one registry entry: registered here, used without touching any other file.


@dataclasses.dataclass(frozen=True)
class ToyScheme(vlm_schemes.Scheme):
  """A position design rope does not know (every visual token takes the id of its block's
  first token, text continues after the block) and a learned per-layer angle scale (a Flax
  parameter created by `rotate`, as GRAPE's rotation planes would be)."""

  def positions(self, segments, **options):
    del options
    ids, cur = [], 0.0
    for seg in segments:
      if isinstance(seg, rope.Text):
        ids += [cur + j for j in range(seg.n)]
        cur += seg.n
      else:
        ids += [cur] * seg.num_tokens
        cur += 1
    pos = np.repeat(np.asarray(ids, np.float32)[:, None], 3, axis=1)
    return vlm_schemes.SequencePositions(pos, cur, pos, cur)

  def rotate(self, module, q, k, table):
    scale = module.param("toy_scale", nn.initializers.constant(0.5), ())
    ang = table.angles * scale            # [B, L, 1, D/2], broadcast over heads
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    return (rope.apply_cos_sin(q, cos, sin, layout="half"),
            rope.apply_cos_sin(k, cos, sin, layout="half"))


def test_a_scheme_registered_in_a_test_runs_forward_and_cached_decoding(monkeypatch):
  entry = ToyScheme("toy: block ids, learned angle scale", "vanilla",
                    vlm_schemes.SCHEMES.get("vanilla").table, owns_params=True)
  monkeypatch.setitem(vlm_schemes.SCHEMES._entries, "toy", entry)  # pylint: disable=protected-access
  cfg = tiny_config("toy")
  model = vlm.model_from_config(cfg, VOCAB)
  assert model.scheme is entry
  inputs = vlm.dummy_inputs(cfg, IMAGE_SIZE, batch_size=1, num_images=1, length=8)
  params = jax.jit(lambda k: vlm.init_params(model, k, inputs))(jax.random.PRNGKey(0))
  assert float(params["layers_1"]["attn"]["toy_scale"]) == 0.5      # per layer
  forward = jax.jit(lambda p, x: model.apply({"params": p}, **x))
  batch = make_batch("toy", [[rope.Text(3), rope.Image(3, 3), rope.Text(2)]])
  np.testing.assert_array_equal(batch["positions"][0, 3:12, 0], 3.0)   # the toy design
  assert batch["next_position"][0] == 6.0
  check_cached_decoding("toy", model, forward, params)
  # The parameter is used: another scale changes the logits.
  other = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 3 if "toy_scale" in jax.tree_util.keystr(path) else x, params)
  a, b = (np.asarray(forward(p, vlm.model_inputs(batch))) for p in (params, other))
  assert np.abs(a - b).max() > 1e-4


@dataclasses.dataclass(frozen=True)
class RandomScaleScheme(vlm_schemes.Scheme):
  """Training randomness (as HoPE's temporal scale): angles scaled by a number drawn from the
  "scheme" rng when the caller passes one (tasks/vlm.py: the training step's key), 1 else."""

  def tables(self, module, s, positions, positions_alt):
    scale = 1.0
    if module.has_rng("scheme"):
      scale = jax.random.uniform(module.make_rng("scheme"), (), minval=0.5, maxval=2.0)
    return super().tables(module, s, positions * scale, positions_alt * scale)


def test_a_scheme_with_training_randomness_is_fixed_without_the_rng(monkeypatch):
  entry = RandomScaleScheme("random id scale in training", "vanilla",
                            vlm_schemes.SCHEMES.get("vanilla").table)
  monkeypatch.setitem(vlm_schemes.SCHEMES._entries, "toy_random", entry)  # pylint: disable=protected-access
  model = vlm.model_from_config(tiny_config("toy_random"), VOCAB)
  params = shared_params()                    # no parameters of its own
  batch = vlm.model_inputs(make_batch("toy_random", [[rope.Text(4), rope.Image(3, 3),
                                                      rope.Text(3)]]))
  apply = jax.jit(lambda p, x, key: model.apply({"params": p}, **x, rngs={"scheme": key}))
  _, vanilla = model_and_forward("vanilla")
  fixed = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, **x))(params, batch))
  np.testing.assert_allclose(fixed, np.asarray(vanilla(params, batch)), rtol=1e-6, atol=1e-6)
  a, b = (np.asarray(apply(params, batch, jax.random.PRNGKey(i))) for i in (1, 2))
  assert np.abs(a - fixed).max() > 1e-4 and np.abs(a - b).max() > 1e-4


# ---------------------------------------------------------------------------------------------
# Logical axis names on every parameter; attention implementation option.

# The parameter shapes of tiny_config (vision depth 1) before the logical axis names were added.
PARAM_SHAPES = {
    "embed/embedding": (50, 32), "final_norm/scale": (32,), "lm_head/kernel": (32, 50),
    "proj_in/bias": (32,), "proj_in/kernel": (64, 32), "proj_out/bias": (32,),
    "proj_out/kernel": (32, 32), "vision/block_0/attn_norm/bias": (16,),
    "vision/block_0/attn_norm/scale": (16,), "vision/block_0/mlp_in/bias": (32,),
    "vision/block_0/mlp_in/kernel": (16, 32), "vision/block_0/mlp_norm/bias": (16,),
    "vision/block_0/mlp_norm/scale": (16,), "vision/block_0/mlp_out/bias": (16,),
    "vision/block_0/mlp_out/kernel": (32, 16), "vision/block_0/out/bias": (16,),
    "vision/block_0/out/kernel": (2, 8, 16), "vision/block_0/qkv/bias": (3, 2, 8),
    "vision/block_0/qkv/kernel": (16, 3, 2, 8), "vision/encoder_norm/bias": (16,),
    "vision/encoder_norm/scale": (16,), "vision/patch_embed/bias": (16,),
    "vision/patch_embed/kernel": (2, 2, 3, 16),
    **{f"layers_{i}/{k}": v for i in range(2) for k, v in {
        "attn/key/kernel": (32, 3, 16), "attn/out/kernel": (6, 16, 32),
        "attn/query/kernel": (32, 6, 16), "attn/value/kernel": (32, 3, 16),
        "attn_norm/scale": (32,), "down/kernel": (64, 32), "gate/kernel": (32, 64),
        "mlp_norm/scale": (32,), "up/kernel": (32, 64)}.items()},
}


@pytest.mark.parametrize("scheme", ["mhrope", "circle_age"])
def test_every_parameter_has_logical_axis_names(scheme):
  cfg = tiny_config(scheme, vision_depth=1)
  model = vlm.model_from_config(cfg, VOCAB)
  inputs = vlm.dummy_inputs(cfg, IMAGE_SIZE, batch_size=1, num_images=1, length=8)
  boxed = jax.eval_shape(lambda k: vlm.init_params(model, k, inputs, boxed=True),
                         jax.random.PRNGKey(0))
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for x in leaves:
    assert len(x.names) == x.value.ndim
    assert set(x.names) <= set(vlm.LOGICAL_AXES) | {None}
    named = [n for n in x.names if n is not None]
    assert len(named) == len(set(named)), x.names    # one mesh axis at most once per array
  specs = nn.get_partition_spec(boxed)
  assert jax.tree.structure(specs) == jax.tree.structure(nn.unbox(boxed))
  shapes = {k: tuple(v.shape) for k, v in
            flax.traverse_util.flatten_dict(nn.unbox(boxed), sep="/").items()}
  assert shapes == PARAM_SHAPES                        # unboxing changes nothing
  plain = jax.eval_shape(lambda k: vlm.init_params(model, k, inputs), jax.random.PRNGKey(0))
  assert {k: tuple(v.shape) for k, v in
          flax.traverse_util.flatten_dict(plain, sep="/").items()} == PARAM_SHAPES


def test_causal_and_key_lengths_equal_the_dense_mask():
  """What cuDNN receives (causal flag + key lengths) sees the keys the dense mask lets through,
  for right-padded prefill and for a decoding step (checked with the "xla" implementation)."""
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  k = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
  v = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
  lengths = np.array([5, 3], np.int32)
  valid = np.arange(5)[None] < lengths[:, None]
  dense = np.tril(np.ones((5, 5), bool))[None] & valid[:, None, :]
  got = np.asarray(vlm.attend(q, k, v, vlm.Mask(dense, True, lengths), "xla"))
  fused = np.asarray(jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                  key_value_seq_lengths=lengths))
  for b in range(2):
    np.testing.assert_allclose(got[b, :lengths[b]], fused[b, :lengths[b]], rtol=1e-5, atol=1e-6)
  slots = np.array([4, 1])                      # decoding: one query, cache of 5 slots
  step = vlm.Mask((np.arange(5)[None] <= slots[:, None])[:, None], kv_lengths=slots + 1)
  got = np.asarray(vlm.attend(q[:, :1], k, v, step, "xla"))
  fused = np.asarray(jax.nn.dot_product_attention(q[:, :1], k, v,
                                                  key_value_seq_lengths=(slots + 1).astype(np.int32)))
  np.testing.assert_allclose(got, fused, rtol=1e-5, atol=1e-6)


def test_attention_impl_option():
  cfg = tiny_config()
  assert cfg.attention_impl == "xla"
  cfg.attention_impl = "flash"
  with pytest.raises(ValueError, match="`attention_impl`='flash'.*allowed: 'xla', 'cudnn'"):
    vlm.model_from_config(cfg, VOCAB)
  cfg.attention_impl = "cudnn"   # accepted by the config (the kernel itself needs a GPU)
  assert vlm.model_from_config(cfg, VOCAB).attention_impl == "cudnn"


def test_generation_ignores_tokens_after_the_prompt():
  model, _ = model_and_forward("mrope")
  params = shared_params()
  a = make_batch("mrope", sample_segments("mrope"), seed=0)
  b = dict(a)
  b["tokens"] = a["tokens"].copy()
  for i, n in enumerate(a["prompt_len"]):
    b["tokens"][i, n:] = (a["tokens"][i, n:] + 7) % VOCAB
  ta, la = vlm.generate(model, params, a, max_new_tokens=6)
  tb, lb = vlm.generate(model, params, b, max_new_tokens=6)
  np.testing.assert_array_equal(ta, tb)
  np.testing.assert_allclose(la, lb, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The textual prior: text-only input reproduces 1-D RoPE in every scheme.


@pytest.mark.parametrize("scheme", [s for s in SCHEMES
                                    if vlm_schemes.SCHEMES.get(s).keeps_text_prior])
def test_text_only_input_gives_vanilla_logits(scheme):
  params = shared_params()
  segments = [[rope.Text(30)], [rope.Text(17)]]
  batch = make_batch(scheme, segments, num_images=1)
  _, forward = model_and_forward(scheme)
  _, vanilla = model_and_forward("vanilla")
  got = np.asarray(forward(params, vlm.model_inputs(batch)))
  want = np.asarray(vanilla(params, vlm.model_inputs(make_batch("vanilla", segments,
                                                                num_images=1))))
  np.testing.assert_array_equal(batch["positions"][..., 0], batch["positions"][..., 1])
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "vanilla"])
def test_schemes_differ_from_vanilla_on_images(scheme):
  """Keeps the text-only test honest: with images the schemes do change the logits."""
  params = scheme_params(scheme)
  segments = [[rope.Text(3), rope.Image(3, 3), rope.Text(8)], [rope.Text(5)]]
  _, forward = model_and_forward(scheme)
  _, vanilla = model_and_forward("vanilla")
  batch = make_batch(scheme, segments)
  batch_v = make_batch("vanilla", segments)
  batch_v["images"] = batch["images"]
  got = np.asarray(forward(params, vlm.model_inputs(batch)))[0, :20]
  want = np.asarray(vanilla(params, vlm.model_inputs(batch_v)))[0, :20]
  if vlm_schemes.SCHEMES.get(scheme).keeps_text_prior:   # text before the image
    np.testing.assert_allclose(got[:3], want[:3], rtol=1e-6, atol=1e-6)
  assert np.abs(got[12:] - want[12:]).max() > 1e-3       # text after it


@pytest.mark.parametrize("scheme", [s for s in SCHEMES
                                    if not vlm_schemes.SCHEMES.get(s).keeps_text_prior])
def test_schemes_without_text_prior_change_text_only_logits(scheme):
  """The other side of `keeps_text_prior=False` (HoPE's zero frequencies, Qwen3.5's partial
  rotary, GRAPE's learned planes): text-only logits measurably differ from 1-D RoPE's, so the
  flag is a fact about the scheme and not an excuse for a failing test."""
  params = scheme_params(scheme)
  segments = [[rope.Text(30)], [rope.Text(17)]]
  _, forward = model_and_forward(scheme)
  _, vanilla = model_and_forward("vanilla")
  got = np.asarray(forward(params, vlm.model_inputs(make_batch(scheme, segments,
                                                                num_images=1))))
  want = np.asarray(vanilla(params, vlm.model_inputs(make_batch("vanilla", segments,
                                                                num_images=1))))
  assert np.abs(got - want).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Circle-RoPE AGE: alternate layers read different ids.


def test_circle_age_feeds_alternate_layers_different_ids():
  params = shared_params()
  segments = [[rope.Text(3), rope.Image(3, 3), rope.Text(4)], [rope.Text(2)]]
  batch = make_batch("circle_age", segments)
  circle_ids, _ = rope.multimodal_positions(segments[0], "circle")
  mrope_ids, _ = rope.multimodal_positions(segments[0], "mrope")
  assert np.abs(circle_ids - mrope_ids).max() > 1.0
  n = len(circle_ids)
  freqs = rope.freqs_mrope(16, 1e6, sections=(2, 3, 3))
  want = {True: rope.angles(circle_ids, freqs), False: rope.angles(mrope_ids, freqs)}

  # The angles each layer received: circle ids in layer 0, M-RoPE ids in layer 1 (depth 2).
  model, _ = model_and_forward("circle_age")
  out_age, state = jax.jit(functools.partial(model.apply, mutable=["intermediates"]))(
      {"params": params}, **vlm.model_inputs(batch))
  for layer in range(2):
    got = state["intermediates"][f"layers_{layer}"]["attn"]["rotary_angles"][0][0, :n]
    np.testing.assert_allclose(got, want[layer % 2 == 0], rtol=1e-6, atol=1e-5)

  # And the output really depends on both id sets.
  _, circle = model_and_forward("circle")
  out_circle = np.asarray(circle(params, vlm.model_inputs(batch)))
  assert np.abs(np.asarray(out_age) - out_circle)[0, :n].max() > 1e-3
  same = dict(batch, positions_alt=batch["positions"])
  _, age = model_and_forward("circle_age")
  np.testing.assert_allclose(np.asarray(age(params, vlm.model_inputs(same))), out_circle,
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy,want", [("alternate", [1, 0, 1, 0]), ("lower", [1, 1, 0, 0]),
                                           ("upper", [0, 0, 1, 1]), ("all", [1, 1, 1, 1])])
def test_age_strategies_pick_the_circle_layers(strategy, want):
  cfg = tiny_config("circle_age", depth=4)
  cfg.age_strategy = strategy
  uses_alt = vlm_schemes.SCHEMES.get("circle_age").layer_uses_alt(vlm.rotary_settings(cfg))
  assert [int(not a) for a in uses_alt] == want


# ---------------------------------------------------------------------------------------------
# Frequency tables and GQA head pairing against the spec's rules.


def test_videorope_table_is_the_original_allocation():
  # docs/spec/multimodal_rope.md §3: first s_h + s_w pairs alternate h (even j) / w (odd j), last s_t t.
  d, theta = 32, 1e6
  table = np.asarray(vlm_schemes.videorope_freqs(d, theta, (4, 6, 6)))
  inv = theta ** (-np.arange(0, d, 2) / d)
  axis = [1 if j % 2 == 0 else 2 for j in range(12)] + [0] * 4
  want = np.zeros((16, 3))
  want[np.arange(16), axis] = inv
  np.testing.assert_allclose(table, want, rtol=1e-6)


def test_default_sections():
  default = lambda s, d: vlm_schemes.SCHEMES.get(s).default_sections(d)
  assert default("mrope", 128) == (16, 24, 24)
  assert default("mrope", 64) == (8, 12, 12)
  assert default("mrope_interleave", 128) == (24, 20, 20)
  assert vlm_schemes.default_head_sections(8) == (2, 3, 3)
  assert vlm_schemes.default_head_sections(3) == (1, 1, 1)


def test_mhrope_query_heads_repeat_kv_heads():
  settings = vlm.rotary_settings(tiny_config("mhrope"))
  pos = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32) * 10
  entry = vlm_schemes.SCHEMES.get("mhrope")
  ang = entry.angles(settings, pos, entry.freqs(settings))
  inv = 1e6 ** (-np.arange(0, 16, 2) / 16)
  assert ang.cos_k.shape == (2, 5, 3, 8) and ang.cos_q.shape == (2, 5, 6, 8)
  for g in range(3):          # KV head g reads axis g (head sections (1, 1, 1))
    np.testing.assert_allclose(ang.angles[:, :, g], pos[..., g:g + 1] * inv, rtol=1e-5)
    np.testing.assert_allclose(ang.cos_k[:, :, g], np.cos(pos[..., g:g + 1] * inv), atol=1e-5)
    np.testing.assert_allclose(ang.sin_k[:, :, g], np.sin(pos[..., g:g + 1] * inv), atol=1e-5)
  for i in range(6):          # query head i uses KV head i // 2
    np.testing.assert_array_equal(ang.cos_q[:, :, i], ang.cos_k[:, :, i // 2])
    np.testing.assert_array_equal(ang.sin_q[:, :, i], ang.sin_k[:, :, i // 2])


def test_grouped_query_attention_against_per_head_loop():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  k = rng.normal(size=(2, 7, 3, 4)).astype(np.float32)
  v = rng.normal(size=(2, 7, 3, 4)).astype(np.float32)
  mask = rng.random((2, 5, 7)) < 0.7
  mask[..., 0] = True
  got = np.asarray(vlm.attend(q, k, v, mask))
  for b in range(2):
    for h in range(6):
      s = q[b, :, h] @ k[b, :, h // 2].T / 2.0
      s = np.where(mask[b], s, -np.inf)
      w = np.exp(s - s.max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      np.testing.assert_allclose(got[b, :, h], w @ v[b, :, h // 2], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Visual tokens: merge order and placement.


def test_merge_2x2_order():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  got = np.asarray(vlm.merge_2x2(x))
  assert got.shape == (2, 2, 3, 12)
  for y in range(2):
    for xx in range(3):
      want = np.concatenate([x[:, 2 * y, 2 * xx], x[:, 2 * y, 2 * xx + 1],
                             x[:, 2 * y + 1, 2 * xx], x[:, 2 * y + 1, 2 * xx + 1]], -1)
      np.testing.assert_array_equal(got[:, y, xx], want)


def test_kth_image_fills_kth_placeholder_run():
  model, _ = model_and_forward("mrope", vision_depth=1)
  params = shared_params(vision_depth=1)
  batch = make_batch("mrope", [[rope.Text(2), rope.Image(3, 3), rope.Text(1), rope.Image(3, 3)],
                               [rope.Text(5), rope.Image(3, 3), rope.Text(2)]], num_images=2)
  apply = jax.jit(model.apply, static_argnames="method")
  feats = np.asarray(apply({"params": params}, batch["images"], batch["image_valid"],
                           method=model.encode_images))            # [B, N, 9, W]
  embedded = np.asarray(apply({"params": params}, batch["tokens"], batch["images"],
                              batch["image_valid"], method=model.embed_inputs))
  table = np.asarray(params["embed"]["embedding"])
  for b in range(2):
    j = 0
    for t, tok in enumerate(batch["tokens"][b]):
      if tok == IMAGE:
        np.testing.assert_allclose(embedded[b, t], feats[b, j // 9, j % 9], rtol=1e-6)
        j += 1
      else:
        np.testing.assert_allclose(embedded[b, t], table[tok], rtol=1e-6)
    assert j == 9 * batch["image_valid"][b].sum()
  assert np.abs(feats[1, 1]).max() == 0      # the absent second image of sample 1



def _reverse_merged_tokens(images):
  """Moves each 4x4-pixel block (one merged visual token) to the mirrored grid place, so
  merged token k of the result is merged token 8 - k of `images` (3x3 merged grid)."""
  blocks = images.reshape(images.shape[:2] + (3, 4, 3, 4, 3)).transpose(0, 1, 2, 4, 3, 5, 6)
  return blocks[:, :, ::-1, ::-1].transpose(0, 1, 2, 4, 3, 5, 6).reshape(images.shape)


@pytest.mark.parametrize("vision_depth", [0, 1])
def test_vision_encoder_sees_patch_positions(vision_depth):
  """Patch embedding alone is blind to where patches are: rearranging the merged tokens'
  pixel blocks rearranges the visual tokens the same way. A ViT layer with 2-D RoPE is not."""
  model, _ = model_and_forward("mrope", vision_depth=vision_depth)
  params = shared_params(vision_depth=vision_depth)
  images = np.random.default_rng(1).normal(size=(1, 1, IMAGE_SIZE, IMAGE_SIZE, 3))
  valid = np.ones((1, 1), bool)
  encode = jax.jit(functools.partial(model.apply, method=model.encode_images))
  f0 = np.asarray(encode({"params": params}, images, valid))[0, 0]
  f1 = np.asarray(encode({"params": params}, _reverse_merged_tokens(images), valid))[0, 0]
  if vision_depth == 0:
    np.testing.assert_allclose(f1[::-1], f0, rtol=1e-5, atol=1e-6)
  else:
    assert np.abs(f1[::-1] - f0).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Bad input fails early with a clear message.


def test_sequence_longer_than_max_len():
  model, _ = model_and_forward("mrope")
  params = shared_params()
  inputs = vlm.dummy_inputs(tiny_config(), IMAGE_SIZE, length=MAX_LEN + 1)
  with pytest.raises(ValueError, match="max_len"):
    model.apply({"params": params}, **inputs)
  batch = make_batch("mrope", sample_segments("mrope"))
  with pytest.raises(ValueError, match="max_new_tokens .* exceeds the model's `max_len`=40"):
    vlm.generate(model, params, batch, max_new_tokens=MAX_LEN - 20)


@pytest.mark.parametrize("scheme", ["circle", "circle_age"])
def test_video_with_circle_rope_is_rejected(scheme):
  with pytest.raises(ValueError, match=f"`scheme`='{scheme}' cannot place Video"):
    vlm.sequence_positions(tiny_config(scheme), [rope.Text(2), rope.Video(2, 3, 3)])
  # A one-frame video is just an image.
  vlm.sequence_positions(tiny_config(scheme), [rope.Text(2), rope.Video(1, 3, 3)])


def test_image_token_defaults_to_the_tokenizer():
  from data import tokenizer  # pylint: disable=g-import-not-at-top
  cfg = tiny_config()
  cfg.image_token_id = None
  assert vlm.model_from_config(cfg, 300).image_token_id == tokenizer.IMAGE


def test_unknown_scheme():
  with pytest.raises(ValueError, match="model.scheme='rope2d'.*allowed: 'vanilla', 'mrope'"):
    vlm.model_from_config(tiny_config("rope2d"), VOCAB)


@pytest.mark.parametrize("change,match", [
    ({"scheme": "mhrope", "num_kv_heads": 2, "num_heads": 4}, "num_kv_heads"),
    ({"scheme": "mrope", "sections": (2, 2, 2)}, "sections"),
    ({"scheme": "circle_age", "age_strategy": "strategy_4"}, "age_strategy"),
    ({"num_heads": 5}, "num_kv_heads"),
    ({"dtype": "float16"}, "dtype"),
])
def test_bad_config(change, match):
  cfg = tiny_config()
  for key, value in change.items():
    cfg[key] = value
  with pytest.raises(ValueError, match=match):
    vlm.model_from_config(cfg, VOCAB)


def test_bad_image_size():
  model, _ = model_and_forward("mrope")
  inputs = vlm.dummy_inputs(tiny_config(), image_size=10)
  with pytest.raises(ValueError, match="divisible by `vision.patch_size`=2 x 2"):
    model.init(jax.random.PRNGKey(0), **inputs)
