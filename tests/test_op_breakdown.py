"""benchmarks/op_breakdown.py: HLO ops classified by kind, and a profile that finds them."""
import jax
import jax.numpy as jnp

from benchmarks import op_breakdown


def _step(w, x):
  """A tiny train step with every kind: rope / sdpa scopes, a norm module path, a projection,
  an elementwise activation, and an optimizer update outside the differentiated function."""
  def loss(w):
    h = x @ w                                                  # dots
    with jax.named_scope("norm_attn"):
      h = (h - h.mean(-1, keepdims=True)) * jax.lax.rsqrt(h.var(-1, keepdims=True) + 1e-6)
    with jax.named_scope("rope"):
      h = h * jnp.cos(jnp.arange(h.shape[-1], dtype=h.dtype))
    with jax.named_scope("sdpa"):
      h = jax.nn.softmax(h @ h.T) @ h
    return jnp.sum(jnp.tanh(h))                                # elementwise
  l, g = jax.value_and_grad(loss)(w)
  return w - 0.1 * g * jnp.sqrt(jnp.sum(g * g)), l             # optimizer


def _compiled():
  w, x = jnp.ones((64, 64)) / 64, jnp.ones((32, 64))
  return jax.jit(_step, donate_argnums=0).lower(w, x).compile(), (w, x)


def test_every_kind_is_found_in_the_module_text():
  compiled, _ = _compiled()
  instrs = op_breakdown.parse_hlo(compiled.as_text())
  kinds = {op_breakdown.classify(i) for i in instrs.values()}
  assert set(op_breakdown.KINDS) <= kinds, kinds
  # A scope wins over the op: the dots inside `sdpa` are attention, not dots.
  sdpa = [i for i in instrs.values() if "sdpa" in i["op_name"] and i["has_dot"]]
  assert sdpa and all(op_breakdown.classify(i) == "attention" for i in sdpa)


def test_classify_rules():
  info = lambda name, dot=False: {"op_name": name, "has_dot": dot, "opcode": "fusion"}
  c = op_breakdown.classify
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/attention/rope/mul")) == "rope"
  assert c(info("jit(s)/transpose(jvp(ViT))/encoderblock_0/attention/sdpa/dot", True)) \
      == "attention"
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/mlp/fc1/dot_general", True)) == "dots"
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/norm_mlp/mul")) == "normalisation"
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/mlp/gelu")) == "elementwise"
  assert c(info("jit(s)/mul")) == "optimizer"                 # outside forward / backward
  assert c(info("", False)) == "elementwise"                  # no metadata: a copy


def test_profile_times_every_kind_and_returns_the_donated_state():
  compiled, (w, x) = _compiled()
  seconds, w_after = op_breakdown.profile(compiled, (w, x), steps=2)
  assert set(op_breakdown.KINDS) <= set(seconds)
  assert "unattributed" not in seconds
  assert all(seconds[k] > 0 for k in op_breakdown.KINDS), seconds
  assert w_after.shape == (64, 64)
